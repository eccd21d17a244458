/* log — levelled, context-tagged lines on stderr.
 *
 * Map of this file: process-wide settings (level, format), the per-thread
 * context, text sanitising (so one call is always one well-formed line),
 * then the two line formats and the single write.
 *
 * Why a line never exceeds LOG_LINE_MAX: it equals PIPE_BUF, and POSIX makes
 * writes up to PIPE_BUF to a pipe atomic, so lines from different threads
 * never interleave when stderr is a pipe to a supervisor. Longer messages are
 * cut at a UTF-8 character boundary and end in "…". */
#include "base/log.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

_Static_assert(LOG_LINE_MAX <= PIPE_BUF, "a log line must be one atomic pipe write");

#define LOG_CTX_MAX  64     /* request ids and SIDs (34) fit with room to spare */
#define ELLIPSIS     "\xe2\x80\xa6"   /* "…" in UTF-8 */
#define ELLIPSIS_LEN 3

/* The only mutable statics: set once from the loaded config by log_setup at
 * startup, so they are part of "the loaded config" in spirit. Atomics keep a
 * late call well defined while other threads log. */
static atomic_int log_min = LOG_INFO;
static atomic_bool log_json = false;

static _Thread_local struct {
    char request_id[LOG_CTX_MAX];
    char account_sid[LOG_CTX_MAX];
    char call_sid[LOG_CTX_MAX];
} ctx;

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

void log_setup(log_level min, bool json)
{
    atomic_store(&log_min, (int)min);
    atomic_store(&log_json, json);
}

bool log_level_parse(const char *s, log_level *out)
{
    static const struct { const char *name; log_level lvl; } names[] = {
        { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "warn", LOG_WARN },
        { "warning", LOG_WARN }, { "error", LOG_ERROR },
    };
    if (s == NULL)
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].lvl;
            return true;
        }
    }
    return false;
}

/* Context values go on every line unquoted, so only visible ASCII is kept:
 * a hostile request id must not be able to forge fields or lines. */
static void set_ctx(char dst[LOG_CTX_MAX], const char *src)
{
    size_t i = 0;
    if (src != NULL) {
        for (; src[i] != '\0' && i < LOG_CTX_MAX - 1; i++) {
            unsigned char c = (unsigned char)src[i];
            dst[i] = c > ' ' && c < 0x7f ? (char)c : '?';
        }
    }
    dst[i] = '\0';
}

void log_context(const char *request_id, const char *account_sid, const char *call_sid)
{
    set_ctx(ctx.request_id, request_id);
    set_ctx(ctx.account_sid, account_sid);
    set_ctx(ctx.call_sid, call_sid);
}

void log_context_clear(void)
{
    log_context(NULL, NULL, NULL);
}

/* Length of the UTF-8 sequence starting at s[0..len), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    size_t n;
    unsigned min;
    unsigned cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0) {
        n = 2, min = 0x80, cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3, min = 0x800, cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4, min = 0x10000, cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* Overlong forms, surrogates and beyond-Unicode are what jansson rejects. */
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* In place: invalid UTF-8 bytes become '?', control characters a space, so
 * the message stays on one line in text mode and is valid JSON in JSON mode. */
static void sanitize(char *s, size_t len)
{
    unsigned char *u = (unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq(u + i, len - i);
        if (n == 0) {
            u[i++] = '?';
        } else {
            if (n == 1 && (u[i] < ' ' || u[i] == 0x7f))
                u[i] = ' ';
            i += n;
        }
    }
}

/* Largest cut <= max that does not split a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static void timestamp(char *out, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (gmtime_r(&ts.tv_sec, &tm) == NULL) {
        snprintf(out, size, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000));
}

static void emit(const char *line, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, line, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;   /* nowhere left to report a logging failure */
        line += w;
        len -= (size_t)w;
    }
}

static size_t format_text(char *line, const char *ts, const char *level, const char *module,
                          const char *msg, size_t msglen, bool cut)
{
    size_t n = (size_t)snprintf(line, LOG_LINE_MAX, "%s %s [%s]", ts, level, module);
    if (ctx.request_id[0] != '\0')
        n += (size_t)snprintf(line + n, LOG_LINE_MAX - n, " req=%s", ctx.request_id);
    if (ctx.account_sid[0] != '\0')
        n += (size_t)snprintf(line + n, LOG_LINE_MAX - n, " %s", ctx.account_sid);
    if (ctx.call_sid[0] != '\0')
        n += (size_t)snprintf(line + n, LOG_LINE_MAX - n, " %s", ctx.call_sid);
    /* Room left for " ", the message, "…" and "\n"; the prefix is bounded
     * (timestamp, level, a module name, 3 × LOG_CTX_MAX) far below the cap. */
    size_t room = LOG_LINE_MAX - n - 1 - ELLIPSIS_LEN - 1;
    size_t keep = utf8_cut(msg, msglen, room);
    cut = cut || keep < msglen;
    line[n++] = ' ';
    memcpy(line + n, msg, keep);
    n += keep;
    if (cut) {
        memcpy(line + n, ELLIPSIS, ELLIPSIS_LEN);
        n += ELLIPSIS_LEN;
    }
    line[n++] = '\n';
    return n;
}

/* Bytes jansson writes for c inside a string (compact, no ASCII escaping). */
static size_t json_cost(unsigned char c)
{
    return c == '"' || c == '\\' ? 2 : c < 0x20 ? 6 : 1;
}

static size_t json_len(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += json_cost((unsigned char)s[i]);
    return n;
}

/* Returns the line length, or 0 if jansson failed (out of memory). */
static size_t format_json(char *line, const char *ts, const char *level, const char *module,
                          const char *msg, size_t msglen, bool cut)
{
    char text[LOG_LINE_MAX + ELLIPSIS_LEN];
    size_t out = 0;
    /* Escaping makes the JSON line longer than the message, so an overlong
     * line is re-cut knowing what each byte costs escaped; the first retry
     * fits. The loop bound only guards against a jansson surprise, and each
     * pass shrinks the message, so it cannot spin. */
    for (int pass = 0; pass < 4 && out == 0; pass++) {
        size_t tlen = msglen;
        memcpy(text, msg, msglen);
        if (cut) {
            memcpy(text + msglen, ELLIPSIS, ELLIPSIS_LEN);
            tlen += ELLIPSIS_LEN;
        }
        text[tlen] = '\0';
        json_t *obj = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s}", "ts", ts,
                                "level", level, "module", module,
                                "request_id", ctx.request_id[0] ? ctx.request_id : NULL,
                                "account_sid", ctx.account_sid[0] ? ctx.account_sid : NULL,
                                "call_sid", ctx.call_sid[0] ? ctx.call_sid : NULL,
                                "msg", text);
        if (obj == NULL)
            return 0;
        size_t need = json_dumpb(obj, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (need > 0 && need < LOG_LINE_MAX) {
            json_dumpb(obj, line, LOG_LINE_MAX, JSON_COMPACT | JSON_PRESERVE_ORDER);
            line[need] = '\n';
            out = need + 1;
        }
        json_decref(obj);
        if (need == 0)
            return 0;
        if (out == 0) {
            size_t tcost = json_len(text, tlen);
            size_t fixed = need > tcost ? need - tcost : need;
            size_t budget = LOG_LINE_MAX - 1 - ELLIPSIS_LEN;
            budget = budget > fixed ? budget - fixed : 0;
            size_t keep = 0, cost = 0;
            while (keep < msglen && cost + json_cost((unsigned char)msg[keep]) <= budget)
                cost += json_cost((unsigned char)msg[keep++]);
            keep = utf8_cut(msg, msglen, keep);
            if (keep >= msglen)   /* the model was wrong: fall back to a blunt cut */
                keep = msglen > need - LOG_LINE_MAX + 1 ? msglen - (need - LOG_LINE_MAX + 1) : 0;
            msglen = keep;
            cut = true;
        }
    }
    return out;
}

void log_write(log_level lvl, const char *module, const char *fmt, ...)
{
    if ((int)lvl < atomic_load(&log_min))
        return;
    int saved_errno = errno;   /* logging an error must not change it */
    char msg[LOG_LINE_MAX];
    char line[LOG_LINE_MAX];
    char ts[96];   /* room for any int in each field, as -Wformat-truncation demands */
    char mod[LOG_CTX_MAX];

    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(msg, LOG_LINE_MAX, fmt, ap);
    va_end(ap);
    if (r < 0) {
        r = 0;
        msg[0] = '\0';
    }
    size_t msglen = (size_t)r;
    bool cut = false;
    if (msglen >= LOG_LINE_MAX) {
        msglen = utf8_cut(msg, LOG_LINE_MAX - 1, LOG_LINE_MAX - 1 - ELLIPSIS_LEN);
        cut = true;
    }
    msg[msglen] = '\0';
    sanitize(msg, msglen);
    set_ctx(mod, module != NULL ? module : "-");
    timestamp(ts, sizeof ts);
    const char *level = (unsigned)lvl <= LOG_ERROR ? level_names[lvl] : "ERROR";

    size_t n = atomic_load(&log_json)
                   ? format_json(line, ts, level, mod, msg, msglen, cut)
                   : format_text(line, ts, level, mod, msg, msglen, cut);
    if (n > 0)
        emit(line, n);
    errno = saved_errno;
}
