/* app — the process-wide context handed to HTTP handlers and the engine:
 * the current config, the store and its call cache, the engine, the
 * recordings' MP3 encoder thread, the HTTP server, the embedded simulator
 * and the metrics. Created and destroyed by
 * main.c only. It lives in conf/ (next to the config it carries) so that
 * store-, engine- and http-layer code may hold it without pulling in any
 * higher layer (scripts/check-layers.sh).
 *
 * The config pointer is swapped whole on SIGHUP; readers take it with
 * app_config() and use it for the duration of one request or one engine
 * step. Replaced configs are kept (app->retired) until exit, so a reader
 * never sees one freed under it: reloads are rare and a config is small. */
#ifndef TWIGATE_APP_H
#define TWIGATE_APP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Opaque here on purpose: app.h sits in conf/, below every layer that reads
 * the context, so it names each part without including its header (a file
 * that dereferences a->store includes store/store.h itself). C11 allows the
 * same typedef twice. */
typedef struct config config;
typedef struct store store;
typedef struct callcache callcache;
typedef struct engine engine;
typedef struct rec_mp3 rec_mp3;
typedef struct http_server http_server;
typedef struct sim sim;
typedef struct metrics metrics;

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
