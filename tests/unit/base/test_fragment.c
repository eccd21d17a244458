/* Unit tests for fragment: splitting, defaults, clamping, rp lists, junk. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "base/fragment.h"

static void assert_defaults(const fragment_opts *o)
{
    assert_int_equal(o->connect_ms, 5000);
    assert_int_equal(o->read_ms, 15000);
    assert_int_equal(o->total_ms, 15000);
    assert_int_equal(o->retries, 1);
    assert_int_equal(o->retry_policy, FRAG_RP_CT);
}

static void split(const char *url, const char *want_base, fragment_opts *o)
{
    char base[256];
    memset(o, 0x5a, sizeof *o);   /* garbage: proves defaults are written */
    assert_true(fragment_split(url, base, sizeof base, o));
    assert_string_equal(base, want_base);
}

static void test_no_fragment(void **state)
{
    (void)state;
    fragment_opts o;
    split("https://example.com/voice?x=1", "https://example.com/voice?x=1", &o);
    assert_defaults(&o);
    split("", "", &o);
    assert_defaults(&o);
    fragment_defaults(&o);
    assert_defaults(&o);
}

static void test_contract_example(void **state)
{
    (void)state;
    fragment_opts o;
    split("https://example.com/voice#ct=2000&rt=3000&rc=3&rp=ct,rt,5xx", "https://example.com/voice", &o);
    assert_int_equal(o.connect_ms, 2000);
    assert_int_equal(o.read_ms, 3000);
    assert_int_equal(o.total_ms, 15000);
    assert_int_equal(o.retries, 3);
    assert_int_equal(o.retry_policy, FRAG_RP_CT | FRAG_RP_RT | FRAG_RP_5XX);
}

static void test_empty_and_tt(void **state)
{
    (void)state;
    fragment_opts o;
    split("https://e.test/a?b=c#", "https://e.test/a?b=c", &o);
    assert_defaults(&o);
    split("https://e.test/a#tt=4000", "https://e.test/a", &o);
    assert_int_equal(o.total_ms, 4000);
    /* Only the first '#' splits; the rest belongs to the fragment. */
    split("https://e.test/a#rc=2#ct=300", "https://e.test/a", &o);
    assert_int_equal(o.retries, 1);
    assert_int_equal(o.connect_ms, 5000);
}

static void test_clamping(void **state)
{
    (void)state;
    fragment_opts o;
    split("u#ct=1&rt=99&tt=0&rc=-3", "u", &o);
    assert_int_equal(o.connect_ms, 100);
    assert_int_equal(o.read_ms, 100);
    assert_int_equal(o.total_ms, 100);
    assert_int_equal(o.retries, 0);
    split("u#ct=10001&rt=15001&tt=999999999999999999999&rc=6", "u", &o);
    assert_int_equal(o.connect_ms, 10000);
    assert_int_equal(o.read_ms, 15000);
    assert_int_equal(o.total_ms, 15000);
    assert_int_equal(o.retries, 5);
    split("u#ct=100&rt=15000&rc=0", "u", &o);   /* bounds are inclusive */
    assert_int_equal(o.connect_ms, 100);
    assert_int_equal(o.read_ms, 15000);
    assert_int_equal(o.retries, 0);
    split("u#ct=-99999999999999999999", "u", &o);
    assert_int_equal(o.connect_ms, 100);
}

static void test_junk_ignored(void **state)
{
    (void)state;
    fragment_opts o;
    split("u#ct=abc&rt=&tt=12x&rc=2.5&e=ashburn&sni=y&zz&=&&ct", "u", &o);
    assert_defaults(&o);
    split("u#CT=2000&ct =2000&ct= 2000&ct=+", "u", &o);   /* keys are exact */
    assert_defaults(&o);
    split("u#rp=bogus", "u", &o);
    assert_defaults(&o);
    split("u#rc=4&rc=oops", "u", &o);   /* a later bad value keeps the earlier good one */
    assert_int_equal(o.retries, 4);
}

static void test_retry_policy(void **state)
{
    (void)state;
    fragment_opts o;
    split("u#rp=all", "u", &o);
    assert_int_equal(o.retry_policy, FRAG_RP_ALL);
    split("u#rp=4xx", "u", &o);
    assert_int_equal(o.retry_policy, FRAG_RP_4XX);
    split("u#rp=rt,,bogus,4XX", "u", &o);
    assert_int_equal(o.retry_policy, FRAG_RP_RT | FRAG_RP_4XX);
    split("u#rp=5xx,ct", "u", &o);
    assert_int_equal(o.retry_policy, FRAG_RP_5XX | FRAG_RP_CT);
    split("u#rp=", "u", &o);
    assert_int_equal(o.retry_policy, FRAG_RP_CT);
}

static void test_base_too_small(void **state)
{
    (void)state;
    fragment_opts o;
    char base[8];
    assert_true(fragment_split("1234567#ct=200", base, sizeof base, &o));   /* 7 + NUL fits */
    assert_string_equal(base, "1234567");
    assert_int_equal(o.connect_ms, 200);
    assert_false(fragment_split("12345678#ct=200", base, sizeof base, &o));
    assert_false(fragment_split("12345678", base, sizeof base, &o));
    assert_false(fragment_split(NULL, base, sizeof base, &o));
    assert_defaults(&o);
    assert_false(fragment_split("u", base, 0, &o));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_fragment),
        cmocka_unit_test(test_contract_example),
        cmocka_unit_test(test_empty_and_tt),
        cmocka_unit_test(test_clamping),
        cmocka_unit_test(test_junk_ignored),
        cmocka_unit_test(test_retry_policy),
        cmocka_unit_test(test_base_too_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
