/* loop — epoll event loop with a message queue, a timer heap and libcurl multi.
 *
 * Map of this file:
 *   - queue: a growable ring of void* under a mutex, capped at LOOP_MAX_QUEUE;
 *     the eventfd doorbell is rung only when the ring goes from empty to
 *     non-empty, so a burst of posts costs one write(2).
 *   - timers: a binary min-heap ordered by (due, seq); every timer records its
 *     heap index so cancel is O(log n). seq keeps equal deadlines FIFO.
 *   - http: curl's socket API. curl tells us which fds to watch (sock_cb) and
 *     when it next wants a timeout (timer_cb); we feed epoll readiness back
 *     through curl_multi_socket_action and collect finished transfers with
 *     curl_multi_info_read. Each transfer has an xfer record on a list so
 *     loop_destroy can abort the ones still in flight.
 *   - fd table: what epoll holds for each fd curl gave us, so that a
 *     keep-alive connection costs no epoll_ctl per exchange (see below).
 *   - connection caches: CONN_SHARES curl share objects per loop, filled
 *     one after another, so that curl's walks of its connections stay short
 *     (see CONN_SHARES). Only this loop's thread uses them: no lock callbacks.
 *   - run(): the thread body; epoll_wait with timeout = min(next timer, curl
 *     deadline), then fds, then curl timeout, then timers, then messages,
 *     then the idle hook. Timers and messages get a time slice per
 *     iteration, so neither holds the rest (each other, sockets) back, and
 *     due timers also get a turn inside a long stretch of socket work
 *     (timers_turn).
 * Every callback starts with an empty log context: one call's CallSid must
 * not tag the lines of whatever the loop runs next (a health probe, say).
 */
#include "net/loop.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"

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
    pthread_t thread;
    bool      started;
    bool      joined;

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

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---------------------------------------------------------------- timers */

static bool timer_before(const loop_timer *a, const loop_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(loop *l, size_t i, loop_timer *t)
{
    l->heap[i] = t;
    t->idx = i;
}

static void heap_up(loop *l, size_t i)
{
    loop_timer *t = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, l->heap[parent]))
            break;
        heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    heap_set(l, i, t);
}

static void heap_down(loop *l, size_t i)
{
    loop_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->heap_len)
            break;
        if (c + 1 < l->heap_len && timer_before(l->heap[c + 1], l->heap[c]))
            c++;
        if (!timer_before(l->heap[c], t))
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

/* Removes the timer at index i from the heap (does not free it). */
static void heap_remove(loop *l, size_t i)
{
    assert(i < l->heap_len);
    loop_timer *last = l->heap[--l->heap_len];
    if (i == l->heap_len)
        return;
    heap_set(l, i, last);
    if (i > 0 && timer_before(last, l->heap[(i - 1) / 2]))
        heap_up(l, i);
    else
        heap_down(l, i);
}

loop_timer *loop_timer_add(loop *l, int64_t delay_ms, loop_timer_fn fn, void *arg)
{
    assert(fn);
    if (l->heap_len == l->heap_cap) {
        size_t ncap = l->heap_cap ? l->heap_cap * 2 : 64;
        loop_timer **nh = realloc(l->heap, ncap * sizeof *nh);
        if (!nh)
            return NULL;
        l->heap = nh;
        l->heap_cap = ncap;
    }
    loop_timer *t = malloc(sizeof *t);
    if (!t)
        return NULL;
    t->due = mono_ms() + (delay_ms > 0 ? delay_ms : 0);
    t->seq = l->timer_seq++;
    t->fn = fn;
    t->arg = arg;
    l->heap[l->heap_len] = t;
    t->idx = l->heap_len++;
    heap_up(l, t->idx);
    return t;
}

void loop_timer_cancel(loop *l, loop_timer *t)
{
    if (!t || t->idx == TIMER_FIRING)
        return;
    assert(t->idx < l->heap_len && l->heap[t->idx] == t);
    heap_remove(l, t->idx);
    free(t);
}

/* Fires due timers, earliest first, for up to SLICE_US. Only timers that
 * existed when the pass began may fire, so a callback re-arming itself with
 * delay 0 cannot spin the loop forever. */
static void run_timers(loop *l)
{
    uint64_t seq_limit = l->timer_seq;
    int64_t now = mono_ms(), t0 = mono_us();
    bool fired = false;
    while (l->heap_len > 0) {
        loop_timer *t = l->heap[0];
        if (t->due > now || t->seq >= seq_limit || (fired && mono_us() - t0 >= SLICE_US))
            break;
        fired = true;
        heap_remove(l, 0);
        t->idx = TIMER_FIRING;
        if (l->late_fn)
            l->late_fn(l, mono_ms() - t->due, l->late_arg);
        log_context_clear();
        t->fn(l, t->arg);
        free(t);
    }
}

/* ms until the next timer or curl deadline; -1 = none. */
static int next_timeout(loop *l)
{
    int64_t due = -1;
    if (l->heap_len > 0)
        due = l->heap[0]->due;
    if (l->curl_due >= 0 && (due < 0 || l->curl_due < due))
        due = l->curl_due;
    if (due < 0)
        return -1;
    int64_t d = due - mono_ms();
    if (d < 0)
        d = 0;
    if (d > 60000)   /* bounded so int never overflows; waking once a minute is free */
        d = 60000;
    return (int)d;
}

/* ---------------------------------------------------------------- queue */

static void ring_doorbell(loop *l)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake. */
    ssize_t r = write(l->evfd, &one, sizeof one);
    (void)r;
}

bool loop_post(loop *l, void *msg)
{
    bool ok = false, wake = false;
    pthread_mutex_lock(&l->mu);
    if (l->stopping || l->count >= LOOP_MAX_QUEUE)
        goto out;
    if (l->count == l->ring_cap) {
        size_t ncap = l->ring_cap * 2;
        if (ncap > LOOP_MAX_QUEUE)
            ncap = LOOP_MAX_QUEUE;
        void **nr = malloc(ncap * sizeof *nr);
        if (!nr)
            goto out;
        for (size_t i = 0; i < l->count; i++)
            nr[i] = l->ring[(l->head + i) % l->ring_cap];
        free(l->ring);
        l->ring = nr;
        l->ring_cap = ncap;
        l->head = 0;
    }
    l->ring[(l->head + l->count) % l->ring_cap] = msg;
    wake = l->count++ == 0;
    ok = true;
out:
    pthread_mutex_unlock(&l->mu);
    if (wake)
        ring_doorbell(l);
    return ok;
}

/* Delivers up to DRAIN_BUDGET messages, or SLICE_US worth. Returns
 * true when the queue is empty and the loop has been asked to stop. *more is
 * set when messages remain. */
static bool run_messages(loop *l, bool *more)
{
    void *batch[DRAIN_BATCH];
    size_t delivered = 0;
    int64_t t0 = mono_us();
    *more = false;
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&l->mu);
        if (l->count == 0) {
            bool stop = l->stopping;
            pthread_mutex_unlock(&l->mu);
            return stop;
        }
        if (delivered >= DRAIN_BUDGET || (delivered && mono_us() - t0 >= SLICE_US)) {
            pthread_mutex_unlock(&l->mu);
            *more = true;
            return false;
        }
        while (n < DRAIN_BATCH && l->count > 0) {
            batch[n++] = l->ring[l->head];
            l->head = (l->head + 1) % l->ring_cap;
            l->count--;
        }
        pthread_mutex_unlock(&l->mu);
        for (size_t i = 0; i < n; i++) {
            log_context_clear();
            l->on_msg(l, batch[i]);
        }
        delivered += n;
    }
}

/* ---------------------------------------------------------------- http */

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

/* The slot of fd, growing the table as needed; NULL when it cannot, and
 * the caller then treats the fd as unknown. */
static uint8_t *fd_slot(loop *l, curl_socket_t fd)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= l->n_fds) {
        size_t ncap = l->n_fds ? l->n_fds * 2 : FD_TABLE_INITIAL;
        if (ncap <= (size_t)fd)
            ncap = (size_t)fd + 1;
        uint8_t *nt = realloc(l->fds, ncap);
        if (!nt)
            return NULL;
        memset(nt + l->n_fds, FD_UNKNOWN, ncap - l->n_fds);
        l->fds = nt;
        l->n_fds = ncap;
    }
    return &l->fds[fd];
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    loop *l = userp;
    uint8_t *st = fd_slot(l, s);
    if (what == CURL_POLL_REMOVE) {
        /* Parked with EPOLLOUT it would wake us at once, as writable. */
        if (st && (*st & FD_CONN) && !(*st & FD_OUT)) {
            *st &= (uint8_t)~FD_WANT;
            return 0;
        }
        /* ENOENT/EBADF when curl already closed the fd: nothing to undo. */
        if (!st || (*st & (FD_REG | FD_UNKNOWN)))
            epoll_ctl(l->epfd, EPOLL_CTL_DEL, s, NULL);
        if (st)
            *st &= FD_CONN;
        return 0;
    }
    uint8_t mask = (what & CURL_POLL_IN ? FD_IN : 0) | (what & CURL_POLL_OUT ? FD_OUT : 0);
    if (st && (*st & (FD_REG | FD_UNKNOWN)) == FD_REG && (*st & (FD_IN | FD_OUT)) == mask) {
        *st |= FD_WANT;
        return 0;
    }
    struct epoll_event ev = {0};
    if (mask & FD_IN)
        ev.events |= EPOLLIN;
    if (mask & FD_OUT)
        ev.events |= EPOLLOUT;
    ev.data.fd = s;
    /* The table can be wrong only for an unknown slot; the fallbacks keep
     * the loop working if it ever is. */
    bool reg = !st || (*st & (FD_REG | FD_UNKNOWN));
    if (epoll_ctl(l->epfd, reg ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) < 0) {
        int retry = errno == ENOENT ? EPOLL_CTL_ADD : errno == EEXIST ? EPOLL_CTL_MOD : -1;
        if (retry < 0 || epoll_ctl(l->epfd, retry, s, &ev) < 0)
            return -1;
    }
    if (st)
        *st = (uint8_t)((*st & FD_CONN) | FD_REG | FD_WANT | mask);
    return 0;
}

/* Every socket curl opens for a connection passes here before connect. */
static int sockopt_cb(void *clientp, curl_socket_t s, curlsocktype purpose)
{
    loop *l = clientp;
    /* curl closes accepted sockets (FTP active mode) without the close
     * callback, so they must not be parked. */
    if (purpose == CURLSOCKTYPE_IPCXN) {
        uint8_t *st = fd_slot(l, s);
        if (st)
            *st = FD_CONN;
    }
    return CURL_SOCKOPT_OK;
}

static int closesocket_cb(void *clientp, curl_socket_t s)
{
    loop *l = clientp;
    if (s >= 0 && (size_t)s < l->n_fds)
        l->fds[s] = 0;   /* close() takes it out of the epoll set */
    return close(s);
}

/* curl must not be re-entered from here, so the deadline is only recorded;
 * run() acts on it. */
static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    loop *l = userp;
    l->curl_due = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    return 0;
}

static void xfer_unlink(loop *l, xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    l->n_xfers--;
}

/* The connection cache for a new transfer (see CONN_SHARES). */
static unsigned pick_share(const bank *b)
{
    unsigned best = 0;
    for (unsigned i = 0; i < CONN_SHARES; i++) {
        if (b->busy[i] < SHARE_FILL)
            return i;
        if (b->busy[i] < b->busy[best])
            best = i;
    }
    return best;
}

static bool bank_init(bank *b, uint64_t gen)
{
    b->gen = gen;
    for (size_t i = 0; i < CONN_SHARES; i++) {
        b->shares[i] = curl_share_init();
        if (!b->shares[i] ||
            curl_share_setopt(b->shares[i], CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK)
            return false;
    }
    return true;
}

/* Frees the caches of b that no handle uses any more (closing their
 * connections); true when all are gone. */
static bool bank_fini(bank *b)
{
    bool all = true;
    for (size_t i = 0; i < CONN_SHARES; i++) {
        if (b->shares[i] && curl_share_cleanup(b->shares[i]) != CURLSHE_OK)
            all = false;
        else
            b->shares[i] = NULL;
    }
    return all;
}

/* Frees the retired banks nothing runs on. A pooled easy handle still
 * points at the cache it last used (curl_easy_reset keeps the share), so
 * those are detached first; this runs only while banks are retired. */
static void banks_reap(loop *l)
{
    for (size_t i = 0; i < l->n_easy; i++)
        curl_easy_setopt(l->easy_pool[i], CURLOPT_SHARE, NULL);
    for (bank **pp = &l->retired; *pp;) {
        bank *b = *pp;
        if (b->n_busy == 0 && bank_fini(b)) {
            *pp = b->next;
            free(b);
        } else {
            pp = &b->next;
        }
    }
}

/* Detaches x from the multi handle and the list, then runs its callback. */
static void xfer_finish(loop *l, xfer *x, CURLcode rc)
{
    curl_multi_remove_handle(l->multi, x->easy);
    if (x->bank) {
        x->bank->busy[x->share]--;
        x->bank->n_busy--;
    }
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x->user_private);
    xfer_unlink(l, x);
    CURL *easy = x->easy;
    loop_http_fn done = x->done;
    void *arg = x->arg;
    free(x);
    log_context_clear();
    done(l, easy, rc, arg);
}

/* Between two pieces of an iteration's socket work (an fd's curl action, a
 * finished transfer's callback): due timers get their turn once the work
 * has run SLICE_US since their last one. A burst of answers (256 epoll
 * events, each finished transfer running the engine's TwiML) took up to
 * 45 ms; timers waited for all of it. The work itself is not deferred, so
 * no exchange waits behind a later iteration. */
static void timers_turn(loop *l)
{
    if (l->heap_len == 0 || mono_us() - l->timers_ran_us < SLICE_US)
        return;
    if (l->heap[0]->due <= mono_ms())
        run_timers(l);
    l->timers_ran_us = mono_us();
}

static void collect_done(loop *l)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(l->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        assert(x && x->easy == m->easy_handle);
        /* m is invalid once the handle is removed; copy what we need first. */
        xfer_finish(l, x, m->data.result);
        timers_turn(l);
    }
}

static int http_start(loop *l, CURL *easy, loop_http_fn done, void *arg, bank *b)
{
    if (l->destroying || !easy || !done)
        return -1;
    xfer *x = calloc(1, sizeof *x);
    if (!x)
        return -1;
    x->easy = easy;
    x->done = done;
    x->arg = arg;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x->user_private);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    /* Signals are process-wide; a loop thread must not use them for timeouts. */
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    /* Set on every start: loop_easy_release resets the handle. curl keeps the
     * close callback with each connection this handle opens. */
    curl_easy_setopt(easy, CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
    curl_easy_setopt(easy, CURLOPT_SOCKOPTDATA, l);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, l);
    x->bank = b;
    if (b) {
        x->share = pick_share(b);
        curl_easy_setopt(easy, CURLOPT_SHARE, b->shares[x->share]);
    } else {
        /* Detached from every cache: the multi's own, which nothing else
         * uses, and the connection is closed after this transfer. */
        curl_easy_setopt(easy, CURLOPT_SHARE, NULL);
        curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, 1L);
    }
    if (curl_multi_add_handle(l->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, x->user_private);
        free(x);
        return -1;
    }
    if (b) {
        b->busy[x->share]++;
        b->n_busy++;
    }
    x->next = l->xfers;
    if (l->xfers)
        l->xfers->prev = x;
    l->xfers = x;
    l->n_xfers++;
    return 0;
}

int loop_http_start(loop *l, CURL *easy, loop_http_fn done, void *arg)
{
    return http_start(l, easy, done, arg, &l->own);
}

int loop_http_start_isolated(loop *l, CURL *easy, loop_http_fn done, void *arg, uint64_t gen)
{
    if (l->destroying)
        return -1;
    if (!l->cust || gen > l->cust->gen) {
        bank *b = calloc(1, sizeof *b);
        if (!b || !bank_init(b, gen)) {
            if (b && bank_fini(b))
                free(b);
            return -1;
        }
        if (l->cust) {
            l->cust->next = l->retired;
            l->retired = l->cust;
        }
        l->cust = b;
        banks_reap(l);
    }
    /* A transfer of an older policy than the current one must neither use
     * the current caches nor leave a connection in them. */
    return http_start(l, easy, done, arg, gen == l->cust->gen ? l->cust : NULL);
}

CURL *loop_easy(loop *l)
{
    return l->n_easy ? l->easy_pool[--l->n_easy] : curl_easy_init();
}

void loop_easy_release(loop *l, CURL *easy)
{
    if (!easy)
        return;
    if (l->n_easy == EASY_POOL || l->destroying) {
        curl_easy_cleanup(easy);
        return;
    }
    curl_easy_reset(easy);
    l->easy_pool[l->n_easy++] = easy;
    if (l->retired)
        banks_reap(l);
}

void loop_set_timer_observer(loop *l, loop_late_fn fn, void *arg)
{
    l->late_fn = fn;
    l->late_arg = arg;
}

void loop_set_idle(loop *l, loop_timer_fn fn, void *arg)
{
    l->idle_fn = fn;
    l->idle_arg = arg;
}

size_t loop_http_active(const loop *l)
{
    return l->n_xfers;
}

/* ---------------------------------------------------------------- thread */

static void *run(void *arg)
{
    loop *l = arg;
    struct epoll_event evs[EPOLL_BATCH];
    bool more = false;
    int running;

    pthread_setname_np(pthread_self(), l->name);
    for (;;) {
        int timeout = more ? 0 : next_timeout(l);
        int n = epoll_wait(l->epfd, evs, EPOLL_BATCH, timeout);
        if (n < 0 && errno != EINTR)
            break;   /* only EBADF/EINVAL: a broken loop, nothing to retry */
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l->evfd) {
                uint64_t v;
                ssize_t r = read(l->evfd, &v, sizeof v);
                (void)r;
                continue;
            }
            uint8_t st = (size_t)fd < l->n_fds ? l->fds[fd] : FD_UNKNOWN;
            if (!(st & (FD_WANT | FD_UNKNOWN))) {
                /* A parked connection woke up (see sock_cb): stop watching
                 * it, or level-triggered epoll would wake us forever. */
                if (st & FD_REG) {
                    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
                    l->fds[fd] = st & FD_CONN;
                }
                continue;
            }
            int flags = 0;
            if (evs[i].events & EPOLLIN)
                flags |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
            if (evs[i].events & (EPOLLERR | EPOLLHUP))
                flags |= CURL_CSELECT_ERR;
            curl_multi_socket_action(l->multi, fd, flags, &running);
            timers_turn(l);
        }
        if (n > 0)
            collect_done(l);
        if (l->curl_due >= 0 && l->curl_due <= mono_ms()) {
            l->curl_due = -1;
            curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            collect_done(l);
        }
        run_timers(l);
        l->timers_ran_us = mono_us();
        bool stop = run_messages(l, &more);
        if (l->idle_fn) {
            log_context_clear();
            l->idle_fn(l, l->idle_arg);
        }
        if (stop)
            break;
    }
    return NULL;
}

loop *loop_create(const char *thread_name, loop_msg_fn on_msg, void *ctx)
{
    assert(on_msg);
    loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->epfd = l->evfd = -1;
    l->curl_due = -1;
    l->on_msg = on_msg;
    l->ctx = ctx;
    snprintf(l->name, sizeof l->name, "%s", thread_name ? thread_name : "loop");
    pthread_mutex_init(&l->mu, NULL);
    /* Reference-counted and thread-safe in curl >= 7.84; paired in destroy. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    l->ring_cap = QUEUE_INITIAL;
    l->ring = malloc(l->ring_cap * sizeof *l->ring);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->multi = curl_multi_init();
    if (!l->ring || l->epfd < 0 || l->evfd < 0 || !l->multi)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l->evfd};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) < 0)
        goto fail;
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
    if (!bank_init(&l->own, 0))
        goto fail;
    return l;
fail:
    loop_destroy(l);
    return NULL;
}

int loop_start(loop *l)
{
    if (l->started)
        return -1;
    if (pthread_create(&l->thread, NULL, run, l) != 0)
        return -1;
    l->started = true;
    return 0;
}

void loop_stop(loop *l)
{
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    pthread_mutex_unlock(&l->mu);
    if (l->started) {
        if (!l->joined) {
            ring_doorbell(l);
            pthread_join(l->thread, NULL);
            l->joined = true;
        }
        return;
    }
    /* Never started: the caller stands in for the loop thread so that
     * messages posted before start still reach their owner. */
    bool more;
    while (!run_messages(l, &more))
        ;
}

void loop_destroy(loop *l)
{
    if (!l)
        return;
    loop_stop(l);
    l->destroying = true;
    /* Callbacks may cancel or add timers; timers are freed after them. */
    while (l->xfers)
        xfer_finish(l, l->xfers, CURLE_ABORTED_BY_CALLBACK);
    for (size_t i = 0; i < l->heap_len; i++)
        free(l->heap[i]);
    free(l->heap);
    while (l->n_easy)
        curl_easy_cleanup(l->easy_pool[--l->n_easy]);
    /* Closes the cached connections through closesocket_cb: fds after it.
     * Every easy handle is gone by now (aborted transfers' callbacks free or
     * release theirs), so no share is in use. */
    if (l->multi)
        curl_multi_cleanup(l->multi);
    bool freed = bank_fini(&l->own);
    if (l->cust) {
        l->cust->next = l->retired;
        l->retired = l->cust;
    }
    while (l->retired) {
        bank *b = l->retired;
        l->retired = b->next;
        freed &= bank_fini(b);
        free(b);
    }
    assert(freed);
    (void)freed;
    free(l->fds);
    if (l->evfd >= 0)
        close(l->evfd);
    if (l->epfd >= 0)
        close(l->epfd);
    free(l->ring);
    pthread_mutex_destroy(&l->mu);
    curl_global_cleanup();
    free(l);
}

void *loop_ctx(loop *l)
{
    return l->ctx;
}

int64_t loop_now_ms(const loop *l)
{
    (void)l;
    return mono_ms();
}
