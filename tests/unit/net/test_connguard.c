/* Unit tests for connguard: address parsing, per-client counting with
 * exemptions and v4-mapped folding, slots given back on close, the
 * acceptor's admit/claim hand-over (counted at admit, the open cap, a
 * handle its server dropped untold), the sweep shutting down a socket
 * whose head deadline passed, and forgetting (never shutting down) a handle
 * no server claimed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/connguard.h"
#include "../support/support.h"

static struct sockaddr_in v4(const char *ip)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    return sa;
}

static struct sockaddr_in6 v6(const char *ip)
{
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
    return sa;
}

#define SA(x) ((const struct sockaddr *)&(x))

static void test_parse_addr(void **state)
{
    (void)state;
    unsigned char a[16], b[16];
    assert_true(connguard_parse_addr("10.1.2.3", 8, a));
    assert_true(connguard_parse_addr("::ffff:10.1.2.3", 15, b));
    assert_memory_equal(a, b, 16);                 /* one key for both spellings */
    assert_true(connguard_parse_addr("2001:db8::1", 11, a));
    assert_false(connguard_parse_addr("10.0.0.300", 10, a));
    assert_false(connguard_parse_addr("example.com", 11, a));
    assert_false(connguard_parse_addr("", 0, a));
    assert_true(connguard_parse_addr("1.2.3.4x", 7, a));   /* only n bytes are read */
}

static void test_create_rejects_bad_exempt_list(void **state)
{
    (void)state;
    char err[160];
    assert_null(connguard_create(4, 1000, 60000, "127.0.0.1, nope", err, sizeof err));
    assert_string_equal(err, "'nope' is not an IP address");
    connguard *g = connguard_create(4, 1000, 60000, " 127.0.0.3 ,::1,", err, sizeof err);
    assert_non_null(g);
    connguard_destroy(g);
}

static void test_limit_per_address(void **state)
{
    (void)state;
    char err[160];
    connguard *g = connguard_create(2, 60000, 60000, "10.0.0.9", err, sizeof err);
    struct sockaddr_in a = v4("10.0.0.1"), b = v4("10.0.0.2"), ex = v4("10.0.0.9");
    struct sockaddr_in6 a6 = v6("::ffff:10.0.0.1");
    connguard_conn *c[8];
    connguard_stats st;
    assert_non_null(g);

    assert_true(connguard_accept(g, SA(a), sizeof a));
    c[0] = connguard_open(g, SA(a), -1);
    assert_true(connguard_accept(g, SA(a6), sizeof a6));   /* same client, as v4-mapped */
    c[1] = connguard_open(g, SA(a6), -1);
    assert_false(connguard_accept(g, SA(a), sizeof a));
    assert_false(connguard_accept(g, SA(a6), sizeof a6));
    assert_true(connguard_accept(g, SA(b), sizeof b));     /* another client */
    for (int i = 2; i < 8; i++) {                          /* exempt: never counted */
        assert_true(connguard_accept(g, SA(ex), sizeof ex));
        c[i] = connguard_open(g, SA(ex), -1);
    }
    connguard_get_stats(g, &st);
    assert_int_equal(st.refused, 2);
    assert_int_equal(st.open, 8);

    connguard_close(g, c[0]);                              /* a slot back */
    assert_true(connguard_accept(g, SA(a), sizeof a));
    for (int i = 1; i < 8; i++) connguard_close(g, c[i]);
    connguard_get_stats(g, &st);
    assert_int_equal(st.open, 0);
    connguard_destroy(g);
}

static void test_zero_means_no_limit(void **state)
{
    (void)state;
    char err[160];
    connguard *g = connguard_create(0, 60000, 60000, NULL, err, sizeof err);
    struct sockaddr_in a = v4("10.0.0.1");
    connguard_conn *c[100];
    for (int i = 0; i < 100; i++) {
        assert_true(connguard_accept(g, SA(a), sizeof a));
        c[i] = connguard_open(g, SA(a), -1);
    }
    for (int i = 0; i < 100; i++) connguard_close(g, c[i]);
    connguard_destroy(g);
}

/* The sweep shuts down the socket of a connection whose head is late, and
 * leaves one whose head arrived alone. */
static void test_sweep_shuts_late_heads(void **state)
{
    (void)state;
    char err[160];
    int late[2], done[2];
    struct sockaddr_in a = v4("10.0.0.1");
    connguard_stats st;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, late), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, done), 0);
    connguard *g = connguard_create(10, 100, 60000, NULL, err, sizeof err);
    connguard_conn *cl = connguard_open(g, SA(a), late[0]);
    connguard_conn *cd = connguard_open(g, SA(a), done[0]);
    connguard_head_done(cd);
    /* The peer sees the end of the stream once the sweep has run. */
    struct pollfd p = {.fd = late[1], .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    char ch;
    assert_int_equal(read(late[1], &ch, 1), 0);
    p.fd = done[1];
    assert_int_equal(poll(&p, 1, 300), 0);
    connguard_get_stats(g, &st);
    assert_int_equal(st.head_timeouts, 1);
    connguard_close(g, cl);
    connguard_close(g, cd);
    connguard_destroy(g);
    close(late[0]); close(late[1]); close(done[0]); close(done[1]);
}

/* The acceptor admits faster than servers claim: the limit holds on what was
 * admitted, claimed or not (the integration test's 11th connection raced
 * past a limit counted only when a pool thread took the connection). */
static void test_admit_counts_before_claim(void **state)
{
    (void)state;
    char err[160];
    connguard *g = connguard_create(2, 60000, 60000, NULL, err, sizeof err);
    struct sockaddr_in a = v4("10.0.0.1"), b = v4("10.0.0.2");
    connguard_stats st;
    assert_non_null(connguard_admit(g, SA(a), 101, 0));
    assert_non_null(connguard_admit(g, SA(a), 102, 0));
    assert_null(connguard_admit(g, SA(a), 103, 0));       /* nothing claimed yet */
    connguard_get_stats(g, &st);
    assert_int_equal(st.refused, 1);
    connguard_conn *c = connguard_claim(g, 101);
    assert_non_null(c);
    assert_null(connguard_claim(g, 101));                 /* claimed once */
    assert_null(connguard_claim(g, 999));
    connguard_close(g, c);                                /* a slot back */
    assert_non_null(connguard_admit(g, SA(a), 104, 0));
    /* The open cap counts every client: 3 open (102, 104 and b's). */
    assert_non_null(connguard_admit(g, SA(b), 105, 3));
    assert_null(connguard_admit(g, SA(b), 106, 3));
    connguard_get_stats(g, &st);
    assert_int_equal(st.open, 3);
    assert_int_equal(st.refused, 1);                      /* the cap is not per client */
    connguard_destroy(g);
}

/* A handle whose server dropped the connection without a word is given back
 * when the kernel hands out its descriptor again. */
static void test_admit_reaps_a_stale_handle(void **state)
{
    (void)state;
    char err[160];
    connguard *g = connguard_create(1, 60000, 60000, NULL, err, sizeof err);
    struct sockaddr_in a = v4("10.0.0.1");
    connguard_stats st;
    assert_non_null(connguard_admit(g, SA(a), 7, 0));
    assert_non_null(connguard_admit(g, SA(a), 7, 0));     /* fd 7 again: the first is stale */
    connguard_get_stats(g, &st);
    assert_int_equal(st.open, 1);
    assert_int_equal(st.refused, 0);
    connguard_close(g, connguard_claim(g, 7));
    connguard_get_stats(g, &st);
    assert_int_equal(st.open, 0);
    connguard_destroy(g);
}

/* A handle never claimed (its server refused the connection in a worker and
 * closed it untold) is forgotten at its deadline, and the socket that now
 * holds its descriptor number is left alone: shutting it down had cut
 * twigate's own connections to its built-in simulator under load. */
static void test_sweep_forgets_an_unclaimed_handle(void **state)
{
    (void)state;
    char err[160];
    int old[2], now[2];
    struct sockaddr_in a = v4("10.0.0.1");
    connguard_stats st;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, old), 0);
    connguard *g = connguard_create(10, 100, 60000, NULL, err, sizeof err);
    assert_non_null(connguard_admit(g, SA(a), old[0], 0));
    int fd = old[0];
    close(old[0]);
    close(old[1]);
    /* The descriptor goes to someone else's socket. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, now), 0);
    if (now[0] != fd) {
        assert_int_equal(now[1], fd);
        int t = now[0]; now[0] = now[1]; now[1] = t;
    }
    /* Forgotten within a few sweeps of the 100 ms deadline. */
    int64_t until = ut_now_ms() + 5000;
    do {
        connguard_get_stats(g, &st);
    } while (st.open != 0 && ut_now_ms() < until && poll(NULL, 0, 10) == 0);
    assert_int_equal(st.open, 0);
    assert_int_equal(st.head_timeouts, 0);
    /* The new owner's socket still carries bytes both ways. */
    char ch = 'x';
    assert_int_equal(write(now[1], &ch, 1), 1);
    assert_int_equal(read(now[0], &ch, 1), 1);
    assert_int_equal(write(now[0], &ch, 1), 1);
    assert_int_equal(read(now[1], &ch, 1), 1);
    assert_null(connguard_claim(g, fd));
    connguard_destroy(g);
    close(now[0]);
    close(now[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_create_rejects_bad_exempt_list),
        cmocka_unit_test(test_limit_per_address),
        cmocka_unit_test(test_zero_means_no_limit),
        cmocka_unit_test(test_admit_counts_before_claim),
        cmocka_unit_test(test_admit_reaps_a_stale_handle),
        cmocka_unit_test(test_sweep_shuts_late_heads),
        cmocka_unit_test(test_sweep_forgets_an_unclaimed_handle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
