/* loadgen.h — what loadgen's files share (bench/loadgen*.c, one program):
 *
 *   loadgen_net.c    buffers, latency samples, URLs, HTTP framing, the epoll
 *                    loop with its client (keep-alive connections, open or
 *                    closed loop) and its one server (our receiver), drive()
 *   loadgen.c        options, main, and the modes load, serve and startup
 *   loadgen_calls.c  the modes that follow calls: relay and live
 *
 * One thread: everything runs on it, so the globals below need no lock.
 * Failures of set-up die() (exit 2) with a message; a mode's result is its
 * one line of key=value pairs on stdout. */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_CONNS   4096
#define MAX_IN      (8u << 20)    /* largest response or request we buffer */

/* A growable byte buffer, kept NUL-terminated. */
typedef struct { char *p; size_t len, cap; } dbuf;

/* Latency samples in ns. */
typedef struct { int64_t *v; size_t n, cap; } samples;

/* A parsed loopback URL. */
typedef struct { struct sockaddr_in addr; char hostport[96]; char path[4096]; } url_t;

/* What an epoll event points at starts with its kind (K_*): a client
 * connection, a server connection, the listening socket or the timer. */
typedef struct { int kind, fd; } tagfd;

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

typedef struct client {
    url_t    u;
    url_t    u2;     /* with two targets (-U): odd connections go here */
    int      two;
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

typedef struct server {
    int   fd, port;
    /* handles one request; appends the whole response to out */
    void (*handle)(const char *method, const char *path, const char *body, size_t blen,
                   dbuf *out, void *arg);
    void *arg;
    long  requests;
} server;

/* tagfd kinds */
enum { K_CLIENT = 1, K_SCONN, K_LISTEN, K_TIMER };

/* The command line (loadgen.c parse_opts); one set for every mode. */
typedef struct opts {
    const char *url, *method, *body, *auth;
    const char *url2;   /* -U: a second instance; connections alternate */
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

/* Set by SIGINT/SIGTERM: modes stop sending and drain. */
extern volatile sig_atomic_t stop_flag;
/* The receiver server_start started (loop_once dispatches to it). */
extern server *the_server;

/* CLOCK_MONOTONIC in ns. */
int64_t now_ns(void);
/* Prints "loadgen: ..." and exits 2. */
void die(const char *fmt, ...);
void *xmalloc(size_t n);
void db_printf(dbuf *b, const char *fmt, ...);
void sm_add(samples *s, int64_t ns);
/* Percentile q (0..100) in ms, nearest rank; -1 without samples. */
double sm_pct(samples *s, double q);
/* http://127.0.0.1:port/path only (dies otherwise). */
void url_parse(const char *s, url_t *u);

/* The loop: loop_init once, then client_init / server_start, then turns. */
void loop_init(void);
/* url2 (or NULL): a second target with the same paths; connection i goes to
 * url2 when i is odd, so the load is spread evenly over two instances. */
void client_init(client *cl, const char *url, const char *url2, int nconns);
void server_start(server *s, int port);
/* One turn of the loop: waits at most `ms` for events and dispatches them. */
void loop_once(client *cl, int ms);
/* Drives `total` requests (or until `dur_s`) at `rate`/s (0 = closed loop),
 * then drains what is in flight for at most `drain_s`. `extra` runs every
 * turn; returns nonzero to stop early. */
void drive(client *cl, long total, double rate, double dur_s, double drain_s,
           int (*extra)(void *), void *xarg);
/* The client's counters and latency percentiles as key=value pairs. */
void print_client(const char *prefix, client *cl, int64_t t0, int64_t t_end);

/* loadgen.c: prints the usage and exits 2. */
void usage(void);
/* loadgen_calls.c */
int mode_relay(opts *o);
int mode_live(opts *o);

#endif
