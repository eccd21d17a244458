/* app — the process-wide context handed to HTTP handlers and the engine:
 * the current config, the store and its call cache, the engine, the
 * recordings' MP3 encoder thread, the HTTP server, the embedded simulator
 * and the metrics. Created and destroyed by
 * main.c only.
 *
 * The config pointer is swapped whole on SIGHUP; readers take it with
 * app_config() and use it for the duration of one request or one engine
 * step. Replaced configs are kept (app->retired) until exit, so a reader
 * never sees one freed under it: reloads are rare and a config is small. */
#ifndef TWIGATE_APP_H
#define TWIGATE_APP_H

#include <stdatomic.h>
#include <stdbool.h>
#include "callcache.h"
#include "config.h"
#include "http.h"
#include "metrics.h"
#include "sim.h"
#include "store.h"

typedef struct engine engine;
typedef struct rec_mp3 rec_mp3;

#define APP_MAX_RETIRED_CONFIGS 256

typedef struct app {
    _Atomic(const config *) cfg;
    const config *retired[APP_MAX_RETIRED_CONFIGS];
    int           n_retired;
    store        *store;
    callcache    *callcache;          /* ended calls' bodies; NULL = disabled */
    engine       *engine;
    rec_mp3      *mp3;                /* recordings' MP3 encoder thread */
    struct keyauth *keyauth;          /* Kaphila-key accounts (keyauth.h) */
    http_server  *http;
    sim          *sim;
    struct console *console;          /* the web console (console.h); NULL = off */
    char          kaphila_url[512];   /* resolved base URL ("sim" → the embedded one) */
    char          public_url[512];    /* where Kaphila and customers reach twigate */
    metrics      *metrics;
    atomic_bool   draining;           /* SIGTERM: refuse new calls */
    int64_t       started_ms;
} app;

static inline const config *app_config(app *a)
{
    return atomic_load_explicit(&a->cfg, memory_order_acquire);
}

#endif
