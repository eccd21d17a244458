/* Unit tests for phone: E.164 normalisation, the URI-like endpoints, and
 * display / Kaphila forms. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "base/phone.h"

static void norm(const char *in, phone_kind want, const char *want_out)
{
    char out[PHONE_MAX];
    memset(out, 'Z', sizeof out);
    phone_kind k = phone_normalize(in, out);
    if (k != want)
        fail_msg("'%s': kind %d, want %d", in ? in : "(null)", k, want);
    assert_string_equal(out, want_out);
}

static void test_e164(void **state)
{
    (void)state;
    norm("+14155551212", PHONE_E164, "+14155551212");
    norm("+1 (415) 555-1212", PHONE_E164, "+14155551212");
    norm("+1.415.555.1212", PHONE_E164, "+14155551212");
    norm("  +44 20 7946 0958", PHONE_E164, "+442079460958");
    norm("+15005550006", PHONE_E164, "+15005550006");
    norm("+12345678", PHONE_E164, "+12345678");                 /* 8 digits: shortest */
    norm("+123456789012345", PHONE_E164, "+123456789012345");   /* 15: longest */
}

static void test_missing_plus(void **state)
{
    (void)state;
    norm("4155551212", PHONE_E164, "+14155551212");      /* 10 digits: NANP */
    norm("(415) 555-1212", PHONE_E164, "+14155551212");
    norm("14155551212", PHONE_E164, "+14155551212");     /* 11: country code given */
    norm("442079460958", PHONE_E164, "+442079460958");
    norm("123456789012345", PHONE_E164, "+123456789012345");
}

static void test_invalid_numbers(void **state)
{
    (void)state;
    const char *bad[] = {
        "", "   ", "+", "()", "+1234567",            /* 7 digits */
        "+1234567890123456",                          /* 16 digits */
        "1234567890123456", "123456789",              /* 9 without '+' */
        "1-800-FLOWERS", "+1415555121a", "+1 415 555 1212 x12",
        "++14155551212", "+1+4155551212", "+04155551212", "04155551212",
        "+1\t4155551212", "+1/415/555/1212", "\xef\xbc\x91\xef\xbc\x92\xef\xbc\x93\xef\xbc\x94",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        norm(bad[i], PHONE_INVALID, "");
    norm(NULL, PHONE_INVALID, "");
}

static void test_too_long_input(void **state)
{
    (void)state;
    char in[PHONE_MAX + 10];
    memset(in, ' ', sizeof in);
    memcpy(in + sizeof in - 13, "+14155551212", 13);   /* valid number, padded past the cap */
    norm(in, PHONE_INVALID, "");
    char id[PHONE_MAX];
    memcpy(id, "client:", 7);
    memset(id + 7, 'a', PHONE_MAX - 8);
    id[PHONE_MAX - 1] = '\0';
    norm(id, PHONE_CLIENT, id);   /* 63 chars: the longest kept */
}

static void test_client(void **state)
{
    (void)state;
    norm("client:alice", PHONE_CLIENT, "client:alice");
    norm("client:bob.smith-2_x@example", PHONE_CLIENT, "client:bob.smith-2_x@example");
    norm("Client:alice", PHONE_CLIENT, "client:alice");
    norm("client:", PHONE_INVALID, "");
    norm("client:al ice", PHONE_INVALID, "");
    norm("client:a/b", PHONE_INVALID, "");
    norm("client:\xc3\xa9", PHONE_INVALID, "");
}

static void test_sip(void **state)
{
    (void)state;
    norm("sip:alice@example.com", PHONE_SIP, "sip:alice@example.com");
    norm("sip:example.com", PHONE_SIP, "sip:example.com");
    norm("sip:+14155551212@sip.example.com:5061", PHONE_SIP, "sip:+14155551212@sip.example.com:5061");
    norm("sip:bob@10.0.0.1;transport=tls", PHONE_SIP, "sip:bob@10.0.0.1;transport=tls");
    norm("SIP:bob@host", PHONE_SIP, "sip:bob@host");
    norm("sip:", PHONE_INVALID, "");
    norm("sip:@host", PHONE_INVALID, "");
    norm("sip:bob@", PHONE_INVALID, "");
    norm("sip:bob@host:", PHONE_INVALID, "");
    norm("sip:bob@host:123456", PHONE_INVALID, "");
    norm("sip:bob@ho st", PHONE_INVALID, "");
    norm("sip:b ob@host", PHONE_INVALID, "");
    norm("sip:bob@.host", PHONE_INVALID, "");
    norm("sip:bob@host;a b", PHONE_INVALID, "");
}

static void test_sim(void **state)
{
    (void)state;
    norm("sim:DE0123456789abcdef0123456789abcdef", PHONE_SIM, "sim:DE0123456789abcdef0123456789abcdef");
    norm("sim:", PHONE_INVALID, "");
    norm("sim:DE-1", PHONE_INVALID, "");
}

static void fmt(const char *in, const char *want)
{
    char out[PHONE_MAX];
    phone_format(in, out);
    assert_string_equal(out, want);
}

static void test_format(void **state)
{
    (void)state;
    fmt("+14158675309", "(415) 867-5309");
    fmt("+15005550006", "(500) 555-0006");
    fmt("+442079460958", "+442079460958");
    fmt("+1415867530", "+1415867530");       /* 9 digits after +1 */
    fmt("+141586753090", "+141586753090");   /* 11 digits after +1 */
    fmt("+1415867530a", "+1415867530a");
    fmt("client:alice", "client:alice");
    fmt("", "");
    fmt(NULL, "");
}

static void test_kaphila(void **state)
{
    (void)state;
    char out[PHONE_MAX];
    phone_kaphila("+14155551212", out);
    assert_string_equal(out, "14155551212");
    phone_kaphila("14155551212", out);
    assert_string_equal(out, "14155551212");
    phone_kaphila("", out);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e164),
        cmocka_unit_test(test_missing_plus),
        cmocka_unit_test(test_invalid_numbers),
        cmocka_unit_test(test_too_long_input),
        cmocka_unit_test(test_client),
        cmocka_unit_test(test_sip),
        cmocka_unit_test(test_sim),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_kaphila),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
