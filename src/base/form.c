/* form — x-www-form-urlencoded decoding and encoding.
 *
 * Decoding is strict about escapes ("%G1", a lone "%", "%00" are errors)
 * because a lenient decoder would let two different bodies mean the same
 * thing, which matters once values are signed. form_parse is all-or-nothing:
 * on error the pairs it had appended are removed again. */
#include "base/form.h"

#include <stdlib.h>
#include <string.h>

void form_init(form *f)
{
    f->pairs = NULL;
    f->n = 0;
    f->alloc = 0;
}

static void truncate_to(form *f, size_t n)
{
    while (f->n > n) {
        f->n--;
        free(f->pairs[f->n].key);
        free(f->pairs[f->n].value);
    }
}

void form_fini(form *f)
{
    if (f == NULL)
        return;
    truncate_to(f, 0);
    free(f->pairs);
    form_init(f);
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

/* Decodes s[0..len) into a new heap string; *status says why on NULL. */
static char *decode(const char *s, size_t len, bool plus_is_space, form_status *status)
{
    /* Each decoded byte takes at most 3 input bytes: refuse before allocating. */
    if (len / 3 > FORM_MAX_VALUE_LEN) {
        *status = FORM_ERR_TOO_LONG;
        return NULL;
    }
    char *out = malloc(len + 1);   /* decoding never lengthens */
    if (out == NULL) {
        *status = FORM_ERR_NOMEM;
        return NULL;
    }
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
        free(out);
        *status = FORM_ERR_TOO_LONG;
        return NULL;
    }
    *status = FORM_OK;
    return out;
bad:
    free(out);
    *status = FORM_ERR_ENCODING;
    return NULL;
}

char *form_unescape(const char *s, size_t len, bool plus_is_space)
{
    form_status st;
    return decode(s, len, plus_is_space, &st);
}

/* Appends a pair, taking ownership of key and value (freed on failure). */
static form_status push(form *f, char *key, char *value)
{
    form_status st = FORM_OK;
    if (f->n >= FORM_MAX_PAIRS) {
        st = FORM_ERR_TOO_MANY;
        goto fail;
    }
    if (f->n == f->alloc) {
        size_t n = f->alloc ? f->alloc * 2 : 16;
        if (n > FORM_MAX_PAIRS)
            n = FORM_MAX_PAIRS;
        form_pair *p = realloc(f->pairs, n * sizeof *p);
        if (p == NULL) {
            st = FORM_ERR_NOMEM;
            goto fail;
        }
        f->pairs = p;
        f->alloc = n;
    }
    f->pairs[f->n].key = key;
    f->pairs[f->n].value = value;
    f->n++;
    return FORM_OK;
fail:
    free(key);
    free(value);
    return st;
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
        char *key = decode(seg, klen, true, &st);
        if (key == NULL)
            goto fail;
        char *value = eq ? decode(eq + 1, seglen - klen - 1, true, &st) : strdup("");
        if (value == NULL) {
            if (!eq)
                st = FORM_ERR_NOMEM;
            free(key);
            goto fail;
        }
        st = push(f, key, value);
        if (st != FORM_OK)
            goto fail;
    }
    return FORM_OK;
fail:
    truncate_to(f, n0);
    return st;
}

form_status form_add(form *f, const char *key, const char *value)
{
    if (strlen(key) > FORM_MAX_VALUE_LEN || strlen(value) > FORM_MAX_VALUE_LEN)
        return FORM_ERR_TOO_LONG;
    if (f->n >= FORM_MAX_PAIRS)
        return FORM_ERR_TOO_MANY;
    char *k = strdup(key);
    char *v = strdup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return FORM_ERR_NOMEM;
    }
    return push(f, k, v);
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
