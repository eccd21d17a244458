/* Unit tests for timefmt: RFC 2822 output, ISO 8601 and RFC 2822 parsing,
 * leap years, offsets, rejection of garbage, locale independence.
 * Expected epoch values were computed with Python's calendar module. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/timefmt.h"

static void check_rfc(int64_t ms, const char *want)
{
    char out[TIMEFMT_RFC2822_LEN];
    timefmt_rfc2822(ms, out);
    assert_string_equal(out, want);
}

static void test_rfc2822_format(void **state)
{
    (void)state;
    check_rfc(1283286988000, "Tue, 31 Aug 2010 20:36:28 +0000");
    check_rfc(1283286988999, "Tue, 31 Aug 2010 20:36:28 +0000");   /* ms dropped */
    check_rfc(0, "Thu, 01 Jan 1970 00:00:00 +0000");
    check_rfc(-1, "Wed, 31 Dec 1969 23:59:59 +0000");   /* floors, not truncates */
    check_rfc(-1000, "Wed, 31 Dec 1969 23:59:59 +0000");
    check_rfc(951782400000, "Tue, 29 Feb 2000 00:00:00 +0000");
    check_rfc(1709208000000, "Thu, 29 Feb 2024 12:00:00 +0000");
    check_rfc(2147483648000, "Tue, 19 Jan 2038 03:14:08 +0000");
    check_rfc(4107542400000, "Mon, 01 Mar 2100 00:00:00 +0000");
    check_rfc(253402300799000, "Fri, 31 Dec 9999 23:59:59 +0000");
    /* Beyond four-digit years the output clamps instead of overflowing. */
    check_rfc(INT64_MAX, "Fri, 31 Dec 9999 23:59:59 +0000");
    char out[TIMEFMT_RFC2822_LEN];
    timefmt_rfc2822(INT64_MIN, out);
    assert_int_equal(strlen(out), 31);
}

/* The formatter does its own calendar arithmetic; glibc's gmtime_r is the
 * reference: every day of 1900-2200 and every 13th day of years 0-9999, at a
 * time of day that walks through hours, minutes and seconds. */
static void test_rfc2822_matches_gmtime(void **state)
{
    (void)state;
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const int64_t first_day = -719528, last_day = 2932896;   /* 0000-01-01, 9999-12-31 */
    const int64_t d1900 = -25567, d2200 = 84006;
    int64_t n = 0;
    for (int64_t day = first_day; day <= last_day; day += (day >= d1900 && day < d2200) ? 1 : 13) {
        int64_t secs = day * 86400 + (n * 7919) % 86400;
        int64_t ms = secs * 1000 + (n % 1000);
        time_t t = (time_t)secs;
        struct tm tm;
        char want[64], got[TIMEFMT_RFC2822_LEN];
        assert_non_null(gmtime_r(&t, &tm));
        snprintf(want, sizeof want, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
                 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        timefmt_rfc2822(ms, got);
        if (strcmp(want, got) != 0) fail_msg("%lld ms: want '%s', got '%s'", (long long)ms, want, got);
        n++;
    }
    assert_true(n > 300000);
}

static void test_rfc2822_ignores_locale(void **state)
{
    (void)state;
    /* Any installed non-English locale would do; if none is, C is tested. */
    const char *locs[] = { "de_DE.UTF-8", "fr_FR.UTF-8", "C.UTF-8" };
    for (size_t i = 0; i < sizeof locs / sizeof locs[0]; i++) {
        if (setlocale(LC_ALL, locs[i]) != NULL)
            check_rfc(1283286988000, "Tue, 31 Aug 2010 20:36:28 +0000");
    }
    setlocale(LC_ALL, "C");
}

static void iso_ok(const char *s, int64_t want, bool want_date_only)
{
    int64_t ms = 12345;
    bool d = !want_date_only;
    if (!timefmt_parse_iso8601(s, &ms, &d))
        fail_msg("rejected '%s'", s);
    if (ms != want)
        fail_msg("'%s' → %lld, want %lld", s, (long long)ms, (long long)want);
    assert_int_equal(d, want_date_only);
}

static void iso_bad(const char *s)
{
    int64_t ms = 12345;
    bool d = false;
    if (timefmt_parse_iso8601(s, &ms, &d))
        fail_msg("accepted '%s' as %lld", s, (long long)ms);
    assert_int_equal(ms, 12345);   /* untouched on failure */
}

static void test_iso_forms(void **state)
{
    (void)state;
    iso_ok("2010-08-31T20:36:28Z", 1283286988000, false);
    iso_ok("2010-08-31t20:36:28z", 1283286988000, false);
    iso_ok("2010-08-31T20:36:28", 1283286988000, false);       /* no zone = UTC */
    iso_ok("2010-08-31 20:36:28", 1283286988000, false);
    iso_ok("2010-08-31T20:36:28.123Z", 1283286988123, false);
    iso_ok("2010-08-31T20:36:28.1Z", 1283286988100, false);
    iso_ok("2010-08-31T20:36:28.12Z", 1283286988120, false);
    iso_ok("2010-08-31T20:36:28.123456789Z", 1283286988123, false);
    iso_ok("2010-08-31 20:36:28.5", 1283286988500, false);
    iso_ok("2024-01-02", 1704153600000, true);
    iso_ok("1970-01-01", 0, true);
    iso_ok("1969-12-31T23:59:59Z", -1000, false);
}

static void test_iso_offsets(void **state)
{
    (void)state;
    iso_ok("2010-08-31T22:36:28+02:00", 1283286988000, false);
    iso_ok("2010-08-31T22:36:28+0200", 1283286988000, false);
    iso_ok("2010-08-31T15:06:28-05:30", 1283286988000, false);
    iso_ok("2010-08-31T20:36:28+00:00", 1283286988000, false);
    iso_ok("2010-08-31T20:36:28-00:00", 1283286988000, false);
    iso_ok("2010-08-31T22:36:28.250+02:00", 1283286988250, false);
    /* An offset can move the instant across a date line. */
    iso_ok("2024-01-01T23:00:00-01:00", 1704153600000, false);
}

static void test_iso_leap_years(void **state)
{
    (void)state;
    iso_ok("2000-02-29", 951782400000, true);     /* divisible by 400 */
    iso_ok("2024-02-29T12:00:00Z", 1709208000000, false);
    iso_bad("1900-02-29");                        /* divisible by 100 only */
    iso_bad("2023-02-29");
    iso_bad("2024-02-30");
    iso_bad("2100-02-29");
    iso_ok("2023-02-28", 1677542400000, true);
}

static void test_iso_rejects(void **state)
{
    (void)state;
    const char *bad[] = {
        "", "2024", "2024-01", "2024-1-02", "24-01-02", "2024/01/02", "2024-01-02Z",
        "2024-01-02T", "2024-01-02T10:00", "2024-01-02T10:00:00ZZ", "2024-01-02T10:00:00 ",
        " 2024-01-02", "2024-01-02x", "2024-13-01", "2024-00-10", "2024-01-00", "2024-01-32",
        "2024-04-31", "2024-01-02T24:00:00Z", "2024-01-02T10:60:00Z", "2024-01-02T10:00:60Z",
        "2024-01-02T10:00:00.Z", "2024-01-02T10:00:00+2", "2024-01-02T10:00:00+24:00",
        "2024-01-02T10:00:00+02:60", "2024-01-02T10:00:00+02:00:00", "2024-01-02T10:00:00+02:",
        "2024-01-02_10:00:00", "abcd-ef-gh", "2024-01-02T10:00:00.123abc", "+2024-01-02",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        iso_bad(bad[i]);
    int64_t ms;
    assert_false(timefmt_parse_iso8601(NULL, &ms, NULL));
    /* date_only may be NULL when the caller does not care. */
    assert_true(timefmt_parse_iso8601("2024-01-02", &ms, NULL));
    assert_int_equal(ms, 1704153600000);
}

static void test_rfc2822_parse_round_trip(void **state)
{
    (void)state;
    int64_t samples[] = { 0, -1000, 1283286988000, 951782400000, 1709208000000, 2147483648000,
                          4107542400000, 253402300799000, 1700000000000 };
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        char out[TIMEFMT_RFC2822_LEN];
        int64_t back = 1;
        timefmt_rfc2822(samples[i], out);
        assert_true(timefmt_parse_rfc2822(out, &back));
        assert_int_equal(back, samples[i]);
    }
    /* Every day of a leap year survives the round trip. */
    for (int64_t ms = 1704067200000; ms < 1735689600000; ms += 86400000 + 3601000) {
        char out[TIMEFMT_RFC2822_LEN];
        int64_t back;
        timefmt_rfc2822(ms, out);
        assert_true(timefmt_parse_rfc2822(out, &back));
        assert_int_equal(back, ms - ms % 1000);
    }
}

static void test_rfc2822_parse(void **state)
{
    (void)state;
    int64_t ms;
    assert_true(timefmt_parse_rfc2822("Tue, 31 Aug 2010 22:36:28 +0200", &ms));
    assert_int_equal(ms, 1283286988000);
    assert_true(timefmt_parse_rfc2822("Thu, 1 Jan 1970 00:00:00 +0000", &ms));
    assert_int_equal(ms, 0);
    const char *bad[] = {
        "Wed, 31 Aug 2010 20:36:28 +0000",   /* wrong weekday */
        "Tue 31 Aug 2010 20:36:28 +0000", "Tue, 31 Aug 2010 20:36:28", "Tue, 31 Aug 2010 20:36:28 GMT",
        "Tue, 31 Agu 2010 20:36:28 +0000", "Tue, 31 Aug 2010 20:36:28 +0000 ", "Thu, 30 Feb 2012 00:00:00 +0000",
        "Tue, 31 Aug 2010 25:36:28 +0000", "", "Tue, 31 Aug 10 20:36:28 +0000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (timefmt_parse_rfc2822(bad[i], &ms))
            fail_msg("accepted '%s'", bad[i]);
    assert_false(timefmt_parse_rfc2822(NULL, &ms));
}

static void test_clocks(void **state)
{
    (void)state;
    int64_t now = timefmt_now_ms();
    assert_true(now > 1700000000000);   /* after Nov 2023: the clock is set */
    int64_t a = timefmt_mono_ms();
    int64_t b = timefmt_mono_ms();
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc2822_format),
        cmocka_unit_test(test_rfc2822_matches_gmtime),
        cmocka_unit_test(test_rfc2822_ignores_locale),
        cmocka_unit_test(test_iso_forms),
        cmocka_unit_test(test_iso_offsets),
        cmocka_unit_test(test_iso_leap_years),
        cmocka_unit_test(test_iso_rejects),
        cmocka_unit_test(test_rfc2822_parse_round_trip),
        cmocka_unit_test(test_rfc2822_parse),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
