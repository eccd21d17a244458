/* bench/httpfloor.c — the HTTP floor: what one HTTP exchange over loopback
 * costs in CPU with the two libraries twigate speaks HTTP through, and
 * nothing of twigate's own.
 *
 *   httpfloor [-n EXCHANGES] [-c CONCURRENCY] [-t SERVER_THREADS] [-b BODY_BYTES] [-s]
 *
 * One process: a libmicrohttpd server set up as twigate's (its own polling
 * threads on epoll, a pool of -t threads, suspend/resume allowed) answering
 * every POST with a small JSON body once it has read the request's, and on
 * the main thread a libcurl multi client driven by the socket API on epoll,
 * as twigate's engine loop drives it: -c transfers in flight over kept-alive
 * connections, each finished easy handle reset and set up again for the next
 * (twigate's pool does the same per transfer). A tenth of -n runs first to
 * open the connections and warm the caches, then -n are counted.
 *
 * -s: the server answers as twigate's does a request the engine decides
 * (a create, a Kaphila event): the request's thread suspends the connection
 * and hands it to another thread through a locked queue and an eventfd, and
 * that thread resumes it, whereupon the reply is queued. The difference to
 * the run without -s is what the hand-off alone costs.
 *
 * Prints one line: exchanges, the server's CPU (every thread but the main
 * one) and the client's (the main thread), in µs per exchange. Loopback puts
 * the receiver's TCP input on the sender's thread, as it does in twigate, so
 * the split between the two is the split a twigate thread pays. bench/cpuops.sh
 * multiplies these by the exchanges of a call and of a relayed event: the
 * part of twigate's CPU per operation that these libraries and the kernel
 * take whatever twigate does around them. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

static const char reply[] = "{\"id\":\"floor\",\"status\":\"ok\"}";

/* -s: suspended connections waiting for the "engine" thread. */
static bool handoff;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static struct MHD_Connection **q;
static size_t q_len, q_cap;
static int q_efd = -1;

static void *engine_main(void *arg)
{
    (void)arg;
    uint64_t v;
    struct MHD_Connection **mine = NULL;
    size_t cap = 0;
    while (read(q_efd, &v, sizeof v) == sizeof v) {
        pthread_mutex_lock(&q_lock);
        size_t n = q_len;
        if (n > cap) {
            cap = q_cap;
            mine = realloc(mine, cap * sizeof *mine);
        }
        memcpy(mine, q, n * sizeof *mine);
        q_len = 0;
        pthread_mutex_unlock(&q_lock);
        if (n == 1 && mine[0] == NULL) break;   /* the stop */
        for (size_t i = 0; i < n; i++) MHD_resume_connection(mine[i]);
    }
    free(mine);
    return NULL;
}

static void handoff_push(struct MHD_Connection *conn)
{
    uint64_t one = 1;
    pthread_mutex_lock(&q_lock);
    if (q_len == q_cap) {
        q_cap = q_cap ? q_cap * 2 : 256;
        q = realloc(q, q_cap * sizeof *q);
    }
    q[q_len++] = conn;
    pthread_mutex_unlock(&q_lock);
    if (write(q_efd, &one, sizeof one) != sizeof one) abort();
}

enum { GOT_HEADERS = 1, HANDED_OFF = 2 };

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **state)
{
    (void)cls; (void)url; (void)method; (void)version; (void)upload;
    if (*state == NULL) {   /* headers only: ask for the body */
        *state = (void *)GOT_HEADERS;
        return MHD_YES;
    }
    if (*upload_size) {     /* read (and drop) the body */
        *upload_size = 0;
        return MHD_YES;
    }
    if (handoff && *state == (void *)GOT_HEADERS) {
        *state = (void *)HANDED_OFF;
        MHD_suspend_connection(conn);
        handoff_push(conn);
        return MHD_YES;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof reply - 1, (void *)reply,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

typedef struct client {
    CURLM *multi;
    int    ep;
    long   timeout_ms;
} client;

static int on_socket(CURL *e, curl_socket_t s, int what, void *cls, void *sockp)
{
    client *c = cls;
    struct epoll_event ev = { 0 };
    (void)e;
    ev.data.fd = s;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(c->ep, EPOLL_CTL_DEL, s, NULL);
        curl_multi_assign(c->multi, s, NULL);
        return 0;
    }
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (!sockp) {
        epoll_ctl(c->ep, EPOLL_CTL_ADD, s, &ev);
        curl_multi_assign(c->multi, s, (void *)1);
    } else {
        epoll_ctl(c->ep, EPOLL_CTL_MOD, s, &ev);
    }
    return 0;
}

static int on_timer(CURLM *m, long ms, void *cls)
{
    (void)m;
    ((client *)cls)->timeout_ms = ms;
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *cls)
{
    (void)p; (void)cls;
    return size * n;
}

static const char *g_url;
static const char *g_body;
static struct curl_slist *g_headers;

static void setup(CURL *e)
{
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, g_url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, g_body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, g_headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
}

/* Runs until `count` exchanges have ended; returns how many failed. */
static long drive(client *c, CURL **easy, int conc, long count)
{
    long started = 0, ended = 0, failed = 0;
    int running = 0;
    for (int i = 0; i < conc && started < count; i++, started++) {
        setup(easy[i]);
        curl_multi_add_handle(c->multi, easy[i]);
    }
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    while (ended < count) {
        struct epoll_event evs[64];
        int n = epoll_wait(c->ep, evs, 64, c->timeout_ms < 0 ? 1000 : (int)c->timeout_ms);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); exit(1); }
        if (n <= 0) {
            curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        for (int i = 0; i < n; i++) {
            int f = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                    (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(c->multi, evs[i].data.fd, f, &running);
        }
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            CURL *e = m->easy_handle;
            long code = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            if (m->data.result != CURLE_OK || code != 200) failed++;
            ended++;
            curl_multi_remove_handle(c->multi, e);
            if (started < count) {
                started++;
                setup(e);
                curl_multi_add_handle(c->multi, e);
            }
        }
    }
    return failed;
}

static double tv_us(struct timeval t) { return t.tv_sec * 1e6 + t.tv_usec; }

int main(int argc, char **argv)
{
    long n = 20000;
    int conc = 32, threads = 2, body = 300, o;
    while ((o = getopt(argc, argv, "n:c:t:b:s")) != -1) {
        if (o == 's') handoff = true;
        else if (o == 'n') n = atol(optarg);
        else if (o == 'c') conc = atoi(optarg);
        else if (o == 't') threads = atoi(optarg);
        else if (o == 'b') body = atoi(optarg);
        else {
            fprintf(stderr, "usage: httpfloor [-n EXCHANGES] [-c CONCURRENCY] [-t SERVER_THREADS] [-b BODY_BYTES] [-s]\n");
            return 2;
        }
    }
    if (n < 1 || conc < 1 || threads < 1 || body < 2) return 2;
    pthread_t engine;
    if (handoff) {
        q_efd = eventfd(0, EFD_CLOEXEC);
        if (q_efd < 0 || pthread_create(&engine, NULL, engine_main, NULL)) return 1;
    }

    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC,
        0, NULL, NULL, on_request, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(conc * 2 + 16),
        MHD_OPTION_CONNECTION_TIMEOUT, 30u,
        MHD_OPTION_END);
    if (!d) { fprintf(stderr, "httpfloor: MHD_start_daemon failed\n"); return 1; }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/event", di ? di->port : 0);
    g_url = url;

    /* A JSON body of about -b bytes, as a Kaphila event or a makecall is. */
    char *b = malloc((size_t)body + 1);
    memset(b, 'x', (size_t)body);
    memcpy(b, "{\"k\":\"", 6);
    memcpy(b + body - 2, "\"}", 2);
    b[body] = '\0';
    g_body = b;
    g_headers = curl_slist_append(NULL, "Content-Type: application/json");

    curl_global_init(CURL_GLOBAL_DEFAULT);
    client c = { .multi = curl_multi_init(), .ep = epoll_create1(EPOLL_CLOEXEC), .timeout_ms = -1 };
    curl_multi_setopt(c.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c.multi, CURLMOPT_SOCKETDATA, &c);
    curl_multi_setopt(c.multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c.multi, CURLMOPT_TIMERDATA, &c);
    CURL **easy = calloc((size_t)conc, sizeof *easy);
    for (int i = 0; i < conc; i++) easy[i] = curl_easy_init();

    long failed = drive(&c, easy, conc, n / 10 > conc ? n / 10 : conc);   /* warm-up */
    struct rusage s0, s1, t0, t1;
    getrusage(RUSAGE_SELF, &s0);
    getrusage(RUSAGE_THREAD, &t0);
    failed += drive(&c, easy, conc, n);
    getrusage(RUSAGE_THREAD, &t1);
    getrusage(RUSAGE_SELF, &s1);

    double client_us = tv_us(t1.ru_utime) - tv_us(t0.ru_utime) + tv_us(t1.ru_stime) - tv_us(t0.ru_stime);
    double all_us = tv_us(s1.ru_utime) - tv_us(s0.ru_utime) + tv_us(s1.ru_stime) - tv_us(s0.ru_stime);
    printf("FLOOR exchanges=%ld failed=%ld server_us=%.1f client_us=%.1f total_us=%.1f\n", n, failed,
           (all_us - client_us) / (double)n, client_us / (double)n, all_us / (double)n);

    for (int i = 0; i < conc; i++) curl_easy_cleanup(easy[i]);
    free(easy);
    curl_multi_cleanup(c.multi);
    close(c.ep);
    curl_slist_free_all(g_headers);
    curl_global_cleanup();
    if (handoff) {
        handoff_push(NULL);
        pthread_join(engine, NULL);
        close(q_efd);
        free(q);
    }
    MHD_stop_daemon(d);
    free(b);
    return failed ? 1 : 0;
}
