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
 * run.sh parses. Not part of twigate; built by bench/lib.sh with cc from
 * bench/loadgen*.c. This file: options, main, and the modes load, serve and
 * startup; loadgen.h says where the rest is. */
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

/* ---- option parsing ---- */

void usage(void)
{
    fputs("usage: loadgen load    -u URL [-U URL2] [-X METHOD] [-H 'Name: v']... [-b BODY] [-c CONNS]\n"
          "                       [-r RATE|0] [-d SECS] [-n MAX] [-D DRAIN_SECS]\n"
          "       loadgen relay   -u TWIGATE_BASE [-U BASE2] -f TOKENS_FILE -l PORT [-r RATE|0] [-c CONNS]\n"
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
        case 'U': o->url2 = v; break;
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
    client_init(&cl, o->url, o->url2, o->conns);
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
