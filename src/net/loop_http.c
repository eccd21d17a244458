/* loop_http — the loop's libcurl multi glue (see loop.c for the map of the
 * loop files): curl's socket API on the loop's epoll set, the fd table,
 * connection-cache banks, transfers and the easy-handle pool. Loop thread
 * only, like the rest of the loop's state. */
#include "loop_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/log.h"

/* ---------------------------------------------------------------- http */

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

int loop_sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
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
int loop_curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
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

bool loop_bank_init(bank *b, uint64_t gen)
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
bool loop_bank_fini(bank *b)
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
        if (b->n_busy == 0 && loop_bank_fini(b)) {
            *pp = b->next;
            free(b);
        } else {
            pp = &b->next;
        }
    }
}

/* Detaches x from the multi handle and the list, then runs its callback. */
void loop_xfer_finish(loop *l, xfer *x, CURLcode rc)
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

void loop_http_collect(loop *l)
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
        loop_xfer_finish(l, x, m->data.result);
        loop_timers_turn(l);
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
        if (!b || !loop_bank_init(b, gen)) {
            if (b && loop_bank_fini(b))
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
