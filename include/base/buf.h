/* buf — a growable byte buffer with a hard cap fixed at init.
 *
 * Every buffer that grows from outside input (request bodies, webhook
 * responses, TwiML documents) carries a cap so that no peer can make twigate
 * allocate without bound. Caller storage: buf_init/buf_fini. Not thread-safe;
 * one owner at a time. The contents are always NUL-terminated (the NUL is not
 * counted in len and not counted against the cap). */
#ifndef TWIGATE_BUF_H
#define TWIGATE_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char  *data;   /* NULL until the first append; then NUL-terminated */
    size_t len;
    size_t alloc;
    size_t cap;    /* len never exceeds this */
} buf;

typedef enum { BUF_OK = 0, BUF_TOO_BIG = 1, BUF_NOMEM = 2 } buf_status;

void buf_init(buf *b, size_t cap);
void buf_fini(buf *b);
void buf_reset(buf *b);                       /* len = 0, keeps memory */
__attribute__((warn_unused_result))
buf_status buf_append(buf *b, const void *p, size_t n);
__attribute__((warn_unused_result))
buf_status buf_puts(buf *b, const char *s);
__attribute__((warn_unused_result, format(printf, 2, 3)))
buf_status buf_printf(buf *b, const char *fmt, ...);
/* Hands the heap string to the caller (who frees it); b is left empty, with
 * its cap. An untouched buffer yields a heap "" (NULL only if out of memory). */
char *buf_steal(buf *b);
/* Returns data or "" when empty, never NULL. */
const char *buf_str(const buf *b);

#endif
