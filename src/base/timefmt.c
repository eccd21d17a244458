/* timefmt — RFC 2822 output/input and ISO 8601 input, all UTC.
 *
 * Day and month names come from fixed English tables and the calendar maths
 * from timegm (parsing) and plain arithmetic (formatting, see
 * civil_from_days), so neither the process locale nor TZ can change what
 * goes on the wire. Parsers validate every field before calling timegm,
 * because timegm silently normalises "Feb 30" into March. Years are limited
 * to four digits: that is what both wire formats can carry. */
#include "base/timefmt.h"

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

/* Days since 1970-01-01 → proleptic Gregorian y/m/d (Howard Hinnant's
 * civil_from_days, exact for every int64 day count we clamp to). Used instead
 * of gmtime_r on the output path because glibc's gmtime_r takes a
 * process-wide lock (tzset_lock) on every call, and every Call body formats
 * four times; test_timefmt checks it against gmtime_r day by day. */
static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                    /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);             /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                  /* [0, 11], March = 0 */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static char *put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

void timefmt_rfc2822(int64_t ms, char out[TIMEFMT_RFC2822_LEN])
{
    if (ms < TIMEFMT_MIN_MS)
        ms = TIMEFMT_MIN_MS;
    if (ms > TIMEFMT_MAX_MS)
        ms = TIMEFMT_MAX_MS;
    /* Floor division, so that -1 ms is 23:59:59 of the previous day. */
    int64_t secs = ms / 1000 - (ms % 1000 < 0);
    int64_t days = secs / 86400 - (secs % 86400 < 0);
    int sod = (int)(secs - days * 86400), y, m, d;
    civil_from_days(days, &y, &m, &d);
    /* "Tue, 31 Aug 2010 20:36:28 +0000"; 1970-01-01 was a Thursday. */
    char *p = out;
    memcpy(p, day_names[((days + 4) % 7 + 7) % 7], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = put2(p, d);
    *p++ = ' ';
    memcpy(p, month_names[m - 1], 3);
    p += 3;
    *p++ = ' ';
    p = put2(p, y / 100);
    p = put2(p, y % 100);
    *p++ = ' ';
    p = put2(p, sod / 3600);
    *p++ = ':';
    p = put2(p, sod / 60 % 60);
    *p++ = ':';
    p = put2(p, sod % 60);
    memcpy(p, " +0000", sizeof " +0000");
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
