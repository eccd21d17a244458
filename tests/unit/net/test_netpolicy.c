/* Unit tests for netpolicy: the default refusal of non-public ranges (IPv4,
 * IPv6, IPv4 carried in IPv6), allow/deny by CIDR and by name, own
 * listeners (exact and wildcard), Kaphila's endpoint, the proxy case
 * (name and literal only) and the URL host parser. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "net/netpolicy.h"

/* A socket address from text; port in host order. */
static const struct sockaddr *sa(const char *ip, int port)
{
    static struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
    }
    return (const struct sockaddr *)&ss;
}

static void test_default_refuses_non_public(void **state)
{
    (void)state;
    static const char *const refused[] = {
        "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.0.0.1", "172.16.0.1",
        "172.31.255.255", "192.168.0.1", "100.64.0.1", "100.127.255.255", "169.254.169.254",
        "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.0.8",
        "::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1",
        "::ffff:127.0.0.1", "::ffff:7f00:1", "::127.0.0.1", "::ffff:0:127.0.0.1",
        "64:ff9b::10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
    };
    static const char *const allowed[] = {
        "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "11.0.0.1", "2001:db8::1",
        "2606:4700::1111", "::ffff:8.8.8.8", "192.0.2.1",
    };
    netpolicy *p = netpolicy_create("", "", "", NULL, 0, NULL, 1);
    assert_non_null(p);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (!netpolicy_check(p, "h", sa(refused[i], 80))) fail_msg("%s allowed", refused[i]);
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (netpolicy_check(p, "h", sa(allowed[i], 80)))
            fail_msg("%s refused: %s", allowed[i], netpolicy_check(p, "h", sa(allowed[i], 80)));
    assert_string_equal(netpolicy_check(p, "x", sa("127.0.0.1", 80)), "loopback address");
    netpolicy_unref(p);
}

static void test_allow_opens_ranges_by_cidr_only(void **state)
{
    (void)state;
    netpolicy *p = netpolicy_create("127.0.0.0/8, hooks.example.com", "", "", NULL, 0, NULL, 1);
    assert_null(netpolicy_check(p, "localhost", sa("127.0.0.1", 80)));
    assert_null(netpolicy_check(p, "x", sa("::ffff:127.0.0.2", 80)));   /* mapped = IPv4 */
    assert_non_null(netpolicy_check(p, "x", sa("::1", 80)));           /* not in the list */
    assert_non_null(netpolicy_check(p, "x", sa("8.8.8.8", 80)));       /* a list narrows */
    assert_null(netpolicy_check(p, "hooks.example.com", sa("8.8.8.8", 80)));
    /* a name in the list does not open a private address */
    assert_non_null(netpolicy_check(p, "hooks.example.com", sa("10.0.0.1", 80)));
    /* before resolution only names decide, and this list has CIDRs */
    assert_null(netpolicy_check(p, "other.example", NULL));
    netpolicy_unref(p);

    p = netpolicy_create("hooks.example.com", "", "", NULL, 0, NULL, 1);
    assert_non_null(netpolicy_check(p, "other.example", NULL));
    assert_null(netpolicy_check(p, "HOOKS.example.com.", NULL));
    netpolicy_unref(p);
}

static void test_deny_wins_by_name_and_address(void **state)
{
    (void)state;
    netpolicy *p = netpolicy_create("127.0.0.0/8", "localhost, *.internal, 127.0.0.9, ::ffff:127.0.1.0/120",
                                    "", NULL, 0, NULL, 1);
    assert_string_equal(netpolicy_check(p, "LocalHost.", sa("127.0.0.1", 80)), "listed in webhook.deny");
    assert_non_null(netpolicy_check(p, "a.b.internal", NULL));
    assert_null(netpolicy_check(p, "internal", sa("127.0.0.1", 80)));
    assert_non_null(netpolicy_check(p, "x", sa("127.0.0.9", 80)));
    assert_non_null(netpolicy_check(p, "x", sa("127.0.1.77", 80)));
    assert_null(netpolicy_check(p, "x", sa("127.0.2.1", 80)));
    netpolicy_unref(p);
}

static void test_own_listeners_and_kaphila(void **state)
{
    (void)state;
    netpolicy_listener ls[] = {{"127.0.0.1", 8080}, {"0.0.0.0", 9000}, {"::", 9001}};
    netpolicy *p = netpolicy_create("0.0.0.0/0, ::/0", "", "", ls, 3, "http://127.0.0.1:7000/base", 1);
    const char *own = "one of twigate's own listening sockets";
    assert_string_equal(netpolicy_check(p, "x", sa("127.0.0.1", 8080)), own);
    assert_string_equal(netpolicy_check(p, "x", sa("0.0.0.0", 8080)), own);
    assert_null(netpolicy_check(p, "x", sa("127.0.0.1", 8081)));
    assert_null(netpolicy_check(p, "x", sa("127.0.0.2", 8080)));     /* bound to .1 only */
    assert_string_equal(netpolicy_check(p, "x", sa("127.0.0.5", 9000)), own);
    assert_string_equal(netpolicy_check(p, "x", sa("::1", 9001)), own);
    assert_string_equal(netpolicy_check(p, "x", sa("::ffff:127.0.0.1", 8080)), own);
    assert_string_equal(netpolicy_check(p, "x", sa("127.0.0.1", 7000)), "twigate's Kaphila endpoint");
    assert_null(netpolicy_check(p, "x", sa("127.0.0.1", 7001)));
    netpolicy_unref(p);

    p = netpolicy_create("", "", "", NULL, 0, "https://kaphila.example", 1);
    assert_non_null(netpolicy_check(p, "kaphila.example", sa("8.8.8.8", 443)));
    assert_null(netpolicy_check(p, "kaphila.example", sa("8.8.8.8", 80)));
    netpolicy_unref(p);
}

static void test_name_only_checks_literals(void **state)
{
    (void)state;
    netpolicy *p = netpolicy_create("", "", "http://proxy:3128", NULL, 0, NULL, 7);
    assert_int_equal(netpolicy_gen(p), 7);
    assert_string_equal(netpolicy_proxy(p), "http://proxy:3128");
    assert_non_null(netpolicy_check(p, "10.20.30.40", NULL));
    assert_non_null(netpolicy_check(p, "[::1]", NULL));
    assert_null(netpolicy_check(p, "customer.example", NULL));
    assert_true(netpolicy_same(p, NULL, "", "http://proxy:3128"));
    assert_false(netpolicy_same(p, "10.0.0.0/8", "", "http://proxy:3128"));
    netpolicy_unref(netpolicy_ref(p));
    netpolicy_unref(p);
    netpolicy_unref(NULL);
}

static void test_url_host(void **state)
{
    (void)state;
    char h[64];
    assert_true(netpolicy_url_host("http://Example.COM./x?y#z", h, sizeof h));
    assert_string_equal(h, "example.com");
    assert_true(netpolicy_url_host("https://u:p@[::ffff:7f00:1]:8080/", h, sizeof h));
    assert_string_equal(h, "::ffff:7f00:1");
    assert_true(netpolicy_url_host("http://127.0.0.1:99", h, sizeof h));
    assert_string_equal(h, "127.0.0.1");
    assert_false(netpolicy_url_host("no scheme", h, sizeof h));
    assert_false(netpolicy_url_host("http:///path", h, sizeof h));
    assert_false(netpolicy_url_host("http://[::1/", h, sizeof h));
    assert_false(netpolicy_url_host("http://a-very-long-host-name.example/", h, 8));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_refuses_non_public),
        cmocka_unit_test(test_allow_opens_ranges_by_cidr_only),
        cmocka_unit_test(test_deny_wins_by_name_and_address),
        cmocka_unit_test(test_own_listeners_and_kaphila),
        cmocka_unit_test(test_name_only_checks_literals),
        cmocka_unit_test(test_url_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
