/* engine_rig — a whole engine for unit tests, without twigate's HTTP layer:
 * an app context (conf/app.h) with a config built from key=value pairs, a
 * real SQLite file in a temp dir, the in-process Kaphila simulator (fast
 * timing) and the engine, plus one libmicrohttpd server on loopback that
 * plays two parts: Kaphila's event POSTs (/kaphila/events/{token}) go to
 * engine_kevent, and every other path is a customer webhook answered with
 * the TwiML the test set for it (and recorded).
 *
 * Requests to the engine carry an engine_reply whose callbacks record the
 * answer in a ut_ereq (status, body) and add one to its waiter.
 *
 * Threads: set-up, tear-down and the helpers run on the test thread; reply
 * callbacks run on the engine thread (ut_ereq.on_reply too); the server's
 * handlers on libmicrohttpd's threads (one per connection). The rig owns
 * everything it created; the test owns its ut_ereqs. */
#ifndef TWIGATE_TEST_ENGINE_RIG_H
#define TWIGATE_TEST_ENGINE_RIG_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

#include "conf/app.h"
#include "engine/engine.h"
#include "support.h"

#define UT_RIG_ACCOUNT  "AC0123456789abcdef0123456789abcdef"
#define UT_RIG_TOKEN    "0123456789abcdef0123456789abcdef"
#define UT_RIG_KEY      "ak_live_unit_rig"
#define UT_RIG_MAX_HOOKS 8      /* webhook paths with canned TwiML */
#define UT_RIG_MAX_SEEN  64     /* webhook requests recorded */
#define UT_RIG_WAIT_MS   20000  /* how long a helper waits for the engine */

/* One request to the engine and the answer it got. */
typedef struct ut_ereq {
    buf        body;                 /* the request body (kevents) */
    int        status;               /* 0 = not answered yet */
    char      *answer;               /* the answer's body (JSON), malloc'd */
    int        answers;              /* reply functions called: must end at 1 */
    ut_waiter  done;
    /* Optional: runs on the replying thread once status and answer are
     * set, before the waiter hears of it (e.g. to look at the store at
     * that instant). */
    void     (*on_reply)(struct ut_ereq *q, void *arg);
    void      *on_reply_arg;
} ut_ereq;

void ut_ereq_init(ut_ereq *q);
void ut_ereq_fini(ut_ereq *q);
engine_reply ut_ereq_reply(ut_ereq *q);

typedef struct ut_hook {
    char path[128];
    char twiml[2048];
} ut_hook;

typedef struct ut_seen {
    char path[128];
    char body[2048];
} ut_seen;

typedef struct ut_rig {
    app              a;
    char             dir[256];
    struct MHD_Daemon *d;
    int              port;           /* the server's */
    pthread_mutex_t  mu;             /* hooks, seen */
    ut_hook          hooks[UT_RIG_MAX_HOOKS];
    int              n_hooks;
    ut_seen          seen[UT_RIG_MAX_SEEN];
    int              n_seen;
    ut_waiter        seen_w;         /* one per recorded webhook request */
    ut_waiter        kev_in;         /* one per Kaphila event the engine took */
    /* Optional: becomes each Kaphila event's ut_ereq.on_reply (engine
     * thread, as the engine answers the event). Set before any call. */
    void           (*kevent_probe)(ut_ereq *q, void *arg);
    void            *kevent_probe_arg;
} ut_rig;

/* Starts everything; sets: NULL-terminated "key=value" config overrides. */
void ut_rig_start(ut_rig *r, const char *const *sets);
void ut_rig_stop(ut_rig *r);
/* Stops and destroys the engine, runs while_down (may be NULL), then
 * creates and starts a new one on the same store, simulator and server, as
 * a restart of twigate would. No Kaphila event may be in flight. */
void ut_rig_restart_engine(ut_rig *r, void (*while_down)(ut_rig *r));
/* The database file's path (for a test's own sqlite3 connection). */
void ut_rig_db_path(const ut_rig *r, char *out, size_t outlen);
/* Answers GET/POST path (e.g. "/voice") with twiml from now on. */
void ut_rig_hook(ut_rig *r, const char *path, const char *twiml);
/* The rig server's base URL ("http://127.0.0.1:PORT"). */
void ut_rig_url(const ut_rig *r, char *out, size_t outlen);
/* A call row as REST's create makes it, with these parameters (stolen). */
void ut_rig_call(store_call *call, const char *to, json_t *params);
/* Waits until the store's row of call_sid has status st. */
void ut_rig_wait_row(ut_rig *r, const char *call_sid, const char *st);
/* The simulator's control API: method path [body] → parsed JSON (caller
 * decrefs) or NULL; status in *status when given. */
json_t *ut_rig_sim(ut_rig *r, const char *method, const char *path, const char *body,
                   int *status);
/* Waits until the sim's transcript of call_sid has status st. */
json_t *ut_rig_sim_wait_status(ut_rig *r, const char *call_sid, const char *st);

#endif
