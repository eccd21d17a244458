/* form — x-www-form-urlencoded decoding and encoding.
 *
 * Decoding is strict about escapes ("%G1", a lone "%", "%00" are errors)
 * because a lenient decoder would let two different bodies mean the same
 * thing, which matters once values are signed. form_parse is all-or-nothing:
 * on error the pairs it had appended are removed again.
 *
 * Keys and values are copied into chunks of FORM_CHUNK bytes the form owns:
 * a status callback's form is ~30 pairs built, encoded, signed and freed per
 * event, and one allocation per string was a tenth of the engine's time per
 * relayed event (malloc and free, docs/performance.md). Strings are never
 * freed one by one: a removed or replaced one stays until form_fini. */
#include "base/form.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define FORM_CHUNK 2048

struct form_chunk {
    form_chunk *next;
    size_t      used, cap;
    char        data[];
};

void form_init(form *f)
{
    f->pairs = NULL;
    f->n = 0;
    f->alloc = 0;
    f->chunks = NULL;
}

void form_fini(form *f)
{
    if (f == NULL)
        return;
    while (f->chunks != NULL) {
        form_chunk *c = f->chunks;
        f->chunks = c->next;
        free(c);
    }
    free(f->pairs);
    form_init(f);
}

/* A chunk with room for len more bytes: the newest, or a new one. A string
 * over a quarter of a chunk gets a chunk of its own, put behind the newest,
 * so that the newest keeps its free space for the small ones. The caller
 * writes at c->data + c->used and adds what it used to c->used. */
static form_chunk *room(form *f, size_t len)
{
    form_chunk *c = f->chunks;
    if (c != NULL && c->cap - c->used >= len)
        return c;
    bool own = len > FORM_CHUNK / 4;
    size_t cap = own ? len : FORM_CHUNK;
    c = malloc(sizeof *c + cap);
    if (c == NULL)
        return NULL;
    c->used = 0;
    c->cap = cap;
    if (own && f->chunks != NULL) {
        c->next = f->chunks->next;
        f->chunks->next = c;
    } else {
        c->next = f->chunks;
        f->chunks = c;
    }
    return c;
}

static char *copy(form *f, const char *s, size_t len)
{
    form_chunk *c = room(f, len + 1);
    if (c == NULL)
        return NULL;
    char *p = c->data + c->used;
    memcpy(p, s, len);
    p[len] = '\0';
    c->used += len + 1;
    return p;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..len) into out (room for len + 1 bytes: decoding never
 * lengthens); the decoded length, or -1 with *status saying why. */
static long decode_into(char *out, const char *s, size_t len, bool plus_is_space,
                        form_status *status)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < len ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval((unsigned char)s[i + 2]) : -1;
            if (lo < 0)
                goto bad;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c == '\0')   /* would silently cut the value short in C strings */
            goto bad;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (o > FORM_MAX_VALUE_LEN) {
        *status = FORM_ERR_TOO_LONG;
        return -1;
    }
    *status = FORM_OK;
    return (long)o;
bad:
    *status = FORM_ERR_ENCODING;
    return -1;
}

/* Decodes s[0..len) into the form's chunks; NULL with *status on error. */
static char *decode(form *f, const char *s, size_t len, form_status *status)
{
    /* Each decoded byte takes at most 3 input bytes: refuse before allocating. */
    if (len / 3 > FORM_MAX_VALUE_LEN) {
        *status = FORM_ERR_TOO_LONG;
        return NULL;
    }
    form_chunk *c = room(f, len + 1);
    if (c == NULL) {
        *status = FORM_ERR_NOMEM;
        return NULL;
    }
    char *out = c->data + c->used;
    long o = decode_into(out, s, len, true, status);
    if (o < 0)
        return NULL;
    c->used += (size_t)o + 1;
    return out;
}

char *form_unescape(const char *s, size_t len, bool plus_is_space)
{
    form_status st;
    if (len / 3 > FORM_MAX_VALUE_LEN)
        return NULL;
    char *out = malloc(len + 1);
    if (out != NULL && decode_into(out, s, len, plus_is_space, &st) < 0) {
        free(out);
        out = NULL;
    }
    return out;
}

/* Appends a pair whose strings are in the form's chunks. */
static form_status push(form *f, char *key, char *value)
{
    if (f->n >= FORM_MAX_PAIRS)
        return FORM_ERR_TOO_MANY;
    if (f->n == f->alloc) {
        size_t n = f->alloc ? f->alloc * 2 : 16;
        if (n > FORM_MAX_PAIRS)
            n = FORM_MAX_PAIRS;
        form_pair *p = realloc(f->pairs, n * sizeof *p);
        if (p == NULL)
            return FORM_ERR_NOMEM;
        f->pairs = p;
        f->alloc = n;
    }
    f->pairs[f->n].key = key;
    f->pairs[f->n].value = value;
    f->n++;
    return FORM_OK;
}

form_status form_parse(form *f, const char *s, size_t len)
{
    size_t n0 = f->n;
    form_status st = FORM_OK;
    size_t i = 0;
    while (i < len) {
        const char *seg = s + i;
        const char *amp = memchr(seg, '&', len - i);
        size_t seglen = amp ? (size_t)(amp - seg) : len - i;
        i += seglen + 1;
        if (seglen == 0)
            continue;
        const char *eq = memchr(seg, '=', seglen);
        size_t klen = eq ? (size_t)(eq - seg) : seglen;
        char *key = decode(f, seg, klen, &st);
        if (key == NULL)
            goto fail;
        char *value = eq ? decode(f, eq + 1, seglen - klen - 1, &st) : copy(f, "", 0);
        if (value == NULL) {
            if (!eq)
                st = FORM_ERR_NOMEM;
            goto fail;
        }
        st = push(f, key, value);
        if (st != FORM_OK)
            goto fail;
    }
    return FORM_OK;
fail:
    f->n = n0;   /* what they took of the chunks stays until form_fini */
    return st;
}

form_status form_add(form *f, const char *key, const char *value)
{
    size_t kl = strlen(key), vl = strlen(value);
    if (kl > FORM_MAX_VALUE_LEN || vl > FORM_MAX_VALUE_LEN)
        return FORM_ERR_TOO_LONG;
    if (f->n >= FORM_MAX_PAIRS)
        return FORM_ERR_TOO_MANY;
    char *k = copy(f, key, kl);
    char *v = k != NULL ? copy(f, value, vl) : NULL;
    if (v == NULL)
        return FORM_ERR_NOMEM;
    return push(f, k, v);
}

form_status form_set_value(form *f, size_t i, const char *value)
{
    size_t vl = strlen(value);
    if (i >= f->n)
        return FORM_ERR_TOO_MANY;
    if (vl > FORM_MAX_VALUE_LEN)
        return FORM_ERR_TOO_LONG;
    char *v = copy(f, value, vl);
    if (v == NULL)
        return FORM_ERR_NOMEM;
    f->pairs[i].value = v;
    return FORM_OK;
}

const char *form_get(const form *f, const char *key)
{
    return form_get_nth(f, key, 0);
}

size_t form_count(const form *f, const char *key)
{
    size_t c = 0;
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->pairs[i].key, key) == 0)
            c++;
    return c;
}

const char *form_get_nth(const form *f, const char *key, size_t nth)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->pairs[i].key, key) == 0 && nth-- == 0)
            return f->pairs[i].value;
    return NULL;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '*' || c == '-' || c == '.' || c == '_';
}

buf_status form_escape(buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len0 = out->len;
    buf_status st = BUF_OK;
    /* Runs of unreserved bytes are copied in one append; most values are
     * nothing but such a run. */
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0' && st == BUF_OK) {
        const unsigned char *run = p;
        while (*p != '\0' && unreserved(*p))
            p++;
        if (p > run)
            st = buf_append(out, run, (size_t)(p - run));
        if (*p == '\0' || st != BUF_OK)
            break;
        if (*p == ' ') {
            st = buf_append(out, "+", 1);
        } else {
            char esc[3] = { '%', hex[*p >> 4], hex[*p & 15] };
            st = buf_append(out, esc, sizeof esc);
        }
        p++;
    }
    if (st != BUF_OK) {   /* leave no half-escaped value behind */
        out->len = len0;
        if (out->data != NULL)
            out->data[len0] = '\0';
    }
    return st;
}

buf_status form_encode(const form *f, buf *out)
{
    size_t len0 = out->len;
    buf_status st = BUF_OK;
    for (size_t i = 0; i < f->n && st == BUF_OK; i++) {
        if (i > 0)
            st = buf_append(out, "&", 1);
        if (st == BUF_OK)
            st = form_escape(out, f->pairs[i].key);
        if (st == BUF_OK)
            st = buf_append(out, "=", 1);
        if (st == BUF_OK)
            st = form_escape(out, f->pairs[i].value);
    }
    if (st != BUF_OK) {
        out->len = len0;
        if (out->data != NULL)
            out->data[len0] = '\0';
    }
    return st;
}
