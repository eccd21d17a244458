/* loadgen_net — loadgen's machinery, shared by every mode (loadgen.h): a
 * growable byte buffer, latency samples, loopback URLs, HTTP/1.1 message
 * framing, and one epoll loop with a timerfd, a client of N keep-alive
 * connections (open loop: requests go out when due, latency counted from
 * then, as wrk2 does; closed loop: as fast as the connections allow) and one
 * server, the receiver for twigate's webhooks. One thread. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

/* ---- growable byte buffer ---- */

static void db_reserve(dbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) die("out of memory");
    b->p = p;
    b->cap = cap;
}

void db_printf(dbuf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    db_reserve(b, (size_t)n);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

static void db_consume(dbuf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
    if (b->p) b->p[b->len] = 0;
}

/* ---- latency samples ---- */

void sm_add(samples *s, int64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) die("out of memory");
    }
    s->v[s->n++] = ns;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Percentile q (0..100) in ms, nearest rank; -1 without samples. */
double sm_pct(samples *s, double q)
{
    if (!s->n) return -1;
    qsort(s->v, s->n, sizeof *s->v, cmp64);
    size_t i = (size_t)((q / 100.0) * (double)s->n + 0.999999);
    if (i < 1) i = 1;
    if (i > s->n) i = s->n;
    return (double)s->v[i - 1] / 1e6;
}

/* ---- URLs (http://127.0.0.1:port/path only) ---- */

void url_parse(const char *s, url_t *u)
{
    char host[64];
    int port = 80;
    const char *p;
    if (strncmp(s, "http://", 7) != 0) die("only http:// URLs: %s", s);
    s += 7;
    p = strpbrk(s, ":/");
    size_t hl = p ? (size_t)(p - s) : strlen(s);
    if (hl == 0 || hl >= sizeof host) die("bad host in URL");
    memcpy(host, s, hl);
    host[hl] = 0;
    s += hl;
    if (*s == ':') port = (int)strtol(s + 1, (char **)&s, 10);
    snprintf(u->path, sizeof u->path, "%s", *s ? s : "/");
    memset(&u->addr, 0, sizeof u->addr);
    u->addr.sin_family = AF_INET;
    u->addr.sin_port = htons((uint16_t)port);
    if (!strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &u->addr.sin_addr) != 1) die("host must be an IPv4 address");
    if ((ntohl(u->addr.sin_addr.s_addr) >> 24) != 127) die("loopback targets only");
    snprintf(u->hostport, sizeof u->hostport, "%s:%d", host, port);
}

/* ---- HTTP message framing ---- */

/* Finds the end of the head; returns its length (incl. CRLFCRLF) or 0. */
static size_t head_len(const char *p, size_t n)
{
    if (n < 4) return 0;
    const char *e = memmem(p, n, "\r\n\r\n", 4);
    return e ? (size_t)(e - p) + 4 : 0;
}

/* Value of header `name` in a head (case-insensitive), copied to out. */
static int header_val(const char *head, size_t hl, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', hl);
    const char *end = head + hl;
    while (p && p + 1 < end) {
        p++;
        if ((size_t)(end - p) > nl + 1 && !strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            size_t k = 0;
            while (v < end && *v != '\r' && *v != '\n' && k + 1 < outsz) out[k++] = *v++;
            out[k] = 0;
            return 1;
        }
        p = memchr(p, '\n', (size_t)(end - p));
    }
    return 0;
}

/* A complete message at the start of b? Returns its total length (0 = need
 * more, -1 = malformed) and the body's offset/length. Content-Length or
 * chunked; a response with neither has no body here (twigate, nginx and
 * Prism always send one of them). */
static long msg_complete(const char *p, size_t n, size_t *body_off, size_t *body_len)
{
    size_t hl = head_len(p, n);
    char v[64];
    if (!hl) return n > MAX_IN ? -1 : 0;
    *body_off = hl;
    if (header_val(p, hl, "Transfer-Encoding", v, sizeof v) && strcasestr(v, "chunked")) {
        size_t off = hl, blen = 0;
        for (;;) {
            const char *nlp = memmem(p + off, n - off, "\r\n", 2);
            if (!nlp) return 0;
            size_t sz = strtoul(p + off, NULL, 16);
            off = (size_t)(nlp - p) + 2;
            if (sz == 0) {
                const char *t = memmem(p + off, n - off, "\r\n", 2);   /* no trailers expected */
                if (!t) return 0;
                *body_len = blen;
                return (long)((size_t)(t - p) + 2);
            }
            if (n < off + sz + 2) return 0;
            off += sz + 2;
            blen += sz;
        }
    }
    size_t cl = 0;
    if (header_val(p, hl, "Content-Length", v, sizeof v)) cl = strtoul(v, NULL, 10);
    if (cl > MAX_IN) return -1;
    if (n < hl + cl) return 0;
    *body_len = cl;
    return (long)(hl + cl);
}

/* ---- the event loop ---- */

static int ep;
static tagfd listen_tag, timer_tag;
volatile sig_atomic_t stop_flag;

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void ep_add(int fd, void *ptr, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = ptr};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void ep_mod(int fd, void *ptr, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = ptr};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
}

static void set_timer(int64_t due_ns)
{
    struct itimerspec its = {0};
    if (due_ns > 0) {
        its.it_value.tv_sec = due_ns / 1000000000;
        its.it_value.tv_nsec = due_ns % 1000000000;
    }
    timerfd_settime(timer_tag.fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* ---- client side ---- */

static int c_open(client *cl, cconn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) die("socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const url_t *t = cl->two && (c->idx & 1) ? &cl->u2 : &cl->u;
    if (connect(fd, (const struct sockaddr *)&t->addr, sizeof t->addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->connected = 0;
    c->in.len = 0;
    ep_add(fd, c, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
    return 0;
}

void client_init(client *cl, const char *url, const char *url2, int nconns)
{
    memset(cl, 0, sizeof *cl);
    url_parse(url, &cl->u);
    if (url2) {
        url_parse(url2, &cl->u2);
        cl->two = 1;
    }
    if (nconns < 1 || nconns > MAX_CONNS) die("connections must be 1..%d", MAX_CONNS);
    cl->nconns = nconns;
    cl->conns = calloc((size_t)nconns, sizeof *cl->conns);
    cl->idle = xmalloc((size_t)nconns * sizeof *cl->idle);
    for (int i = 0; i < nconns; i++) {
        cconn *c = &cl->conns[i];
        c->kind = K_CLIENT;
        c->idx = i;
        c->fd = -1;
        if (c_open(cl, c) < 0) die("connect %s: %s", cl->u.hostport, strerror(errno));
        cl->idle[cl->nidle++] = i;
        cl->conns[i].in_idle = 1;
    }
}

static void c_flush(cconn *c)
{
    while (c->off < c->out.len) {
        ssize_t w = write(c->fd, c->out.p + c->off, c->out.len - c->off);
        if (w < 0) {
            if (errno == EAGAIN) { ep_mod(c->fd, c, EPOLLIN | EPOLLOUT | EPOLLRDHUP); return; }
            return;   /* the read side sees the error */
        }
        c->off += (size_t)w;
    }
    ep_mod(c->fd, c, EPOLLIN | EPOLLRDHUP);
}

/* Sends request `tag` due at t_due on an idle connection; 0 if none is idle
 * or the mode holds the request back. */
static int client_send(client *cl, long tag, int64_t t_due)
{
    if (!cl->nidle) return 0;
    cconn *c = &cl->conns[cl->idle[cl->nidle - 1]];
    c->out.len = 0;
    if (!cl->build(tag, &c->out, cl->arg)) return 0;
    cl->nidle--;
    c->in_idle = 0;
    c->off = 0;
    c->busy = 1;
    c->tag = tag;
    c->t_due = t_due;
    if (!cl->first_send) cl->first_send = now_ns();
    cl->sent++;
    if (c->connected) c_flush(c);
    return 1;
}

static void idle_remove(client *cl, cconn *c)
{
    for (int i = 0; i < cl->nidle; i++)
        if (cl->idle[i] == c->idx) {
            cl->idle[i] = cl->idle[--cl->nidle];
            break;
        }
    c->in_idle = 0;
}

static void c_fail(client *cl, cconn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->busy) {
        c->busy = 0;
        cl->errors++;
        cl->done++;
        if (cl->on_resp) cl->on_resp(c->tag, 0, NULL, 0, c->t_due, cl->arg);
    }
    cl->reconnects++;
    if (c_open(cl, c) < 0) {          /* stays out of the idle stack */
        if (c->in_idle) idle_remove(cl, c);
        return;
    }
    if (!c->in_idle) {   /* an idle connection the server closed is on the stack already */
        cl->idle[cl->nidle++] = c->idx;
        c->in_idle = 1;
    }
}

static void client_event(client *cl, cconn *c, uint32_t ev)
{
    if (!c->connected && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { c_fail(cl, c); return; }
        c->connected = 1;
        if (c->busy) c_flush(c); else ep_mod(c->fd, c, EPOLLIN | EPOLLRDHUP);
        return;
    }
    if (ev & EPOLLOUT) c_flush(c);
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        int eof = 0;
        for (;;) {
            db_reserve(&c->in, 65536);
            ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1);
            if (r > 0) { c->in.len += (size_t)r; c->in.p[c->in.len] = 0; continue; }
            if (r < 0 && errno == EAGAIN) break;
            eof = 1;   /* EOF or error: first take a response that is complete */
            break;
        }
        size_t bo = 0, bl = 0;
        long m = c->in.len ? msg_complete(c->in.p, c->in.len, &bo, &bl) : 0;
        if (m < 0 || (m > 0 && !c->busy)) { c_fail(cl, c); return; }   /* malformed, unsolicited */
        if (m == 0) { if (eof) c_fail(cl, c); return; }
        int status = atoi(c->in.p + 9);
        int64_t t = now_ns();
        sm_add(&cl->lat, t - c->t_due);
        cl->done++;
        cl->last_done = t;
        if (status >= 200 && status < 300) cl->ok++; else cl->non2xx++;
        c->busy = 0;
        if (cl->on_resp) cl->on_resp(c->tag, status, c->in.p + bo, bl, c->t_due, cl->arg);
        db_consume(&c->in, (size_t)m);
        if (eof) { c_fail(cl, c); return; }   /* reopens it and makes it idle */
        cl->idle[cl->nidle++] = c->idx;
        c->in_idle = 1;
    }
}

static int client_inflight(const client *cl)
{
    int n = 0;
    for (int i = 0; i < cl->nconns; i++) n += cl->conns[i].busy;
    return n;
}

/* ---- server side (our webhook receiver) ---- */

server *the_server;

void server_start(server *s, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s->fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind 127.0.0.1:%d: %s", port, strerror(errno));
    if (listen(s->fd, 4096) < 0) die("listen: %s", strerror(errno));
    socklen_t al = sizeof a;
    getsockname(s->fd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    listen_tag.kind = K_LISTEN;
    listen_tag.fd = s->fd;
    ep_add(s->fd, &listen_tag, EPOLLIN);
    the_server = s;
}

static void s_close(sconn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.p);
    free(c->out.p);
    free(c);
}

static void s_flush(sconn *c)
{
    while (c->off < c->out.len) {
        ssize_t w = write(c->fd, c->out.p + c->off, c->out.len - c->off);
        if (w < 0) {
            if (errno == EAGAIN) { ep_mod(c->fd, c, EPOLLIN | EPOLLOUT); return; }
            return;
        }
        c->off += (size_t)w;
    }
    c->out.len = c->off = 0;
    ep_mod(c->fd, c, EPOLLIN);
}

static void server_accept(server *s)
{
    for (;;) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sconn *c = calloc(1, sizeof *c);
        if (!c) die("out of memory");
        c->kind = K_SCONN;
        c->fd = fd;
        ep_add(fd, c, EPOLLIN);
    }
}

static void server_event(server *s, sconn *c, uint32_t ev)
{
    if (ev & EPOLLOUT) s_flush(c);
    if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    int eof = 0;
    for (;;) {
        db_reserve(&c->in, 65536);
        ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1);
        if (r > 0) { c->in.len += (size_t)r; c->in.p[c->in.len] = 0; continue; }
        if (r < 0 && errno == EAGAIN) break;
        eof = 1;
        break;
    }
    for (;;) {
        size_t bo = 0, bl = 0;
        long m = msg_complete(c->in.p, c->in.len, &bo, &bl);
        if (m < 0) { s_close(c); return; }
        if (m == 0) break;
        char method[16] = "", path[4096] = "";
        sscanf(c->in.p, "%15s %4095s", method, path);
        char save = c->in.p[bo + bl];
        c->in.p[bo + bl] = 0;
        s->requests++;
        s->handle(method, path, c->in.p + bo, bl, &c->out, s->arg);
        c->in.p[bo + bl] = save;
        db_consume(&c->in, (size_t)m);
    }
    if (c->out.len) s_flush(c);
    if (eof) s_close(c);
}

/* One turn of the loop: waits at most `ms` for events and dispatches them. */
void loop_once(client *cl, int ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, ms);
    for (int i = 0; i < n; i++) {
        int kind = *(int *)evs[i].data.ptr;
        if (kind == K_CLIENT) client_event(cl, evs[i].data.ptr, evs[i].events);
        else if (kind == K_SCONN) server_event(the_server, evs[i].data.ptr, evs[i].events);
        else if (kind == K_LISTEN) server_accept(the_server);
        else if (kind == K_TIMER) { uint64_t x; if (read(timer_tag.fd, &x, sizeof x) < 0) {} }
    }
}

void loop_init(void)
{
    ep = epoll_create1(EPOLL_CLOEXEC);
    timer_tag.kind = K_TIMER;
    timer_tag.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    ep_add(timer_tag.fd, &timer_tag, EPOLLIN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
}

/* Drives `total` requests (or until `dur_s`) at `rate`/s (0 = closed loop),
 * then drains what is in flight for at most `drain_s`. `extra` runs every
 * turn (the live mode's bookkeeping); returns nonzero to stop early. */
void drive(client *cl, long total, double rate, double dur_s, double drain_s,
                  int (*extra)(void *), void *xarg)
{
    int64_t t0 = now_ns();
    int64_t end = t0 + (int64_t)(dur_s * 1e9);
    int64_t period = rate > 0 ? (int64_t)(1e9 / rate) : 0;
    long next = 0;   /* next request index */
    for (;;) {
        int64_t t = now_ns();
        int sending = next < total && t < end && !stop_flag;
        if (sending) {
            if (period) {
                /* Open loop: every request whose due time has passed goes out
                 * as soon as a connection is free; its latency counts from
                 * its due time. */
                while (next < total) {
                    int64_t due = t0 + next * period;
                    if (due > t || due >= end) break;
                    if (!client_send(cl, next, due)) break;
                    next++;
                }
                int64_t due = t0 + next * period;
                set_timer(cl->nidle && due > t ? due : 0);
            } else {
                while (next < total && client_send(cl, next, now_ns())) next++;
            }
        }
        if (period && !cl->due && (t >= end || next >= total || stop_flag)) {
            long d = (long)((end - t0 + period - 1) / period);
            cl->due = d < total ? d : total;
        }
        if (!sending && !client_inflight(cl)) break;
        if (!sending && t > end + (int64_t)(drain_s * 1e9)) break;
        if (stop_flag && t > end) break;
        if (extra && extra(xarg)) break;
        int ms = 100;
        if (sending && period) {
            int64_t due = t0 + next * period;
            ms = cl->nidle ? (int)((due - t) / 1000000) + 1 : 100;
            if (ms < 0) ms = 0;
        }
        loop_once(cl, ms);
    }
    set_timer(0);
}

void print_client(const char *prefix, client *cl, int64_t t0, int64_t t_end)
{
    double el = (double)(t_end - t0) / 1e9;
    printf("%sdue=%ld sent=%ld done=%ld ok=%ld non2xx=%ld errors=%ld inflight=%d elapsed_s=%.3f "
           "rate=%.1f ok_rate=%.1f p50=%.3f p90=%.3f p99=%.3f p999=%.3f max=%.3f\n",
           prefix, cl->due ? cl->due : cl->sent, cl->sent, cl->done, cl->ok, cl->non2xx, cl->errors, client_inflight(cl), el,
           el > 0 ? (double)cl->done / el : 0, el > 0 ? (double)cl->ok / el : 0,
           sm_pct(&cl->lat, 50), sm_pct(&cl->lat, 90), sm_pct(&cl->lat, 99),
           sm_pct(&cl->lat, 99.9), sm_pct(&cl->lat, 100));
}
