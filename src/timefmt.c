/* timefmt — RFC 2822 output/input and ISO 8601 input, all UTC.
 *
 * Day and month names come from fixed English tables and the calendar maths
 * from gmtime_r/timegm, so neither the process locale nor TZ can change what
 * goes on the wire. Parsers validate every field before calling timegm,
 * because timegm silently normalises "Feb 30" into March. Years are limited
 * to four digits: that is what both wire formats can carry. */
#include "timefmt.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const day_names[7] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char *const month_names[12] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in ms: the four-digit range. */
#define TIMEFMT_MIN_MS (-62167219200000LL)
#define TIMEFMT_MAX_MS (253402300799999LL)

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t timefmt_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t timefmt_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

void timefmt_rfc2822(int64_t ms, char out[TIMEFMT_RFC2822_LEN])
{
    if (ms < TIMEFMT_MIN_MS)
        ms = TIMEFMT_MIN_MS;
    if (ms > TIMEFMT_MAX_MS)
        ms = TIMEFMT_MAX_MS;
    /* Floor division, so that -1 ms is 23:59:59 of the previous day. */
    int64_t secs = ms / 1000 - (ms % 1000 < 0);
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {   /* cannot happen inside the clamp */
        snprintf(out, TIMEFMT_RFC2822_LEN, "Thu, 01 Jan 1970 00:00:00 +0000");
        return;
    }
    snprintf(out, TIMEFMT_RFC2822_LEN, "%s, %02d %s %04d %02d:%02d:%02d +0000",
             day_names[tm.tm_wday % 7], tm.tm_mday % 100, month_names[tm.tm_mon % 12],
             (tm.tm_year + 1900) % 10000, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100);
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int d[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Reads exactly n decimal digits at *p and advances past them. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool lit(const char **p, char c)
{
    if (**p != c)
        return false;
    (*p)++;
    return true;
}

/* Seconds since the epoch for a validated UTC civil time, or false. */
static bool civil_to_secs(int y, int mo, int d, int h, int mi, int s, int64_t *out)
{
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59)
        return false;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                     .tm_hour = h, .tm_min = mi, .tm_sec = s };
    *out = (int64_t)timegm(&tm);
    return true;
}

bool timefmt_parse_iso8601(const char *s, int64_t *ms, bool *date_only)
{
    if (s == NULL)
        return false;
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac_ms = 0, off_min = 0;
    if (!digits(&p, 4, &y) || !lit(&p, '-') || !digits(&p, 2, &mo) || !lit(&p, '-') ||
        !digits(&p, 2, &d))
        return false;
    bool only_date = *p == '\0';
    if (!only_date) {
        if (*p != 'T' && *p != 't' && *p != ' ')
            return false;
        p++;
        if (!digits(&p, 2, &h) || !lit(&p, ':') || !digits(&p, 2, &mi) || !lit(&p, ':') ||
            !digits(&p, 2, &sec))
            return false;
        if (lit(&p, '.') || lit(&p, ',')) {
            /* Milliseconds from the first three digits; finer digits are
             * dropped (truncated, as a clock would read them). */
            int n = 0;
            while (*p >= '0' && *p <= '9') {
                if (n < 3)
                    frac_ms = frac_ms * 10 + (*p - '0');
                n++;
                p++;
            }
            if (n == 0)
                return false;
            for (; n < 3; n++)
                frac_ms *= 10;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p == '-' ? -1 : 1, oh, om;
            p++;
            if (!digits(&p, 2, &oh))
                return false;
            lit(&p, ':');   /* ±HH:MM and ±HHMM are both ISO 8601 */
            if (!digits(&p, 2, &om) || oh > 23 || om > 59)
                return false;
            off_min = sign * (oh * 60 + om);
        }
        if (*p != '\0')
            return false;
    }
    int64_t secs;
    if (!civil_to_secs(y, mo, d, h, mi, sec, &secs))
        return false;
    *ms = (secs - (int64_t)off_min * 60) * 1000 + frac_ms;
    if (date_only != NULL)
        *date_only = only_date;
    return true;
}

static int name_index(const char *p, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strncmp(p, names[i], 3) == 0)
            return i;
    return -1;
}

bool timefmt_parse_rfc2822(const char *s, int64_t *ms)
{
    if (s == NULL)
        return false;
    const char *p = s;
    int wday = name_index(p, day_names, 7);
    if (wday < 0)
        return false;
    p += 3;
    int d, mo, y, h, mi, sec, oh, om;
    if (!lit(&p, ',') || !lit(&p, ' '))
        return false;
    /* A one-digit day is legal RFC 2822 even though we always write two. */
    if (!digits(&p, 2, &d) && !digits(&p, 1, &d))
        return false;
    if (!lit(&p, ' '))
        return false;
    mo = name_index(p, month_names, 12) + 1;
    if (mo == 0)
        return false;
    p += 3;
    if (!lit(&p, ' ') || !digits(&p, 4, &y) || !lit(&p, ' ') || !digits(&p, 2, &h) ||
        !lit(&p, ':') || !digits(&p, 2, &mi) || !lit(&p, ':') || !digits(&p, 2, &sec) ||
        !lit(&p, ' '))
        return false;
    int sign = *p == '-' ? -1 : 1;
    if (!lit(&p, '+') && !lit(&p, '-'))
        return false;
    if (!digits(&p, 2, &oh) || !digits(&p, 2, &om) || oh > 23 || om > 59 || *p != '\0')
        return false;
    int64_t secs;
    if (!civil_to_secs(y, mo, d, h, mi, sec, &secs))
        return false;
    /* The weekday is redundant; a wrong one means a corrupt date, not a typo
     * we should guess past. 1970-01-01 was a Thursday. */
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    if ((int)(((days + 4) % 7 + 7) % 7) != wday)
        return false;
    *ms = (secs - (int64_t)sign * (oh * 60 + om) * 60) * 1000;
    return true;
}
