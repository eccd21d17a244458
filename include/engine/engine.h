/* engine — the call engine: one loop thread ("engine") that owns every live
 * call's state machine, all Kaphila commands and all customer webhooks.
 *
 * HTTP threads hand it work with the engine_* calls below (a message on the
 * loop's queue); each call either takes the http_req and replies to it later
 * (suspending the connection) or returns false when the engine cannot take
 * more, in which case the caller still owns r and replies itself. Ownership
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
#include "http/http.h"
#include "net/kaphila.h"
#include "store/store.h"

engine *engine_create(app *a, char *err, size_t errlen);
__attribute__((warn_unused_result)) int engine_start(engine *e);
/* Stops taking work, lets in-flight deliveries finish for up to grace_ms,
 * then stops the loop. Live call state is already in the store. */
void engine_stop(engine *e, int grace_ms);
void engine_destroy(engine *e);   /* accepts NULL */

/* A new call (status queued): the engine stores its row in its next group
 * commit with a 20001 warning notification per string of warnings (a JSON
 * array, or NULL; stolen), originates it on Kaphila once that commit is
 * done, and replies to r with 201 + the Call JSON, or removes the row and
 * replies with the mapped Twilio error. Takes call->params on true (NULLs
 * it; the caller keeps it on false). false: the engine's queue is full
 * (nothing was stored). */
__attribute__((warn_unused_result))
bool engine_originate(engine *e, http_req *r, store_call *call, json_t *warnings);
/* Applies a validated update (JSON with optional keys status, url, method,
 * twiml, fallback_url, fallback_method, status_callback,
 * status_callback_method, time_limit) and replies with the Call JSON or an
 * error. Steals upd, also on false. */
__attribute__((warn_unused_result))
bool engine_update(engine *e, http_req *r, const char *account_sid, const char *call_sid,
                   json_t *upd);
/* Deletes an ended call's row (DELETE …/Calls/{CA}.json) on the engine
 * thread, the only writer of calls, and replies to r: 204 once the delete
 * is committed, 400 21220 while the engine still holds the call, 503 when
 * the store fails. false = the engine's queue is full: the caller still
 * owns r and answers. */
__attribute__((warn_unused_result))
bool engine_delete_call(engine *e, http_req *r, const char *account_sid, const char *call_sid);
/* A Kaphila event POSTed to /kaphila/events/{token}; ev is its validated
 * body (an object with a string "event"), stolen in every case. The engine
 * finds the call by its token, applies the event inside its open write
 * batch and answers r once that batch has committed: 200 (the event's
 * effects, outbox rows included, are durable), 404 for a token that names
 * no call, 503 when the event could not be made durable (Kaphila keeps it).
 * false = the engine's queue is full: the caller still owns r and answers. */
__attribute__((warn_unused_result))
bool engine_kevent(engine *e, http_req *r, const char *token, json_t *ev);

size_t engine_live_calls(const engine *e);
/* Webhook deliveries in flight (shutdown waits for them). Any thread. */
int engine_inflight_deliveries(engine *e);
/* Whether Kaphila's GET /health answered at the last probe (every 2 s). */
bool engine_kaphila_ready(engine *e);

/* A Kaphila request with an explicit API key (keyauth's GET /api/me).
 * Engine thread only; 0 = under way, the callback then runs once. */
__attribute__((warn_unused_result))
int engine_kaphila_key(engine *e, const char *api_key, const char *method, const char *path,
                       json_t *body, kaphila_cb cb, void *arg);

/* Runs fn(e, arg) on the engine thread (for modules such as recordings that
 * need the loop: Kaphila downloads, callbacks). false = queue full; the
 * caller keeps arg. */
__attribute__((warn_unused_result))
bool engine_submit(engine *e, void (*fn)(engine *e, void *arg), void *arg);

#endif
