/* loop — epoll event loop with a message queue, a timer heap and libcurl multi.
 *
 * Files: loop.c (the queue, the timers, the thread body run() and the
 * loop's lifecycle), loop_http.c (libcurl multi glue: the fd table, socket
 * and timer callbacks, connection-cache banks, transfers, the easy-handle
 * pool); both share loop_int.h (the struct, the caps, the fd-table bits).
 *
 * Map:
 *   - queue: a growable ring of void* under a mutex, capped at LOOP_MAX_QUEUE;
 *     the eventfd doorbell is rung only when the ring goes from empty to
 *     non-empty, so a burst of posts costs one write(2).
 *   - timers: a binary min-heap ordered by (due, seq); every timer records its
 *     heap index so cancel is O(log n). seq keeps equal deadlines FIFO.
 *   - http (loop_http.c): curl's socket API. curl tells us which fds to watch
 *     (loop_sock_cb) and when it next wants a timeout (loop_curl_timer_cb); we feed epoll readiness back
 *     through curl_multi_socket_action and collect finished transfers with
 *     curl_multi_info_read. Each transfer has an xfer record on a list so
 *     loop_destroy can abort the ones still in flight.
 *   - fd table: what epoll holds for each fd curl gave us, so that a
 *     keep-alive connection costs no epoll_ctl per exchange (see loop_int.h).
 *   - connection caches: CONN_SHARES curl share objects per loop, filled
 *     one after another, so that curl's walks of its connections stay short
 *     (see CONN_SHARES). Only this loop's thread uses them: no lock callbacks.
 *   - run(): the thread body; epoll_wait with timeout = min(next timer, curl
 *     deadline), then fds, then curl timeout, then timers, then messages,
 *     then the idle hook. Timers and messages get a time slice per
 *     iteration, so neither holds the rest (each other, sockets) back, and
 *     due timers also get a turn inside a long stretch of socket work
 *     (loop_timers_turn). One more fd may be watched (loop_watch: the
 *     engine's PostgreSQL notification socket), its callback run when
 *     readable.
 * Every callback starts with an empty log context: one call's CallSid must
 * not tag the lines of whatever the loop runs next (a health probe, say).
 */
#include "loop_int.h"

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

/* Between two pieces of an iteration's socket work (an fd's curl action, a
 * finished transfer's callback): due timers get their turn once the work
 * has run SLICE_US since their last one. A burst of answers (256 epoll
 * events, each finished transfer running the engine's TwiML) took up to
 * 45 ms; timers waited for all of it. The work itself is not deferred, so
 * no exchange waits behind a later iteration. */
void loop_timers_turn(loop *l)
{
    if (l->heap_len == 0 || mono_us() - l->timers_ran_us < SLICE_US)
        return;
    if (l->heap[0]->due <= mono_ms())
        run_timers(l);
    l->timers_ran_us = mono_us();
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
        atomic_store_explicit(&l->busy_since_ms, 0, memory_order_relaxed);
        int n = epoll_wait(l->epfd, evs, EPOLL_BATCH, timeout);
        atomic_store_explicit(&l->busy_since_ms, mono_ms(), memory_order_relaxed);
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
            if (fd == l->watch_fd) {
                l->watch_fn(l, l->watch_arg);
                continue;
            }
            uint8_t st = (size_t)fd < l->n_fds ? l->fds[fd] : FD_UNKNOWN;
            if (!(st & (FD_WANT | FD_UNKNOWN))) {
                /* A parked connection woke up (see loop_sock_cb): stop watching
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
            loop_timers_turn(l);
        }
        if (n > 0)
            loop_http_collect(l);
        if (l->curl_due >= 0 && l->curl_due <= mono_ms()) {
            l->curl_due = -1;
            curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            loop_http_collect(l);
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
    l->watch_fd = -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l->evfd};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) < 0)
        goto fail;
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, loop_sock_cb);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, loop_curl_timer_cb);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
    if (!loop_bank_init(&l->own, 0))
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
        loop_xfer_finish(l, l->xfers, CURLE_ABORTED_BY_CALLBACK);
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
    bool freed = loop_bank_fini(&l->own);
    if (l->cust) {
        l->cust->next = l->retired;
        l->retired = l->cust;
    }
    while (l->retired) {
        bank *b = l->retired;
        l->retired = b->next;
        freed &= loop_bank_fini(b);
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

int64_t loop_busy_ms(loop *l)
{
    int64_t since = atomic_load_explicit(&l->busy_since_ms, memory_order_relaxed);
    int64_t now = mono_ms();
    return since > 0 && now > since ? now - since : 0;
}

int64_t loop_now_ms(const loop *l)
{
    (void)l;
    return mono_ms();
}

int loop_watch(loop *l, int fd, loop_timer_fn fn, void *arg)
{
    if (l->watch_fd >= 0) epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->watch_fd, NULL);
    l->watch_fd = -1;
    if (fd < 0) return 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -1;
    l->watch_fd = fd;
    l->watch_fn = fn;
    l->watch_arg = arg;
    return 0;
}
