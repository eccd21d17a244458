/* loop_int — private to src/net/loop*.c: struct loop, its caps and the
 * functions loop.c (queue, timers, thread) and loop_http.c (libcurl multi
 * glue) call across. Everything here is the loop thread's, except the
 * queue fields under mu (see struct loop). */
#ifndef TWIGATE_LOOP_INT_H
#define TWIGATE_LOOP_INT_H

#include "net/loop.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>


/* Initial ring size; it doubles on demand up to LOOP_MAX_QUEUE, so an idle
 * loop costs half a kilobyte rather than the full cap. */
#define QUEUE_INITIAL 64
/* Messages handed over per lock acquisition, so producers aren't locked out
 * while the loop runs callbacks; also the granularity of the time slice
 * below (a message of the engine costs 0.1-0.3 ms). */
#define DRAIN_BATCH 16
/* Messages delivered per loop iteration before timers and sockets get a turn;
 * a flood of posts must not starve timers. */
#define DRAIN_BUDGET 4096
/* ...and the time the messages of one iteration may take, and likewise its
 * due timers: an iteration is the unit in which a timer is late (a Pause
 * must end within 50 ms, and the request it then starts goes out in the
 * next iteration), and the engine commits its batch at the end of each.
 * What is left waits for the next iteration, which comes at once. */
#define SLICE_US 5000
/* epoll events collected per epoll_wait, all handled in the iteration:
 * answers are read as soon as they arrive. (Slicing them like timers made
 * every exchange wait behind timers and messages, and the Pause benchmark
 * later; so did batches of 16; 64 measured the same as 256.) */
#define EPOLL_BATCH 256
/* Easy handles kept for reuse (loop_easy): a fresh one costs curl a calloc
 * of several KiB plus its 16 KiB receive buffer, and that churn of large
 * blocks kept malloc consolidating its bins (malloc and free were a quarter
 * of the engine's time at 10,000 live calls). Enough for the transfers
 * finishing in one iteration; beyond it handles are freed. */
#define EASY_POOL 64
/* Connection caches per loop (curl share objects). libcurl 7.88 finds a
 * free connection to a host by walking the connections it holds to that
 * host, those in use included, and when a transfer ends it walks the cache
 * again to find the connection it just returned. With a slow peer (hundreds
 * of exchanges in flight) both walks were half of the simulator's thread
 * and cost the engine too. So a cache takes new transfers while it has
 * fewer than SHARE_FILL in flight, the next one after that, and the least
 * busy when all are full: a light load uses one cache and one keep-alive
 * connection per host, as with none, and a heavy one has walks an eighth as
 * long (docs/performance.md, "Create with a slow Kaphila"). */
#define CONN_SHARES 8
#define SHARE_FILL  32
/* First size of the fd table; it grows to the highest fd curl hands us,
 * which RLIMIT_NOFILE bounds (one byte per fd). */
#define FD_TABLE_INITIAL 64
/* pthread names are limited to 16 bytes including the NUL. */
#define NAME_MAX_LEN 15

/* heap index of a timer whose callback is running: not in the heap, and
 * cancelling it then is a harmless no-op. */
#define TIMER_FIRING ((size_t)-1)

struct loop_timer {
    int64_t       due;
    uint64_t      seq;
    size_t        idx;
    loop_timer_fn fn;
    void         *arg;
};

/* A bank of connection caches (see CONN_SHARES). Kaphila's traffic has
 * one for the loop's life; customer traffic has its own, one per policy
 * generation (loop_http_start_isolated): a bank is retired when a newer
 * generation arrives and freed, its connections closed, once nothing uses
 * it. Retired banks are as many as reloads with transfers still in flight
 * (the app caps reloads at APP_MAX_RETIRED_CONFIGS). */
typedef struct bank {
    CURLSH      *shares[CONN_SHARES];
    size_t       busy[CONN_SHARES];   /* transfers in flight on each */
    size_t       n_busy;
    uint64_t     gen;
    struct bank *next;                /* on the retired list */
} bank;

typedef struct xfer {
    struct xfer *prev, *next;
    CURL        *easy;
    loop_http_fn done;
    void        *arg;
    void        *user_private;   /* the caller's CURLOPT_PRIVATE, restored before done */
    bank        *bank;           /* NULL: a one-off connection (see loop_http_start_isolated) */
    unsigned     share;          /* index of its connection cache in bank */
} xfer;

struct loop {
    char        name[NAME_MAX_LEN + 1];
    loop_msg_fn on_msg;
    void       *ctx;

    int       epfd;
    int       evfd;
    int       watch_fd;          /* loop_watch's, -1 = none */
    loop_timer_fn watch_fn;
    void     *watch_arg;
    pthread_t thread;
    bool      started;
    bool      joined;
    /* Monotonic ms at which the current turn began, 0 while the thread waits
     * in epoll_wait: written by the loop thread, read by loop_busy_ms on any
     * (the liveness check: a turn that never ends is a stuck engine). */
    _Atomic int64_t busy_since_ms;

    /* Queue: everything below up to `stopping` is guarded by mu. */
    pthread_mutex_t mu;
    void  **ring;
    size_t  ring_cap;
    size_t  head;
    size_t  count;
    bool    stopping;

    /* Timers (loop thread only). */
    loop_timer **heap;
    size_t       heap_len;
    size_t       heap_cap;
    uint64_t     timer_seq;

    /* HTTP (loop thread only). */
    CURLM  *multi;
    int64_t curl_due;    /* -1 = curl wants no timeout */
    xfer   *xfers;
    size_t  n_xfers;
    CURL   *easy_pool[EASY_POOL];
    size_t  n_easy;
    bank    own;                      /* Kaphila's connection caches */
    bank   *cust;                     /* customer traffic's, current generation; NULL until used */
    bank   *retired;                  /* customer banks of older generations */
    int64_t timers_ran_us;            /* when due timers last had a turn */
    uint8_t *fds;        /* FD_* bits by fd number; see sock_cb */
    size_t   n_fds;
    bool    destroying;
    loop_late_fn  late_fn;       /* loop_set_timer_observer */
    void         *late_arg;
    loop_timer_fn idle_fn;       /* loop_set_idle */
    void         *idle_arg;
};
/* The fd table. Per exchange on a keep-alive connection, curl asks to
 * watch the socket when the request starts and to forget it (REMOVE) when
 * the answer is in and the connection goes back to its cache; following
 * that literally cost an ADD (after a failing MOD), often a MOD and a DEL —
 * a sixth of the loop thread's time under the create benchmark. Instead a
 * connection socket stays in the epoll set while idle ("parked": FD_REG
 * without FD_WANT), so its next exchange, which wants the same EPOLLIN,
 * costs nothing. A parked socket that becomes ready (the peer closed it, or
 * sent something unasked) is taken out of the set then, and curl is not
 * told: it checks a cached connection itself before reusing it, and closes
 * it if dead.
 *
 * Parking is safe only for sockets whose close we hear of, or a recycled fd
 * number would look registered while the kernel dropped it at close. So
 * only connection sockets are parked: loop_http_start sets a sockopt
 * callback, which sees every socket curl opens for a connection (and resets
 * its slot: a fresh socket is in no epoll set), and a close callback, which
 * curl stores on the connection and calls for each socket it closes. Other
 * sockets curl watches (the threaded resolver's socketpair) are closed
 * behind our back, so they are taken out of the set on REMOVE as before.
 * twigate neither forks nor dup()s curl's sockets, so close() does drop a
 * socket from the epoll set. */
#define FD_IN      0x01   /* registered with EPOLLIN */
#define FD_OUT     0x02   /* registered with EPOLLOUT */
#define FD_REG     0x04   /* in the epoll set */
#define FD_WANT    0x08   /* curl wants it watched (between IN/OUT and REMOVE) */
#define FD_CONN    0x10   /* a connection socket: we see it opened and closed */
/* A slot added by growing the table: the fd may have been handled without
 * a slot (the table could not grow then), so assume curl wants it and let
 * epoll_ctl's ENOENT/EEXIST tell us whether it is registered. */
#define FD_UNKNOWN 0x20


static inline int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* loop.c */
/* Due timers get a turn inside a long stretch of socket work. */
void loop_timers_turn(loop *l);

/* loop_http.c */
int loop_sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp);
int loop_curl_timer_cb(CURLM *multi, long timeout_ms, void *userp);
bool loop_bank_init(bank *b, uint64_t gen);
bool loop_bank_fini(bank *b);            /* false if a share was still in use */
void loop_xfer_finish(loop *l, xfer *x, CURLcode rc);   /* unlinks, frees x, calls done */
void loop_http_collect(loop *l);         /* finished transfers' callbacks */

#endif
