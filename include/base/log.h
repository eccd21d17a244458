/* log — the one logging module.
 *
 * Lines go to stderr, as plain text ("2026-11-22T10:00:00.123Z INFO [route] CA… msg")
 * or as JSON lines when configured. Each thread carries a context (request id,
 * AccountSid, CallSid) that is added to every line it logs. Secrets (tokens,
 * keys, signatures, Authorization headers) must never be passed in: callers
 * log SIDs and outcomes, not credentials. Thread-safe; one write(2) per line. */
#ifndef TWIGATE_LOG_H
#define TWIGATE_LOG_H

#include <stdbool.h>

/* Longest line written, newline included; longer messages are cut at a
 * character boundary and end in "…". It is PIPE_BUF, so concurrent lines
 * never interleave even when stderr is a pipe. Control characters in a
 * message become spaces: one call is always one line. */
#define LOG_LINE_MAX 4096

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_setup(log_level min, bool json);
/* Parses "debug|info|warn|error"; false if unknown. */
bool log_level_parse(const char *s, log_level *out);
/* Per-thread context; any argument may be NULL (= cleared). Strings are copied. */
void log_context(const char *request_id, const char *account_sid, const char *call_sid);
void log_context_clear(void);

__attribute__((format(printf, 3, 4)))
void log_write(log_level lvl, const char *module, const char *fmt, ...);

#define log_debug(mod, ...) log_write(LOG_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_write(LOG_INFO,  mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_write(LOG_WARN,  mod, __VA_ARGS__)
#define log_error(mod, ...) log_write(LOG_ERROR, mod, __VA_ARGS__)

#endif
