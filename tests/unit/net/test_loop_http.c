/* Unit tests for loop's HTTP transfers (libcurl multi on the loop thread)
 * against a local echo server (support/echo_server.h) and a black-hole
 * socket: results and errors, 200 at once, a timer not starved by slow
 * answer callbacks, destroy aborting transfers in flight, and customer
 * traffic's isolated connection caches. How idle keep-alive sockets sit in
 * the loop's epoll set is test_loop_keepalive.c's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/loop.h"
#include "../support/support.h"
#include "../support/echo_server.h"

/* A listening socket nobody accepts: connections complete in the kernel
 * backlog and then hang forever — a perfect in-flight transfer. */
static int blackhole(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 512), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

typedef struct xfer_t {
    char       body[128];
    size_t     len;
    CURLcode   rc;
    long       status;
    bool       done;
    bool       on_loop_thread;
    void      *private_seen;
    ut_waiter *w;
} xfer_t;

static size_t write_cb(char *p, size_t sz, size_t n, void *ud)
{
    xfer_t *x = ud;
    size_t len = sz * n;
    size_t room = sizeof x->body - 1 - x->len;
    size_t c = len < room ? len : room;
    memcpy(x->body + x->len, p, c);
    x->len += c;
    x->body[x->len] = 0;
    return len;
}

static void http_done(loop *l, CURL *easy, CURLcode rc, void *arg)
{
    (void)l;
    xfer_t *x = arg;
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    x->on_loop_thread = strcmp(name, "http") == 0;
    x->rc = rc;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &x->status);
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x->private_seen);
    x->done = true;
    curl_easy_cleanup(easy);
    if (x->w)
        ut_waiter_add(x->w, 1);
}

typedef struct start_req {
    char    url[128];
    xfer_t *x;
    long    timeout_ms;
} start_req;

static void start_xfer(loop *l, void *arg)
{
    start_req *r = arg;
    CURL *e = curl_easy_init();
    assert_non_null(e);
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r->x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)r);   /* must survive the loop */
    if (r->timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    assert_int_equal(loop_http_start(l, e, http_done, r->x), 0);
}

static void test_http_basic(void **state)
{
    (void)state;
    ut_sched_reset();
    ut_echo_server s;
    ut_echo_start(&s);
    int bport;
    int bfd = blackhole(&bport);
    ut_waiter w;
    ut_waiter_init(&w);
    loop *l = loop_create("http", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);

    xfer_t x[4] = {{.w = &w}, {.w = &w}, {.w = &w}, {.w = &w}};
    start_req r[4] = {{.x = &x[0]}, {.x = &x[1]}, {.x = &x[2]}, {.x = &x[3], .timeout_ms = 150}};
    snprintf(r[0].url, sizeof r[0].url, "http://127.0.0.1:%d/hello", s.port);
    snprintf(r[1].url, sizeof r[1].url, "http://127.0.0.1:%d/missing", s.port);
    /* a closed port: connection refused */
    snprintf(r[2].url, sizeof r[2].url, "http://127.0.0.1:1/x");
    /* black hole with a 150 ms timeout: exercises curl's timer path */
    snprintf(r[3].url, sizeof r[3].url, "http://127.0.0.1:%d/x", bport);
    int64_t t0 = ut_now_ms();
    for (int i = 0; i < 4; i++)
        ut_run_on_loop(l, start_xfer, &r[i]);
    assert_true(ut_waiter_wait(&w, 4, 5000));
    int64_t elapsed = ut_now_ms() - t0;

    assert_int_equal(x[0].rc, CURLE_OK);
    assert_int_equal(x[0].status, 200);
    assert_string_equal(x[0].body, "echo:/hello");
    assert_true(x[0].on_loop_thread);
    assert_ptr_equal(x[0].private_seen, &r[0]);
    assert_int_equal(x[1].rc, CURLE_OK);
    assert_int_equal(x[1].status, 404);
    assert_int_equal(x[2].rc, CURLE_COULDNT_CONNECT);
    assert_int_equal(x[3].rc, CURLE_OPERATION_TIMEDOUT);
    assert_true(elapsed >= 150 && elapsed < 1000);
    assert_int_equal(loop_http_active(l), 0);

    loop_stop(l);
    loop_destroy(l);
    close(bfd);
    MHD_stop_daemon(s.d);
    ut_waiter_fini(&w);
}

#define N_CONCURRENT 200

static void count_active(loop *l, void *arg)
{
    *(size_t *)arg = loop_http_active(l);
}

static void test_http_many_concurrent(void **state)
{
    (void)state;
    ut_sched_reset();
    ut_echo_server s;
    ut_echo_start(&s);
    ut_waiter w;
    ut_waiter_init(&w);
    loop *l = loop_create("http", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);

    xfer_t *x = calloc(N_CONCURRENT, sizeof *x);
    start_req *r = calloc(N_CONCURRENT, sizeof *r);
    for (int i = 0; i < N_CONCURRENT; i++) {
        x[i].w = &w;
        r[i].x = &x[i];
        snprintf(r[i].url, sizeof r[i].url, "http://127.0.0.1:%d/n/%d", s.port, i);
        ut_run_on_loop(l, start_xfer, &r[i]);
    }
    assert_true(ut_waiter_wait(&w, N_CONCURRENT, 10000));
    for (int i = 0; i < N_CONCURRENT; i++) {
        char want[64];
        snprintf(want, sizeof want, "echo:/n/%d", i);
        assert_int_equal(x[i].rc, CURLE_OK);
        assert_int_equal(x[i].status, 200);
        assert_string_equal(x[i].body, want);
    }
    size_t active = 99;
    ut_waiter w2;
    ut_waiter_init(&w2);
    ut_run_on_loop(l, count_active, &active);
    loop_stop(l);
    assert_int_equal(active, 0);
    loop_destroy(l);
    MHD_stop_daemon(s.d);
    free(x);
    free(r);
    ut_waiter_fini(&w);
    ut_waiter_fini(&w2);
}

/* A burst of finished transfers whose callbacks are slow (the engine runs a
 * call's TwiML in them) does not hold back a timer that comes due meanwhile:
 * timers get a turn between callbacks. The first callback blocks the loop
 * for 100 ms, so the other answers all arrive and are handled in one
 * iteration, ~3 ms each; the second arms a timer due 10 ms later. */
#define N_ANSWERS 100

typedef struct answers_state {
    ut_waiter  w;
    int     done;
    int64_t armed_at, fired_at, batch_end;
} answers_state;

static void answers_fire(loop *l, void *arg)
{
    (void)l;
    answers_state *st = arg;
    st->fired_at = ut_now_ms();
    ut_waiter_add(&st->w, 1);
}

static void slow_answer(loop *l, CURL *easy, CURLcode rc, void *arg)
{
    answers_state *st = arg;
    assert_int_equal(rc, CURLE_OK);
    curl_easy_cleanup(easy);
    int n = ++st->done;
    if (n == 2) {
        st->armed_at = ut_now_ms();
        assert_non_null(loop_timer_add(l, 10, answers_fire, st));
    }
    struct timespec d = {0, (n == 1 ? 100 : 3) * 1000L * 1000L};
    nanosleep(&d, NULL);
    if (n == N_ANSWERS) {
        st->batch_end = ut_now_ms();
        ut_waiter_add(&st->w, 1);
    }
}

typedef struct answers_req {
    answers_state *st;
    int            port;
} answers_req;

static void start_answers(loop *l, void *arg)
{
    answers_req *r = arg;
    for (int i = 0; i < N_ANSWERS; i++) {
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/a/%d", r->port, i);
        CURL *e = curl_easy_init();
        assert_non_null(e);
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ut_discard_cb);
        assert_int_equal(loop_http_start(l, e, slow_answer, r->st), 0);
    }
}

static void test_timer_not_starved_by_answers(void **state)
{
    (void)state;
    ut_sched_reset();
    ut_echo_server s;
    ut_echo_start(&s);
    answers_state st = {0};
    ut_waiter_init(&st.w);
    answers_req r = {&st, s.port};
    loop *l = loop_create("http", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    ut_run_on_loop(l, start_answers, &r);
    assert_true(ut_waiter_wait(&st.w, 2, 10000));
    /* the batch's callbacks take ~300 ms after the timer was armed */
    assert_true(st.batch_end - st.armed_at >= 200);
    assert_true(st.fired_at - st.armed_at >= 10);
    assert_true(st.fired_at - st.armed_at <= 10 + 30 + UT_ON_TIME_MS);
    loop_stop(l);
    loop_destroy(l);
    MHD_stop_daemon(s.d);
    ut_waiter_fini(&st.w);
}

/* Transfers to the black hole are in flight when the loop stops; destroy
 * must call each done callback with CURLE_ABORTED_BY_CALLBACK. */
static void test_destroy_aborts_in_flight(void **state)
{
    (void)state;
    ut_sched_reset();
    int bport;
    int bfd = blackhole(&bport);
    loop *l = loop_create("http", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    enum { N = 50 };
    xfer_t x[N];
    start_req r[N];
    memset(x, 0, sizeof x);
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        r[i].x = &x[i];
        snprintf(r[i].url, sizeof r[i].url, "http://127.0.0.1:%d/hang", bport);
        ut_run_on_loop(l, start_xfer, &r[i]);
    }
    size_t active = 0;
    usleep(100 * 1000);   /* let them connect and send */
    ut_run_on_loop(l, count_active, &active);
    loop_stop(l);
    assert_int_equal(active, N);
    for (int i = 0; i < N; i++)
        assert_false(x[i].done);
    loop_destroy(l);
    for (int i = 0; i < N; i++) {
        assert_true(x[i].done);
        assert_int_equal(x[i].rc, CURLE_ABORTED_BY_CALLBACK);
    }
    close(bfd);
}
/* ---- customer traffic's own connection caches (loop_http_start_isolated) */

typedef struct iso_req {
    char     url[128];
    int      gen;          /* 0 = loop_http_start (Kaphila's caches) */
    long     connects;     /* 1 = a new connection, 0 = a reused one */
    CURLcode rc;
    ut_waiter   w;
} iso_req;

static void iso_done(loop *l, CURL *easy, CURLcode rc, void *arg)
{
    iso_req *r = arg;
    r->rc = rc;
    curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &r->connects);
    loop_easy_release(l, easy);   /* reaps retired caches */
    ut_waiter_add(&r->w, 1);
}

static void iso_start(loop *l, void *arg)
{
    iso_req *r = arg;
    CURL *e = loop_easy(l);
    assert_non_null(e);
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ut_discard_cb);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 3000L);
    assert_int_equal(r->gen ? loop_http_start_isolated(l, e, iso_done, r, (uint64_t)r->gen)
                            : loop_http_start(l, e, iso_done, r), 0);
}

/* Customer transfers never reuse a connection of Kaphila's caches or of an
 * older policy generation, nor leave one for a newer; within a generation
 * they keep alive as usual. */
static void test_http_isolated_caches(void **state)
{
    (void)state;
    ut_sched_reset();
    static const struct { int gen; long connects; } steps[] = {
        {0, 1},   /* Kaphila opens a connection */
        {1, 1},   /* customer, generation 1: not Kaphila's */
        {1, 0},   /* ...keeps its own alive */
        {0, 0},   /* Kaphila's is still there, untouched */
        {2, 1},   /* a reload: generation 2 opens anew */
        {1, 1},   /* a late transfer of generation 1: a one-off connection */
        {1, 1},   /* ...that was not kept */
        {2, 0},   /* generation 2 keeps its own */
        {0, 0},
    };
    ut_echo_server s;
    ut_echo_start(&s);
    loop *l = loop_create("http", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        iso_req r = {.gen = steps[i].gen};
        snprintf(r.url, sizeof r.url, "http://127.0.0.1:%d/x", s.port);
        ut_waiter_init(&r.w);
        ut_run_on_loop(l, iso_start, &r);
        assert_true(ut_waiter_wait(&r.w, 1, 5000));
        ut_waiter_fini(&r.w);
        assert_int_equal(r.rc, CURLE_OK);
        if (r.connects != steps[i].connects)
            fail_msg("step %zu (gen %d): %ld new connections, want %ld", i, steps[i].gen,
                     r.connects, steps[i].connects);
    }
    loop_stop(l);
    loop_destroy(l);
    MHD_stop_daemon(s.d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_basic),
        cmocka_unit_test(test_http_many_concurrent),
        cmocka_unit_test(test_timer_not_starved_by_answers),
        cmocka_unit_test(test_destroy_aborts_in_flight),
        cmocka_unit_test(test_http_isolated_caches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
