/* loadgen — the load drivers bench/run.sh needs and wrk cannot be:
 *
 *   load     HTTP requests at a fixed rate (open loop: latency counted from the
 *            moment a request was due, so a stalled server cannot hide its
 *            queue — the method of wrk2) or as fast as N connections allow
 *            (closed loop, like wrk, but draining every request it started).
 *   relay    Kaphila events into twigate's /kaphila/events/{token}, with our own
 *            receiver for the status callbacks they cause; latency is from the
 *            event's send to its callback's arrival.
 *   live     creates calls whose TwiML loops Say/Gather/Pause through our own
 *            receiver, measures how late each Pause ends and twigate's RSS.
 *   startup  time from exec of a command to the first 200 from a health URL.
 *
 * One thread, epoll, HTTP/1.1 keep-alive on 127.0.0.1 only. Every mode is
 * bounded in time. Output: one line of key=value pairs (times in ms) that
 * run.sh parses. Not part of twigate; built by bench/run.sh with cc. */
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

#define MAX_CONNS   4096
#define MAX_IN      (8u << 20)    /* largest response or request we buffer */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

/* ---- growable byte buffer ---- */

typedef struct { char *p; size_t len, cap; } dbuf;

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

static void db_printf(dbuf *b, const char *fmt, ...)
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

typedef struct { int64_t *v; size_t n, cap; } samples;

static void sm_add(samples *s, int64_t ns)
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
static double sm_pct(samples *s, double q)
{
    if (!s->n) return -1;
    qsort(s->v, s->n, sizeof *s->v, cmp64);
    size_t i = (size_t)((q / 100.0) * (double)s->n + 0.999999);
    if (i < 1) i = 1;
    if (i > s->n) i = s->n;
    return (double)s->v[i - 1] / 1e6;
}

/* ---- URLs (http://127.0.0.1:port/path only) ---- */

typedef struct { struct sockaddr_in addr; char hostport[96]; char path[4096]; } url_t;

static void url_parse(const char *s, url_t *u)
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

enum { K_CLIENT = 1, K_SCONN, K_LISTEN, K_TIMER };

typedef struct cconn {
    int      kind, fd;
    int      connected, busy;
    dbuf     out, in;
    size_t   off;
    int64_t  t_due;      /* when the request was due (open loop) or sent (closed) */
    long     tag;        /* request index */
    int      idx;
    int      in_idle;    /* on cl->idle: a server-closed idle connection must not be pushed twice */
} cconn;

typedef struct sconn {
    int   kind, fd;
    dbuf  in, out;
    size_t off;
} sconn;

typedef struct { int kind, fd; } tagfd;

static int ep;
static tagfd listen_tag, timer_tag;
static volatile sig_atomic_t stop_flag;

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

typedef struct client {
    url_t    u;
    int      nconns;
    cconn   *conns;
    int     *idle;   /* stack of idle connection indexes */
    int      nidle;
    /* counters */
    long     sent, done, ok, non2xx, errors, reconnects;
    long     due;    /* open loop: requests that fell due (sent or not) */
    samples  lat;
    int64_t  first_send, last_done;
    /* supplied by the mode: builds request `tag`; returns 0 to hold it back */
    int    (*build)(long tag, dbuf *out, void *arg);
    void   (*on_resp)(long tag, int status, const char *body, size_t blen, int64_t t_due, void *arg);
    void    *arg;
} client;

static int c_open(client *cl, cconn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) die("socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&cl->u.addr, sizeof cl->u.addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->connected = 0;
    c->in.len = 0;
    ep_add(fd, c, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
    return 0;
}

static void client_init(client *cl, const char *url, int nconns)
{
    memset(cl, 0, sizeof *cl);
    url_parse(url, &cl->u);
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

typedef struct server {
    int   fd, port;
    /* handles one request; appends the whole response to out */
    void (*handle)(const char *method, const char *path, const char *body, size_t blen,
                   dbuf *out, void *arg);
    void *arg;
    long  requests;
} server;

static server *the_server;

static void server_start(server *s, int port)
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
static void loop_once(client *cl, int ms)
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

static void loop_init(void)
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
static void drive(client *cl, long total, double rate, double dur_s, double drain_s,
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

static void print_client(const char *prefix, client *cl, int64_t t0, int64_t t_end)
{
    double el = (double)(t_end - t0) / 1e9;
    printf("%sdue=%ld sent=%ld done=%ld ok=%ld non2xx=%ld errors=%ld inflight=%d elapsed_s=%.3f "
           "rate=%.1f ok_rate=%.1f p50=%.3f p90=%.3f p99=%.3f p999=%.3f max=%.3f\n",
           prefix, cl->due ? cl->due : cl->sent, cl->sent, cl->done, cl->ok, cl->non2xx, cl->errors, client_inflight(cl), el,
           el > 0 ? (double)cl->done / el : 0, el > 0 ? (double)cl->ok / el : 0,
           sm_pct(&cl->lat, 50), sm_pct(&cl->lat, 90), sm_pct(&cl->lat, 99),
           sm_pct(&cl->lat, 99.9), sm_pct(&cl->lat, 100));
}

/* ---- shared option parsing ---- */

typedef struct opts {
    const char *url, *method, *body, *auth;
    const char *headers[16];
    int         nheaders;
    int         conns, port;
    long        total;
    double      rate, dur, drain;
    const char *file;
    /* live */
    int         calls, pause_s, gather_s, pid;
    double      hold, create_rate;
} opts;

static void usage(void)
{
    fputs("usage: loadgen load    -u URL [-X METHOD] [-H 'Name: v']... [-b BODY] [-c CONNS]\n"
          "                       [-r RATE|0] [-d SECS] [-n MAX] [-D DRAIN_SECS]\n"
          "       loadgen relay   -u TWIGATE_BASE -f TOKENS_FILE -l PORT [-r RATE|0] [-c CONNS]\n"
          "                       [-d MAX_SECS] [-D WAIT_SECS]\n"
          "       loadgen serve   -l PORT                          (answers 200 to anything)\n"
          "       loadgen live    -u TWIGATE_BASE -a AC:TOKEN -l PORT -n CALLS -r CREATE_RATE\n"
          "                       [-c CONNS] [-d MAX_RAMP_SECS] [-h HOLD_SECS] [-p PAUSE_S]\n"
          "                       [-g GATHER_S] [-P PID]\n"
          "       loadgen startup -u HEALTH_URL -n RUNS -- COMMAND [ARGS]...\n", stderr);
    exit(2);
}

static int parse_opts(int argc, char **argv, opts *o)
{
    int i = 2;
    memset(o, 0, sizeof *o);
    o->method = "GET";
    o->conns = 50;
    o->total = 1L << 62;
    o->dur = 10;
    o->drain = 10;
    o->hold = 10;
    o->pause_s = 5;
    o->gather_s = 5;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) return i + 1;
        if (a[0] != '-' || !a[1] || a[2] || i + 1 >= argc) usage();
        const char *v = argv[++i];
        switch (a[1]) {
        case 'u': o->url = v; break;
        case 'X': o->method = v; break;
        case 'H': if (o->nheaders < 16) o->headers[o->nheaders++] = v; break;
        case 'b': o->body = v; break;
        case 'a': o->auth = v; break;
        case 'c': o->conns = atoi(v); break;
        case 'r': o->rate = atof(v); o->create_rate = o->rate; break;
        case 'd': o->dur = atof(v); break;
        case 'D': o->drain = atof(v); break;
        case 'n': o->total = atol(v); o->calls = atoi(v); break;
        case 'f': o->file = v; break;
        case 'l': o->port = atoi(v); break;
        case 'h': o->hold = atof(v); break;
        case 'p': o->pause_s = atoi(v); break;
        case 'g': o->gather_s = atoi(v); break;
        case 'P': o->pid = atoi(v); break;
        default: usage();
        }
    }
    return i;
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(const char *in, char *out)
{
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[o++] = b64tab[(v >> 18) & 63];
        out[o++] = b64tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64tab[v & 63] : '=';
    }
    out[o] = 0;
}

/* ---- mode: load ---- */

typedef struct { opts *o; url_t *u; } load_ctx;

static int load_build(long tag, dbuf *out, void *arg)
{
    (void)tag;
    load_ctx *x = arg;
    opts *o = x->o;
    db_printf(out, "%s %s HTTP/1.1\r\nHost: %s\r\n", o->method, x->u->path, x->u->hostport);
    for (int i = 0; i < o->nheaders; i++) db_printf(out, "%s\r\n", o->headers[i]);
    if (o->body) {
        int form = 1;
        for (int i = 0; i < o->nheaders; i++)
            if (!strncasecmp(o->headers[i], "Content-Type:", 13)) form = 0;
        if (form) db_printf(out, "Content-Type: application/x-www-form-urlencoded\r\n");
        db_printf(out, "Content-Length: %zu\r\n\r\n%s", strlen(o->body), o->body);
    } else {
        db_printf(out, "\r\n");
    }
    return 1;
}

static int mode_load(opts *o)
{
    client cl;
    load_ctx x = {o, NULL};
    if (!o->url) usage();
    loop_init();
    client_init(&cl, o->url, o->conns);
    x.u = &cl.u;
    cl.build = load_build;
    cl.arg = &x;
    /* Let the connections finish their handshakes before the clock starts. */
    for (int i = 0; i < 5; i++) loop_once(&cl, 2);
    int64_t t0 = now_ns();
    drive(&cl, o->total, o->rate, o->dur, o->drain, NULL, NULL);
    print_client("", &cl, t0, cl.last_done ? cl.last_done : now_ns());
    return 0;
}

/* ---- sid → index table (open addressing) ---- */

typedef struct { char (*keys)[40]; int *vals; size_t cap; } sidmap;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h;
}

static void sm_init(sidmap *m, size_t n)
{
    m->cap = 16;
    while (m->cap < n * 2) m->cap *= 2;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = xmalloc(m->cap * sizeof *m->vals);
    if (!m->keys) die("out of memory");
}

static void sm_put(sidmap *m, const char *k, int v)
{
    size_t n = strlen(k), i = fnv(k, n) & (m->cap - 1);
    while (m->keys[i][0] && strcmp(m->keys[i], k)) i = (i + 1) & (m->cap - 1);
    snprintf(m->keys[i], sizeof m->keys[i], "%s", k);
    m->vals[i] = v;
}

static int sm_get(const sidmap *m, const char *k, size_t n)
{
    size_t i = fnv(k, n) & (m->cap - 1);
    while (m->keys[i][0]) {
        if (strlen(m->keys[i]) == n && !memcmp(m->keys[i], k, n)) return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* Value of form/query parameter `name` in s (not decoded: the values we read
 * are SIDs and status words). */
static const char *form_get(const char *s, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    const char *p = s;
    while (p && *p) {
        if (!strncmp(p, name, nl) && p[nl] == '=') {
            p += nl + 1;
            *len = strcspn(p, "& \r\n");
            return p;
        }
        p = strpbrk(p, "&?");
        if (p) p++;
    }
    return NULL;
}

/* ---- mode: relay ---- */

/* Events go out call-interleaved: event e is kind e / N for call e % N, so
 * one call's next event leaves N events after the previous one (in order,
 * since each needs the previous one's 200 first). Each kind causes exactly
 * one status callback (the calls ask for ringing, answered, completed). */
static const char *ev_names[3] = {"call.initiated", "call.answered", "call.ended"};
static const char *cb_status[3] = {"ringing", "in-progress", "completed"};

typedef struct relay {
    int       n;                 /* calls */
    char    (*tokens)[96];
    char    (*sids)[40];
    char    (*kids)[40];
    sidmap    map;
    int64_t  *t_sent, *t_cb;     /* per event */
    char     *inflight;          /* per call: an event request outstanding */
    long      callbacks, matched, unmatched, dup;
    int64_t   last_cb;
    samples   lat;
    url_t    *u;
} relay;

static int relay_build(long e, dbuf *out, void *arg)
{
    relay *r = arg;
    int call = (int)(e % r->n), kind = (int)(e / r->n);
    char body[512];
    if (r->inflight[call]) return 0;   /* keep this call's events in order */
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[96];
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    int bl;
    if (kind == 0)
        bl = snprintf(body, sizeof body, "{\"event\":\"%s\",\"callId\":\"%s\",\"timestamp\":\"%s\","
                      "\"from\":\"14155550199\",\"to\":\"14155550100\",\"status\":\"ringing\"}",
                      ev_names[0], r->kids[call], stamp);
    else if (kind == 1)
        bl = snprintf(body, sizeof body, "{\"event\":\"%s\",\"callId\":\"%s\",\"timestamp\":\"%s\","
                      "\"from\":\"14155550199\",\"to\":\"14155550100\",\"status\":\"answered\"}",
                      ev_names[1], r->kids[call], stamp);
    else
        bl = snprintf(body, sizeof body, "{\"event\":\"%s\",\"callId\":\"%s\",\"timestamp\":\"%s\","
                      "\"status\":\"completed\",\"endReason\":\"normal_hangup\",\"hangupCause\":\"16\","
                      "\"wasAnswered\":true,\"callDuration\":1}",
                      ev_names[2], r->kids[call], stamp);
    db_printf(out, "POST /kaphila/events/%s?CallSid=%s HTTP/1.1\r\nHost: %s\r\n"
              "User-Agent: Kaphila-API-API/2.0\r\nContent-Type: application/json\r\n"
              "Content-Length: %d\r\n\r\n%s", r->tokens[call], r->sids[call], r->u->hostport, bl, body);
    r->inflight[call] = 1;
    r->t_sent[e] = now_ns();
    return 1;
}

static void relay_resp(long e, int status, const char *body, size_t blen, int64_t t_due, void *arg)
{
    (void)status; (void)body; (void)blen;
    relay *r = arg;
    r->inflight[e % r->n] = 0;
    /* Open loop: the event was due at t_due; a wait for a free connection
     * counts as latency too. */
    if (t_due < r->t_sent[e]) r->t_sent[e] = t_due;
}

static void relay_handle(const char *method, const char *path, const char *body, size_t blen,
                         dbuf *out, void *arg)
{
    (void)method; (void)path; (void)blen;
    relay *r = arg;
    int64_t t = now_ns();
    size_t sl = 0, tl = 0;
    const char *sid = form_get(body, "CallSid", &sl);
    const char *st = form_get(body, "CallStatus", &tl);
    r->callbacks++;
    r->last_cb = t;
    int call = sid ? sm_get(&r->map, sid, sl) : -1;
    int kind = -1;
    for (int k = 0; st && k < 3; k++)
        if (strlen(cb_status[k]) == tl && !memcmp(st, cb_status[k], tl)) kind = k;
    if (call < 0 || kind < 0) {
        r->unmatched++;
    } else {
        long e = (long)kind * r->n + call;
        if (r->t_cb[e]) r->dup++;
        else if (r->t_sent[e]) {
            r->t_cb[e] = t;
            r->matched++;
            sm_add(&r->lat, t - r->t_sent[e]);
        } else {
            r->unmatched++;
        }
    }
    db_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n");
}

static int mode_relay(opts *o)
{
    relay r = {0};
    client cl;
    server s = {0};
    FILE *f;
    char line[512];
    if (!o->url || !o->file) usage();
    f = fopen(o->file, "r");
    if (!f) die("%s: %s", o->file, strerror(errno));
    int cap = 1024;
    r.tokens = xmalloc((size_t)cap * sizeof *r.tokens);
    r.sids = xmalloc((size_t)cap * sizeof *r.sids);
    r.kids = xmalloc((size_t)cap * sizeof *r.kids);
    /* lines: token|sid|kaphila_id (sqlite3's default separator) */
    while (fgets(line, sizeof line, f)) {
        char *a = strtok(line, "|\n"), *b = strtok(NULL, "|\n"), *c = strtok(NULL, "|\n");
        if (!a || !b) continue;
        if (r.n == cap) {
            cap *= 2;
            r.tokens = realloc(r.tokens, (size_t)cap * sizeof *r.tokens);
            r.sids = realloc(r.sids, (size_t)cap * sizeof *r.sids);
            r.kids = realloc(r.kids, (size_t)cap * sizeof *r.kids);
        }
        snprintf(r.tokens[r.n], sizeof r.tokens[0], "%s", a);
        snprintf(r.sids[r.n], sizeof r.sids[0], "%s", b);
        snprintf(r.kids[r.n], sizeof r.kids[0], "%s", c ? c : "");
        r.n++;
    }
    fclose(f);
    if (!r.n) die("no calls in %s", o->file);
    sm_init(&r.map, (size_t)r.n);
    for (int i = 0; i < r.n; i++) sm_put(&r.map, r.sids[i], i);
    long total = 3L * r.n;
    r.t_sent = calloc((size_t)total, sizeof *r.t_sent);
    r.t_cb = calloc((size_t)total, sizeof *r.t_cb);
    r.inflight = calloc((size_t)r.n, 1);
    loop_init();
    s.handle = relay_handle;
    s.arg = &r;
    server_start(&s, o->port);
    client_init(&cl, o->url, o->conns);
    r.u = &cl.u;
    cl.build = relay_build;
    cl.on_resp = relay_resp;
    cl.arg = &r;
    for (int i = 0; i < 5; i++) loop_once(&cl, 2);
    int64_t t0 = now_ns();
    drive(&cl, total, o->rate, o->dur, o->drain, NULL, NULL);
    int64_t t_sent_end = cl.last_done ? cl.last_done : now_ns();
    /* Wait for the callbacks still on their way. */
    int64_t wait_end = now_ns() + (int64_t)(o->drain * 1e9);
    while (r.matched < cl.ok && now_ns() < wait_end && !stop_flag) loop_once(&cl, 50);
    double el_in = (double)(t_sent_end - t0) / 1e9;
    double el_all = r.last_cb ? (double)(r.last_cb - t0) / 1e9 : 0;
    printf("events=%ld ok=%ld non2xx=%ld errors=%ld callbacks=%ld matched=%ld unmatched=%ld dup=%ld "
           "in_s=%.3f in_rate=%.1f e2e_s=%.3f e2e_rate=%.1f p50=%.3f p90=%.3f p99=%.3f p999=%.3f "
           "max=%.3f\n",
           cl.sent, cl.ok, cl.non2xx, cl.errors, r.callbacks, r.matched, r.unmatched, r.dup,
           el_in, el_in > 0 ? (double)cl.ok / el_in : 0, el_all,
           el_all > 0 ? (double)r.matched / el_all : 0, sm_pct(&r.lat, 50), sm_pct(&r.lat, 90),
           sm_pct(&r.lat, 99), sm_pct(&r.lat, 99.9), sm_pct(&r.lat, 100));
    return 0;
}

/* ---- mode: serve ---- */

static void ok_handle(const char *method, const char *path, const char *body, size_t blen,
                      dbuf *out, void *arg)
{
    (void)method; (void)path; (void)body; (void)blen; (void)arg;
    db_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n");
}

static int mode_serve(opts *o)
{
    server s = {.handle = ok_handle};
    client dummy = {0};
    loop_init();
    server_start(&s, o->port);
    printf("listening %d\n", s.port);
    fflush(stdout);
    while (!stop_flag) loop_once(&dummy, 500);
    return 0;
}

/* ---- mode: live ---- */

/* Every call loops:  /live  → <Say> <Gather timeout=g><Say/></Gather> <Redirect>/pause
 *                    /pause → <Pause length=p/> <Redirect>/live
 * The time from a call's /pause fetch to its next /live fetch is the Pause
 * plus one fetch round trip: what exceeds p seconds is how late the timer
 * fired (an upper bound: it includes twigate parsing the TwiML and starting
 * the next request). */
typedef struct live {
    opts     *o;
    url_t    *u;
    char      auth[256];
    char      create_body[1024];
    sidmap    map;
    int       ncalls;              /* SIDs known (from 201 bodies) */
    char    (*sids)[40];
    int64_t  *pause_at;            /* per call: last /pause fetch */
    int64_t  *last_live;           /* per call: last /live fetch */
    int       looping;             /* calls that fetched /live at least once */
    long      live_fetches, pause_fetches, unknown;
    int       measuring;
    samples   late;                /* ns beyond the Pause, measured while measuring */
    long      late_over_50;
    long      rss0_kb, rss_all_kb, rss_peak_kb;
} live;

static long rss_kb(int pid)
{
    char p[64], line[256];
    long kb = -1;
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    fclose(f);
    return kb;
}

static int live_build(long tag, dbuf *out, void *arg)
{
    (void)tag;
    live *l = arg;
    db_printf(out, "POST %sCalls.json HTTP/1.1\r\nHost: %s\r\nAuthorization: Basic %s\r\n"
              "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\n%s",
              l->u->path, l->u->hostport, l->auth, strlen(l->create_body), l->create_body);
    return 1;
}

static void live_resp(long tag, int status, const char *body, size_t blen, int64_t t_due, void *arg)
{
    (void)tag; (void)t_due; (void)blen;
    live *l = arg;
    if (status != 201 || !body) return;
    const char *p = strstr(body, "\"sid\":\"CA");
    if (!p || l->ncalls >= l->o->calls) return;
    p += 7;
    char sid[40];
    size_t n = strcspn(p, "\"");
    if (n >= sizeof sid) return;
    memcpy(sid, p, n);
    sid[n] = 0;
    if (sm_get(&l->map, sid, n) >= 0) return;
    snprintf(l->sids[l->ncalls], sizeof l->sids[0], "%s", sid);
    sm_put(&l->map, sid, l->ncalls);
    l->ncalls++;
}

static void live_handle(const char *method, const char *path, const char *body, size_t blen,
                        dbuf *out, void *arg)
{
    (void)method; (void)blen;
    live *l = arg;
    int64_t t = now_ns();
    size_t sl = 0;
    const char *sid = form_get(body, "CallSid", &sl);
    if (!sid) { const char *q = strchr(path, '?'); if (q) sid = form_get(q + 1, "CallSid", &sl); }
    int i = sid ? sm_get(&l->map, sid, sl) : -1;
    char twiml[1024];
    int port = the_server->port;
    if (!strncmp(path, "/pause", 6)) {
        l->pause_fetches++;
        if (i >= 0) l->pause_at[i] = t;
        snprintf(twiml, sizeof twiml,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Pause length=\"%d\"/>"
                 "<Redirect>http://127.0.0.1:%d/live</Redirect></Response>", l->o->pause_s, port);
    } else {
        l->live_fetches++;
        if (i >= 0) {
            if (!l->last_live[i]) l->looping++;
            l->last_live[i] = t;
            if (l->pause_at[i] && l->measuring) {
                int64_t late = t - l->pause_at[i] - (int64_t)l->o->pause_s * 1000000000;
                sm_add(&l->late, late);
                if (late > 50000000) l->late_over_50++;
            }
            l->pause_at[i] = 0;
        } else {
            /* The 201 has not been read yet; the call is known from its next loop on. */
            l->unknown++;
        }
        snprintf(twiml, sizeof twiml,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Hello</Say>"
                 "<Gather numDigits=\"1\" timeout=\"%d\"><Say>Press a key</Say></Gather>"
                 "<Redirect>http://127.0.0.1:%d/pause</Redirect></Response>", l->o->gather_s, port);
    }
    db_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %zu\r\n\r\n%s",
              strlen(twiml), twiml);
}

static int mode_live(opts *o)
{
    live l = {0};
    client cl;
    server s = {0};
    char url[256];
    if (!o->url || !o->auth || o->calls <= 0) usage();
    l.o = o;
    base64(o->auth, l.auth);
    sm_init(&l.map, (size_t)o->calls);
    l.sids = xmalloc((size_t)o->calls * sizeof *l.sids);
    l.pause_at = calloc((size_t)o->calls, sizeof *l.pause_at);
    l.last_live = calloc((size_t)o->calls, sizeof *l.last_live);
    loop_init();
    s.handle = live_handle;
    s.arg = &l;
    server_start(&s, o->port);
    snprintf(l.create_body, sizeof l.create_body,
             "To=%%2B14155550100&From=%%2B14155550199&Url=http%%3A%%2F%%2F127.0.0.1%%3A%d%%2Flive", s.port);
    /* -u is the account's base: http://127.0.0.1:P/2010-04-01/Accounts/AC.../ */
    snprintf(url, sizeof url, "%s", o->url);
    client_init(&cl, url, o->conns);
    l.u = &cl.u;
    cl.build = live_build;
    cl.on_resp = live_resp;
    cl.arg = &l;
    for (int i = 0; i < 5; i++) loop_once(&cl, 2);
    l.rss0_kb = o->pid ? rss_kb(o->pid) : -1;
    int64_t t0 = now_ns();
    /* The ramp is bounded (-d): a twigate too slow to create every call in
     * time is measured with the calls it has. */
    drive(&cl, o->calls, o->create_rate, o->dur, 10, NULL, NULL);
    int64_t t_created = now_ns();
    /* Wait until every created call runs its loop (fetched /live once). */
    int64_t limit = now_ns() + 10 * 1000000000LL;
    while (l.looping < l.ncalls && now_ns() < limit && !stop_flag) loop_once(&cl, 20);
    int64_t t_all = now_ns();
    l.rss_all_kb = o->pid ? rss_kb(o->pid) : -1;
    l.rss_peak_kb = l.rss_all_kb;
    /* Steady state: every call looping; measure Pause timers. */
    l.measuring = 1;
    int64_t hold_end = now_ns() + (int64_t)(o->hold * 1e9), next_rss = now_ns();
    while (now_ns() < hold_end && !stop_flag) {
        loop_once(&cl, 20);
        if (o->pid && now_ns() >= next_rss) {
            long k = rss_kb(o->pid);
            if (k > l.rss_peak_kb) l.rss_peak_kb = k;
            next_rss += 500000000;
        }
    }
    /* Calls still looping: fetched /live within the last loop period. */
    int64_t t_end = now_ns(), period = (int64_t)(o->pause_s + o->gather_s + 5) * 1000000000LL;
    int alive = 0;
    for (int i = 0; i < l.ncalls; i++)
        if (l.last_live[i] && t_end - l.last_live[i] < period) alive++;
    long rss_end = o->pid ? rss_kb(o->pid) : -1;
    if (rss_end > l.rss_peak_kb) l.rss_peak_kb = rss_end;
    double per_call_kb = alive ? (double)(l.rss_peak_kb - l.rss0_kb) / alive : -1;
    printf("calls=%d created_ok=%ld create_non2xx=%ld create_errors=%ld ramp_s=%.2f all_looping_s=%.2f "
           "looping=%d alive_at_end=%d live_fetches=%ld pause_fetches=%ld rss0_kb=%ld rss_all_kb=%ld "
           "rss_peak_kb=%ld per_call_kb=%.2f pauses=%zu late_p50=%.3f late_p99=%.3f late_max=%.3f "
           "late_over_50=%ld create_p50=%.3f create_p99=%.3f\n",
           o->calls, cl.ok, cl.non2xx, cl.errors, (double)(t_created - t0) / 1e9,
           (double)(t_all - t0) / 1e9, l.looping, alive, l.live_fetches, l.pause_fetches, l.rss0_kb,
           l.rss_all_kb, l.rss_peak_kb, per_call_kb, l.late.n, sm_pct(&l.late, 50),
           sm_pct(&l.late, 99), sm_pct(&l.late, 100), l.late_over_50, sm_pct(&cl.lat, 50),
           sm_pct(&cl.lat, 99));
    return 0;
}

/* ---- mode: startup ---- */

/* One GET of u; 1 when it answered 200. Blocking, on loopback. */
static int probe(const url_t *u)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok = 0;
    char req[512], buf[256];
    if (fd < 0) return 0;
    if (connect(fd, (const struct sockaddr *)&u->addr, sizeof u->addr) == 0) {
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                         u->path, u->hostport);
        if (write(fd, req, (size_t)n) == n) {
            ssize_t r = read(fd, buf, sizeof buf - 1);
            if (r > 12) { buf[r] = 0; ok = !strncmp(buf + 9, "200", 3); }
        }
    }
    close(fd);
    return ok;
}

static int mode_startup(opts *o, char **cmd)
{
    url_t u;
    samples s = {0};
    long runs = o->total < 1000 ? o->total : 10, failed = 0;
    if (!o->url || !cmd[0]) usage();
    url_parse(o->url, &u);
    if (probe(&u)) die("something already answers %s", o->url);
    for (long i = 0; i < runs; i++) {
        int64_t t0 = now_ns(), t1 = 0;
        pid_t pid = fork();
        if (pid == 0) {
            int dn = open("/dev/null", O_RDWR);
            dup2(dn, 1);
            dup2(dn, 2);
            execvp(cmd[0], cmd);
            _exit(127);
        }
        while (now_ns() - t0 < 5000000000LL) {
            if (probe(&u)) { t1 = now_ns(); break; }
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) { pid = 0; break; }
            struct timespec d = {0, 200000};   /* poll every 0.2 ms */
            nanosleep(&d, NULL);
        }
        if (t1) sm_add(&s, t1 - t0); else failed++;
        if (pid > 0) {
            kill(pid, SIGTERM);
            int st;
            int64_t dl = now_ns() + 5000000000LL;
            while (waitpid(pid, &st, WNOHANG) == 0) {
                if (now_ns() > dl) { kill(pid, SIGKILL); waitpid(pid, &st, 0); break; }
                struct timespec d = {0, 1000000};
                nanosleep(&d, NULL);
            }
        }
    }
    printf("runs=%ld failed=%ld min=%.3f p50=%.3f max=%.3f\n", runs, failed, sm_pct(&s, 0),
           sm_pct(&s, 50), sm_pct(&s, 100));
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    opts o;
    if (argc < 2) usage();
    int rest = parse_opts(argc, argv, &o);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(argv[1], "load")) return mode_load(&o);
    if (!strcmp(argv[1], "relay")) return mode_relay(&o);
    if (!strcmp(argv[1], "serve")) return mode_serve(&o);
    if (!strcmp(argv[1], "live")) return mode_live(&o);
    if (!strcmp(argv[1], "startup")) return mode_startup(&o, argv + rest);
    usage();
    return 2;
}
