/* Unit tests for sid: shape of new SIDs and tokens, validation, uniqueness,
 * constant-time equality. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/sid.h"

static void test_new_shape(void **state)
{
    (void)state;
    char s[SID_SIZE];
    assert_true(sid_new("CA", s));
    assert_int_equal(strlen(s), SID_LEN);
    assert_memory_equal(s, "CA", 2);
    for (int i = 2; i < SID_LEN; i++)
        assert_non_null(strchr("0123456789abcdef", s[i]));   /* lowercase, like Twilio */
    assert_true(sid_valid(s, "CA"));
    assert_false(sid_valid(s, "RE"));
}

static void test_new_unique(void **state)
{
    (void)state;
    enum { N = 200 };
    char s[N][SID_SIZE];
    for (int i = 0; i < N; i++) {
        assert_true(sid_new("RE", s[i]));
        for (int j = 0; j < i; j++)
            assert_string_not_equal(s[i], s[j]);
    }
}

/* SIDs sort by creation time (so SID indexes grow at their right edge): one
 * made a few ms later sorts after, its 12-digit prefix is the clock in ms,
 * and the 20 digits after it are random. */
static void test_new_sorts_by_time(void **state)
{
    (void)state;
    char a[SID_SIZE], b[SID_SIZE];
    struct timespec t0, t1, pause = {0, 3 * 1000000L};
    clock_gettime(CLOCK_REALTIME, &t0);
    assert_true(sid_new("CA", a));
    nanosleep(&pause, NULL);
    assert_true(sid_new("CA", b));
    clock_gettime(CLOCK_REALTIME, &t1);
    assert_true(strcmp(a, b) < 0);
    unsigned long long ms = strtoull((char[13]){a[2], a[3], a[4], a[5], a[6], a[7], a[8],
                                                a[9], a[10], a[11], a[12], a[13], 0}, NULL, 16);
    unsigned long long lo = (unsigned long long)t0.tv_sec * 1000 + (unsigned long long)t0.tv_nsec / 1000000;
    unsigned long long hi = (unsigned long long)t1.tv_sec * 1000 + (unsigned long long)t1.tv_nsec / 1000000;
    assert_in_range(ms, lo, hi);
    /* Same millisecond, different random part: 200 SIDs, no two tails equal. */
    enum { N = 200 };
    static char s[N][SID_SIZE];
    for (int i = 0; i < N; i++) {
        assert_true(sid_new("CA", s[i]));
        for (int j = 0; j < i; j++) assert_memory_not_equal(s[i] + 14, s[j] + 14, 20);
    }
}

static void test_valid(void **state)
{
    (void)state;
    assert_true(sid_valid("AC0123456789abcdef0123456789abcdef", "AC"));
    assert_true(sid_valid("AC0123456789ABCDEF0123456789ABCDEF", "AC"));   /* either case */
    assert_false(sid_valid("ac0123456789abcdef0123456789abcdef", "AC"));   /* prefix exact */
    assert_false(sid_valid("AC0123456789abcdef0123456789abcde", "AC"));    /* 33 */
    assert_false(sid_valid("AC0123456789abcdef0123456789abcdef0", "AC"));  /* 35 */
    assert_false(sid_valid("AC0123456789abcdef0123456789abcdeg", "AC"));
    assert_false(sid_valid("AC0123456789abcdef 123456789abcdef", "AC"));
    assert_false(sid_valid("", "AC"));
    assert_false(sid_valid("A", "AC"));
    assert_false(sid_valid("AC", "AC"));
    assert_false(sid_valid(NULL, "AC"));
}

static void test_token(void **state)
{
    (void)state;
    char a[TOKEN_SIZE], b[TOKEN_SIZE];
    assert_true(sid_token(a));
    assert_true(sid_token(b));
    assert_int_equal(strlen(a), TOKEN_SIZE - 1);   /* 43: no padding */
    for (size_t i = 0; i < strlen(a); i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                               a[i]));
    assert_string_not_equal(a, b);
    /* Time first, then randomness: a token made later sorts after, and two
     * made in the same millisecond differ in their random part. */
    struct timespec pause = {0, 3 * 1000000L};
    nanosleep(&pause, NULL);
    assert_true(sid_token(b));
    assert_true(strcmp(a, b) < 0);
    for (int i = 0; i < 12; i++) assert_non_null(strchr("0123456789abcdef", a[i]));
    enum { N = 200 };
    static char t[N][TOKEN_SIZE];
    for (int i = 0; i < N; i++) {
        assert_true(sid_token(t[i]));
        for (int j = 0; j < i; j++) assert_memory_not_equal(t[i] + 12, t[j] + 12, 31);
    }
}

static void test_token_alphabet_used(void **state)
{
    (void)state;
    /* Over many tokens the URL-safe characters must show up (and '+', '/'
     * never): proves the alphabet translation, not just the length. */
    bool dash = false, under = false;
    for (int i = 0; i < 200 && !(dash && under); i++) {
        char t[TOKEN_SIZE];
        assert_true(sid_token(t));
        assert_null(strpbrk(t, "+/="));
        dash |= strchr(t, '-') != NULL;
        under |= strchr(t, '_') != NULL;
    }
    assert_true(dash);
    assert_true(under);
}

static void test_equal_ct(void **state)
{
    (void)state;
    assert_true(sid_equal_ct("secret-token", "secret-token"));
    assert_false(sid_equal_ct("secret-token", "secret-tokeN"));
    assert_false(sid_equal_ct("secret-token", "secret-toke"));
    assert_false(sid_equal_ct("", "x"));
    assert_true(sid_equal_ct("", ""));
    assert_false(sid_equal_ct(NULL, "x"));
    assert_false(sid_equal_ct("x", NULL));
    assert_false(sid_equal_ct(NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_shape),
        cmocka_unit_test(test_new_unique),
        cmocka_unit_test(test_new_sorts_by_time),
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_token_alphabet_used),
        cmocka_unit_test(test_equal_ct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
