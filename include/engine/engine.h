/* engine — the call engine: one loop thread ("engine") that owns every live
 * call's state machine, all Kaphila commands and all customer webhooks.
 *
 * Transport threads (HTTP today) hand it work with the engine_* calls below
 * (a message on the loop's queue) and an engine_reply: the transport's own
 * request behind callbacks, so the engine knows nothing of HTTP and a second
 * front end needs no engine change. Each call either takes the reply and
 * answers it exactly once later (from the engine thread, or the MP3
 * encoder's) or returns false when the engine cannot take more, in which
 * case the caller still owns r and replies itself. Ownership
 * of the other arguments is each call's own (below): a JSON argument is
 * stolen in every case, true or false (STYLE: "steals").
 * Start-up recovery (live calls, unprocessed Kaphila events, pending
 * outbox rows) happens in engine_start. */
#ifndef TWIGATE_ENGINE_H
#define TWIGATE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include "conf/app.h"
#include "base/buf.h"
#include "net/kaphila.h"
#include "store/store.h"

/* How the engine answers a request it took. The transport fills ops (static,
 * thread-safe: replies may come from any thread) and req (its request, which
 * it keeps open until one reply function has run). A reply function is
 * called once per request; body/file/request_id/suspend only before it. */
typedef struct engine_reply_ops {
    /* body is copied (or static); ctype NULL = no body type */
    void (*bytes)(void *req, int status, const char *ctype, const char *body, size_t len);
    /* body is taken (free()d by the transport) */
    void (*owned)(void *req, int status, const char *ctype, char *body, size_t len);
    void (*json)(void *req, int status, json_t *j);               /* steals j */
    /* A Twilio error (base/errors.h code); headers: NULL or name, value, …, NULL */
    void (*error)(void *req, int code, int status, const char *message,
                  const char *const *headers);
    /* Answers with the file (200, or 206/416 per range header) as ctype;
     * false, without answering, when the file does not exist. */
    bool (*file)(void *req, const char *path, const char *range, const char *ctype);
    const buf  *(*body)(const void *req);         /* the raw request body */
    const char *(*request_id)(const void *req);   /* for log lines */
    void (*suspend)(void *req);                   /* the answer comes later */
} engine_reply_ops;

typedef struct engine_reply {
    const engine_reply_ops *ops;   /* NULL = no request (nothing to answer) */
    void                   *req;
} engine_reply;

/* The engine's side of engine_reply (any thread). */
static inline bool engine_reply_some(engine_reply r) { return r.ops != NULL; }
static inline void engine_reply_bytes(engine_reply r, int status, const char *ctype,
                                      const char *body, size_t len)
{
    r.ops->bytes(r.req, status, ctype, body, len);
}
static inline void engine_reply_owned(engine_reply r, int status, const char *ctype, char *body,
                                      size_t len)
{
    r.ops->owned(r.req, status, ctype, body, len);
}
static inline void engine_reply_json(engine_reply r, int status, json_t *j)
{
    r.ops->json(r.req, status, j);
}
static inline void engine_reply_error(engine_reply r, int code, int status, const char *message)
{
    r.ops->error(r.req, code, status, message, NULL);
}
static inline void engine_reply_error_h(engine_reply r, int code, int status, const char *message,
                                        const char *const *headers)
{
    r.ops->error(r.req, code, status, message, headers);
}
static inline bool engine_reply_file(engine_reply r, const char *path, const char *range,
                                     const char *ctype)
{
    return r.ops->file(r.req, path, range, ctype);
}
static inline const buf *engine_reply_body(engine_reply r) { return r.ops->body(r.req); }
static inline const char *engine_reply_request_id(engine_reply r)
{
    return r.ops->request_id(r.req);
}
static inline void engine_reply_suspend(engine_reply r) { r.ops->suspend(r.req); }

engine *engine_create(app *a, char *err, size_t errlen);
__attribute__((warn_unused_result)) int engine_start(engine *e);
/* Stops taking work, lets in-flight deliveries finish for up to grace_ms,
 * then stops the loop. Live call state is already in the store. */
void engine_stop(engine *e, int grace_ms);
void engine_destroy(engine *e);   /* accepts NULL */

/* A new call (status queued): the engine stores its row in its next group
 * commit with a 20001 warning notification per string of warnings (a JSON
 * array, or NULL; stolen) and replies to r with 201 + the Call JSON once
 * that commit is done (503 when it fails; 429 22005 when the key's queue
 * would wait longer than limits.max_queue_time_s). The call is dialled
 * when its turn in the key's queue and the budget come (budget_int.h);
 * a failed dial makes it `failed`, with a notification and the callbacks. Takes call->params on true (NULLs
 * it; the caller keeps it on false). false: the engine's queue is full
 * (nothing was stored). */
__attribute__((warn_unused_result))
bool engine_originate(engine *e, engine_reply r, store_call *call, json_t *warnings);
/* Applies a validated update (JSON with optional keys status, url, method,
 * twiml, fallback_url, fallback_method, status_callback,
 * status_callback_method, time_limit) and replies with the Call JSON or an
 * error. Steals upd, also on false. */
__attribute__((warn_unused_result))
bool engine_update(engine *e, engine_reply r, const char *account_sid, const char *call_sid,
                   json_t *upd);
/* Deletes an ended call's row (DELETE …/Calls/{CA}.json) on the engine
 * thread, the only writer of calls, and replies to r: 204 once the delete
 * is committed, 400 21220 while the engine still holds the call, 503 when
 * the store fails. false = the engine's queue is full: the caller still
 * owns r and answers. */
__attribute__((warn_unused_result))
bool engine_delete_call(engine *e, engine_reply r, const char *account_sid, const char *call_sid);
/* A Kaphila event POSTed to /kaphila/events/{token}; ev is its validated
 * body (an object with a string "event"), stolen in every case. The engine
 * finds the call by its token, applies the event inside its open write
 * batch and answers r once that batch has committed: 200 (the event's
 * effects, outbox rows included, are durable), 404 for a token that names
 * no call, 503 when the event could not be made durable (Kaphila keeps it).
 * false = the engine's queue is full: the caller still owns r and answers. */
__attribute__((warn_unused_result))
bool engine_kevent(engine *e, engine_reply r, const char *token, json_t *ev);

size_t engine_live_calls(const engine *e);
/* Webhook deliveries in flight (shutdown waits for them). Any thread. */
int engine_inflight_deliveries(engine *e);
/* Whether Kaphila's GET /health answered at the last probe (every 2 s). */
bool engine_kaphila_ready(engine *e);
/* Whether this instance's lease on a shared database is trusted now (true
 * on SQLite): false while its Kaphila commands are held for a renewal
 * (engine_cluster.c). Any thread. */
bool engine_lease_ok(engine *e);
/* How long the engine's loop has been in its current turn (ms) when that is
 * past limits.engine_stall_ms, else 0: a stall, which /healthz answers with
 * 503 and main logs. Any thread. */
int64_t engine_stalled_ms(engine *e);

/* A Kaphila request with an explicit API key (keyauth's GET /api/me).
 * Engine thread only; 0 = under way, the callback then runs once. */
__attribute__((warn_unused_result))
int engine_kaphila_key(engine *e, const char *api_key, const char *method, const char *path,
                       json_t *body, kaphila_cb cb, void *arg);

/* Kaphila's per-key request budget and Twilio's call queue, as last
 * published by the engine (at every change and every second): a copy, read
 * under a lock, so any thread may call it (the console, /metrics). Keys
 * are named by a label, never by the secret: the first 8 hex digits of the
 * key's SHA-256. */
typedef struct engine_budget_key {
    char      label[9];
    int       limit;             /* requests per window; 0 = unlimited, -1 = not known yet */
    int64_t   window_ms;
    int       used;              /* slots taken in the window (sent, answered within it) */
    int       left;              /* limit - used; -1 = unlimited */
    int       live;              /* dialled calls still holding a reserve */
    int       waiting_commands;  /* hang-ups and live calls' commands waiting for a slot */
    int       reserved;          /* slots kept for live calls (2 each + waiting commands):
                                    a new call is dialled only while left exceeds it */
    int       queued_calls;      /* Twilio's queue: created, not dialled yet */
    int64_t   oldest_wait_ms;    /* the queue's oldest call's wait so far */
    long long credits;           /* Kaphila's, from GET /api/me; -1 = unknown */
    bool      paused;            /* a 402: dialling waits for credits */
    int64_t   closed_ms;         /* a 429 closed the key for this much longer */
    int64_t   received_429;      /* 429s received on the key since start */
} engine_budget_key;

/* Fills out with at most max keys; returns how many. Any thread. */
size_t engine_budget_snapshot(engine *e, engine_budget_key *out, size_t max);

/* GET …/Balance.json: the engine asks Kaphila's GET /api/me with the
 * account's key and replies to r with Twilio's Balance resource
 * (account_sid, balance = Kaphila's credits as a string, currency) or the
 * mapped error. false = queue full: the caller still owns r. */
__attribute__((warn_unused_result))
bool engine_balance(engine *e, engine_reply r, const char *account_sid);

/* Runs fn(e, arg) on the engine thread (for modules such as recordings that
 * need the loop: Kaphila downloads, callbacks). false = queue full; the
 * caller keeps arg. */
__attribute__((warn_unused_result))
bool engine_submit(engine *e, void (*fn)(engine *e, void *arg), void *arg);

#endif
