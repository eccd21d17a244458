/* buf — growable byte buffer with a hard cap.
 *
 * Growth doubles the allocation but never past cap + 1 (the NUL), so a buffer
 * never holds more memory than its cap allows. A failed append leaves the
 * buffer exactly as it was: callers can report the error and still use what
 * they had. */
#include "base/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Small first allocation: most buffers (form values, short bodies) stay small. */
#define BUF_MIN_ALLOC 64

void buf_init(buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

void buf_fini(buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

void buf_reset(buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

/* Makes room for extra more bytes plus the NUL. */
static buf_status reserve(buf *b, size_t extra)
{
    if (extra > b->cap - b->len)   /* len <= cap always, so no underflow */
        return BUF_TOO_BIG;
    size_t need = b->len + extra + 1;
    if (need <= b->alloc)
        return BUF_OK;
    size_t n = b->alloc ? b->alloc : BUF_MIN_ALLOC;
    while (n < need && n <= SIZE_MAX / 2)
        n *= 2;
    if (n < need)
        n = need;
    if (b->cap < SIZE_MAX && n > b->cap + 1)
        n = b->cap + 1;   /* need <= cap + 1, so this still fits */
    char *p = realloc(b->data, n);
    if (p == NULL)
        return BUF_NOMEM;
    if (b->data == NULL)
        p[0] = '\0';
    b->data = p;
    b->alloc = n;
    return BUF_OK;
}

buf_status buf_append(buf *b, const void *p, size_t n)
{
    buf_status st = reserve(b, n);
    if (st != BUF_OK)
        return st;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return BUF_OK;
}

buf_status buf_puts(buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

buf_status buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_status st = BUF_NOMEM;   /* vsnprintf only fails on encoding errors */
    if (n >= 0) {
        st = reserve(b, (size_t)n);
        if (st == BUF_OK) {
            vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
            b->len += (size_t)n;
        }
    }
    va_end(ap2);
    return st;
}

char *buf_steal(buf *b)
{
    char *s = b->data;
    if (s == NULL)
        s = strdup("");   /* callers always get a string they can free */
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    return s;
}

const char *buf_str(const buf *b)
{
    return b->data != NULL ? b->data : "";
}
