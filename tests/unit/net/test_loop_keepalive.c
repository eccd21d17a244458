/* Unit tests for how loop keeps idle keep-alive sockets in its epoll set:
 * one connection reused and left registered while idle, a server closing an
 * idle connection (no spinning, the next transfer still works), and
 * recycled fd numbers, with curl's resolver socketpairs made visible by a
 * slow getaddrinfo that this file interposes for its own binary. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <microhttpd.h>
#include <netdb.h>
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

/* A host name that takes SLOW_DNS_MS to resolve (to 127.0.0.1). Local
 * lookups finish before curl first asks to watch its resolver thread's
 * socketpair, so a slow DNS server is what makes curl watch it; this stands
 * in for one. It replaces libc's getaddrinfo for the whole binary
 * (libcurl's calls resolve to the executable's definition) and passes other
 * names on. */
#define SLOW_HOST "slow-dns.test"
#define SLOW_DNS_MS 300
/* ...and one that fails after 20 ms: no connection follows its lookup. */
#define SLOW_FAIL_HOST "slow-fail.test"

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
                          struct addrinfo **);
    static gai_fn real;
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    if (node && strcmp(node, SLOW_HOST) == 0) {
        usleep(SLOW_DNS_MS * 1000);
        node = "127.0.0.1";
    } else if (node && strcmp(node, SLOW_FAIL_HOST) == 0) {
        usleep(20 * 1000);
        return EAI_NONAME;
    }
    return real(node, service, hints, res);
}

/* true when some epoll set of this process watches fd. Only the loop's
 * holds client sockets (the servers' epoll sets hold their own fds). */
static bool epoll_watches(int fd)
{
    bool found = false;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        char path[300], link[64] = "";
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n <= 0 || strncmp(link, "anon_inode:[eventpoll]", (size_t)n) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/fdinfo/%s", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        char line[256];
        int tfd;
        while (!found && fgets(line, sizeof line, f))
            found = sscanf(line, "tfd: %d", &tfd) == 1 && tfd == fd;
        fclose(f);
    }
    closedir(d);
    return found;
}

/* Transfers one after another on pooled handles (loop_easy, so each start
 * must set the loop's options again after curl_easy_reset). */
#define MAX_SEQ 256

typedef struct seq_state {
    ut_waiter     w;
    char          url[2][128];   /* alternated: transfer i goes to url[i % 2] */
    int           target;
    int           done;
    int           failed;        /* transfers not ending in CURLE_OK + 200 */
    CURLcode      first_rc;      /* of the first transfer */
    CURLcode      last_rc;
    long          connects;      /* new connections, summed over the transfers */
    curl_socket_t opened[MAX_SEQ];
    int           n_opened;
    int64_t       slow_late_us;  /* summed: name lookup time beyond SLOW_DNS_MS */
    int           n_slow;
} seq_state;
/* A caller's own open-socket callback, as webhook.c has: the loop's socket
 * bookkeeping must work with it. Records each fd. */
static curl_socket_t seq_open(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    seq_state *st = arg;
    (void)purpose;
    curl_socket_t s = socket(a->family, a->socktype, a->protocol);
    if (s >= 0 && st->n_opened < MAX_SEQ)
        st->opened[st->n_opened++] = s;
    return s;
}

static void seq_start(loop *l, void *arg);

static void seq_done(loop *l, CURL *easy, CURLcode rc, void *arg)
{
    seq_state *st = arg;
    long status = 0, connects = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects);
    const char *url = NULL;
    curl_easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &url);
    if (url && strstr(url, SLOW_HOST)) {
        curl_off_t lookup_us = 0;
        curl_easy_getinfo(easy, CURLINFO_NAMELOOKUP_TIME_T, &lookup_us);
        st->slow_late_us += lookup_us - SLOW_DNS_MS * 1000;
        st->n_slow++;
    }
    loop_easy_release(l, easy);
    if (st->done == 0)
        st->first_rc = rc;
    st->last_rc = rc;
    if (rc != CURLE_OK || status != 200)
        st->failed++;
    st->connects += connects;
    if (++st->done < st->target)
        seq_start(l, st);
    else
        ut_waiter_add(&st->w, 1);
}

static void seq_start(loop *l, void *arg)
{
    seq_state *st = arg;
    CURL *e = loop_easy(l);
    assert_non_null(e);
    const char *url = st->url[st->done % 2][0] ? st->url[st->done % 2] : st->url[0];
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ut_discard_cb);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, seq_open);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, st);
    /* a transfer the loop fails to watch ends here instead of hanging */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 3000L);
    /* every host name goes to curl's resolver, not its cache */
    curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, 0L);
    assert_int_equal(loop_http_start(l, e, seq_done, st), 0);
}

/* Runs st->target transfers to completion on l; false on timeout. */
static bool seq_run(loop *l, seq_state *st, int target)
{
    st->target = target;
    st->done = st->failed = 0;
    st->connects = 0;
    st->n_opened = 0;
    st->slow_late_us = 0;
    st->n_slow = 0;
    ut_waiter_init(&st->w);
    ut_run_on_loop(l, seq_start, st);
    bool ok = ut_waiter_wait(&st->w, 1, 20000);
    ut_waiter_fini(&st->w);
    return ok;
}

static void count_iteration(loop *l, void *arg)
{
    (void)l;
    __atomic_add_fetch((long *)arg, 1, __ATOMIC_RELAXED);
}
/* Exchanges on one keep-alive connection: all succeed on a single
 * connection, and its socket stays in the epoll set while idle — the loop
 * does not take it out and put it back for every exchange. */
static void test_http_keepalive_stays_registered(void **state)
{
    (void)state;
    ut_echo_server s;
    ut_echo_start(&s);
    loop *l = loop_create("http", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    seq_state st = {0};
    snprintf(st.url[0], sizeof st.url[0], "http://127.0.0.1:%d/k", s.port);

    assert_true(seq_run(l, &st, 200));
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.n_opened, 1);
    assert_true(epoll_watches(st.opened[0]));

    /* and the idle registered socket is reused by the next burst */
    assert_true(seq_run(l, &st, 50));
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.connects, 0);
    loop_stop(l);
    loop_destroy(l);
    MHD_stop_daemon(s.d);
}

static void note_thread(loop *l, void *arg)
{
    (void)l;
    clockid_t *cid = arg;
    assert_int_equal(pthread_getcpuclockid(pthread_self(), cid), 0);
}

static int64_t thread_cpu_ms(clockid_t cid)
{
    struct timespec ts;
    assert_int_equal(clock_gettime(cid, &ts), 0);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The server closes the idle connection (after 1 s): level-triggered
 * epoll reports the closed socket until someone reads it, and curl is not
 * watching an idle connection — the loop must stop watching it rather than
 * spin, and the next transfer must still work (on a new connection). */
static void test_http_idle_connection_closed_by_server(void **state)
{
    (void)state;
    ut_echo_server s;
    ut_echo_start_idle(&s, 1);
    long iterations = 0;
    clockid_t cid;
    loop *l = loop_create("http", ut_on_run_msg, NULL);
    loop_set_idle(l, count_iteration, &iterations);
    assert_int_equal(loop_start(l), 0);
    seq_state st = {0};
    snprintf(st.url[0], sizeof st.url[0], "http://127.0.0.1:%d/k", s.port);
    ut_waiter w;
    ut_waiter_init(&w);

    assert_true(seq_run(l, &st, 3));
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.n_opened, 1);
    curl_socket_t first = st.opened[0];
    assert_true(epoll_watches(first));
    ut_run_on_loop(l, note_thread, &cid);
    usleep(50 * 1000);
    long it0 = __atomic_load_n(&iterations, __ATOMIC_RELAXED);
    int64_t cpu0 = thread_cpu_ms(cid);
    int64_t t0 = ut_now_ms();
    while (epoll_watches(first) && ut_now_ms() - t0 < 5000)
        usleep(50 * 1000);
    usleep(500 * 1000);   /* a spinning loop would show it by now */
    long spins = __atomic_load_n(&iterations, __ATOMIC_RELAXED) - it0;
    int64_t cpu = thread_cpu_ms(cid) - cpu0;
    assert_true(spins < 20);
    assert_true(cpu < 100);
    assert_false(epoll_watches(first));

    assert_true(seq_run(l, &st, 2));
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.connects, 1);
    loop_stop(l);
    loop_destroy(l);
    ut_waiter_fini(&w);
    MHD_stop_daemon(s.d);
}

/* Every answer closes its connection, so each transfer gets a new socket,
 * mostly with the number the previous one had. Then every other transfer
 * goes to a host name that resolves slowly: curl watches its resolver
 * thread's socketpair with us and closes it without telling us, and the
 * pair tends to get the number of the connection just closed, or of the
 * previous lookup's pair when that lookup failed. A stale
 * "already registered" in the loop's table would leave that socketpair
 * unwatched: curl 7.88 then only notices the answer when it next polls
 * (at 250 ms, then every 200 ms), so each lookup ends ~150 ms late; a
 * connection socket left unwatched would time out (3 s). */
static void test_http_recycled_fd_numbers(void **state)
{
    (void)state;
    ut_echo_server s;
    ut_echo_start(&s);
    loop *l = loop_create("http", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    seq_state st = {0};
    snprintf(st.url[0], sizeof st.url[0], "http://127.0.0.1:%d/close", s.port);

    assert_true(seq_run(l, &st, 40));
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.connects, 40);
    assert_int_equal(st.n_opened, 40);
    int distinct = 0;
    for (int i = 0; i < st.n_opened; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen = seen || st.opened[j] == st.opened[i];
        distinct += !seen;
    }
    assert_true(distinct < 10);   /* the numbers were indeed recycled */

    snprintf(st.url[1], sizeof st.url[1], "http://" SLOW_HOST ":%d/close", s.port);
    assert_true(seq_run(l, &st, 10));
    assert_int_equal(st.last_rc, CURLE_OK);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.connects, 10);
    assert_int_equal(st.n_slow, 5);
    print_message("slow lookups ended %lld us late on average\n",
                  (long long)(st.slow_late_us / st.n_slow));
    assert_true(st.slow_late_us / st.n_slow < 50 * 1000);

    snprintf(st.url[0], sizeof st.url[0], "http://" SLOW_FAIL_HOST ":%d/close", s.port);
    assert_true(seq_run(l, &st, 10));
    assert_int_equal(st.first_rc, CURLE_COULDNT_RESOLVE_HOST);
    assert_int_equal(st.last_rc, CURLE_OK);
    assert_int_equal(st.failed, 5);
    assert_int_equal(st.n_slow, 5);
    print_message("slow lookups after failed ones ended %lld us late on average\n",
                  (long long)(st.slow_late_us / st.n_slow));
    assert_true(st.slow_late_us / st.n_slow < 50 * 1000);
    loop_stop(l);
    loop_destroy(l);
    MHD_stop_daemon(s.d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_keepalive_stays_registered),
        cmocka_unit_test(test_http_idle_connection_closed_by_server),
        cmocka_unit_test(test_http_recycled_fd_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
