/* loop — one thread's event loop: epoll, timers, a cross-thread message queue
 * with an eventfd doorbell, and libcurl's multi interface on the same epoll.
 *
 * The engine and the simulator each own one loop. Other threads talk to a
 * loop only through loop_post(); everything else here is called on the loop's
 * own thread (from a message, timer or transfer callback). Each callback
 * starts with an empty log context (log.h): it sets its own, and never
 * inherits the call a previous callback was about. */
#ifndef TWIGATE_LOOP_H
#define TWIGATE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>

typedef struct loop loop;
typedef struct loop_timer loop_timer;

/* Called on the loop thread for each posted message, in posting order. The
 * callback owns msg. */
typedef void (*loop_msg_fn)(loop *l, void *msg);
typedef void (*loop_timer_fn)(loop *l, void *arg);
/* Called on the loop thread when a transfer ends; easy has already been
 * removed from the multi handle and belongs to the callback again. */
typedef void (*loop_http_fn)(loop *l, CURL *easy, CURLcode rc, void *arg);

/* Cap on queued messages; beyond it loop_post fails (backpressure), because
 * an unbounded queue turns overload into memory exhaustion. */
#define LOOP_MAX_QUEUE 65536

loop *loop_create(const char *thread_name, loop_msg_fn on_msg, void *ctx);
/* Starts the loop thread. */
__attribute__((warn_unused_result)) int loop_start(loop *l);
/* Asks the thread to finish (queued messages are still delivered first),
 * then joins it. Safe to call on a loop that never started. */
void loop_stop(loop *l);
/* Frees the loop; pending timers are dropped without firing; transfers
 * still in flight are cancelled (their callbacks run with CURLE_ABORTED_BY_CALLBACK).
 * Accepts NULL. */
void loop_destroy(loop *l);
void *loop_ctx(loop *l);

/* Any thread. false when the queue is full or the loop is stopping; the
 * caller keeps ownership of msg in that case. */
__attribute__((warn_unused_result)) bool loop_post(loop *l, void *msg);

/* Any thread: how long the loop has been in its current turn, in ms (0 while
 * it waits for work). A turn normally takes micro- to milliseconds; one
 * that lasts seconds is a callback blocked (a database that does not
 * answer), and everything queued for the loop waits behind it. */
int64_t loop_busy_ms(loop *l);

/* Loop thread only. */
int64_t loop_now_ms(const loop *l);            /* monotonic ms */
loop_timer *loop_timer_add(loop *l, int64_t delay_ms, loop_timer_fn fn, void *arg);
/* Cancels a pending timer (no-op for NULL). A timer that has fired is gone;
 * don't cancel it afterwards. */
void loop_timer_cancel(loop *l, loop_timer *t);
/* An easy handle for a transfer, reset, from the loop's pool of used ones
 * (or new; NULL when out of memory); give it back with loop_easy_release
 * once done with it, instead of curl_easy_cleanup. */
CURL *loop_easy(loop *l);
void loop_easy_release(loop *l, CURL *easy);   /* accepts NULL */
/* Starts a transfer on the loop's multi handle. The loop owns the handle's
 * CURLOPT_PRIVATE (restored before done runs), CURLOPT_NOSIGNAL and the
 * socket-option and close-socket callbacks (CURLOPT_SOCKOPTFUNCTION,
 * CURLOPT_CLOSESOCKETFUNCTION and their data): it tracks the connections'
 * sockets through them, so callers must not set those. */
__attribute__((warn_unused_result)) int loop_http_start(loop *l, CURL *easy, loop_http_fn done, void *arg);
/* The same for customer traffic (webhooks): its connections live in
 * caches of their own, never shared with loop_http_start's (Kaphila's),
 * and belong to one policy generation gen. A transfer with a newer gen
 * than the loop has seen retires the older generation's caches (closed
 * once their last transfer ends, never reused); one with an older gen gets
 * a fresh connection, closed after it. So a connection is only ever reused
 * by traffic judged by the policy that opened it. */
__attribute__((warn_unused_result))
int loop_http_start_isolated(loop *l, CURL *easy, loop_http_fn done, void *arg, uint64_t gen);
/* fn(l, arg) runs on the loop thread once per iteration, after that
 * iteration's messages, timers and transfers and before the loop sleeps
 * (the engine commits its batched writes there). NULL clears it. */
void loop_set_idle(loop *l, loop_timer_fn fn, void *arg);
/* fn(l, late_ms, arg) runs on the loop thread as each timer fires, before
 * its callback, with how late it fires (ms after its due time; the loop
 * has millisecond resolution). For a latency histogram in /metrics. */
typedef void (*loop_late_fn)(loop *l, int64_t late_ms, void *arg);
void loop_set_timer_observer(loop *l, loop_late_fn fn, void *arg);
/* Number of transfers in flight (for metrics and tests). */
size_t loop_http_active(const loop *l);
/* One more file descriptor the loop waits on besides its own (the engine's
 * PostgreSQL notification socket, store/cluster.h): fn(l, arg) runs on the
 * loop thread when fd is readable (level-triggered: fn must read what is
 * there). One at a time; fd -1 stops watching. Loop thread only; -1 when
 * epoll refuses the fd. */
int loop_watch(loop *l, int fd, loop_timer_fn fn, void *arg);

#endif
