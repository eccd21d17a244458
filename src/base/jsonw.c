/* jsonw — the compact JSON writer (include/base/jsonw.h). One pass into a
 * growing buffer; a value it does not render exactly as jansson would
 * (reals, non-ASCII text) makes it give up, and json_dumps runs instead. */
#include "base/jsonw.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jw {
    char  *p;
    size_t len, cap;
    bool   fail;   /* out of memory, or a value for json_dumps */
} jw;

static void put(jw *w, const char *s, size_t n)
{
    if (w->fail) return;
    if (w->len + n + 1 > w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 256;
        while (ncap < w->len + n + 1) ncap *= 2;
        char *np = realloc(w->p, ncap);
        if (!np) { w->fail = true; return; }
        w->p = np;
        w->cap = ncap;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}
#define PUT_LIT(w, lit) put(w, lit, sizeof lit - 1)

const char *jsonw_escape(unsigned char ch, char buf[6], size_t *len)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *e = NULL;
    switch (ch) {
    case '"': e = "\\\""; break;
    case '\\': e = "\\\\"; break;
    case '\b': e = "\\b"; break;
    case '\f': e = "\\f"; break;
    case '\n': e = "\\n"; break;
    case '\r': e = "\\r"; break;
    case '\t': e = "\\t"; break;
    default:
        if (ch >= 0x20) return NULL;
        buf[0] = '\\', buf[1] = 'u', buf[2] = '0', buf[3] = '0';
        buf[4] = hex[ch >> 4], buf[5] = hex[ch & 15];
        *len = 6;
        return buf;
    }
    *len = 2;
    return e;
}

/* A JSON string as jansson's dump_string writes it without flags
 * (jsonw_escape); non-ASCII text gives up: jansson checks its UTF-8 there. */
static void str(jw *w, const char *s, size_t n)
{
    size_t run = 0, el;
    char u[6];
    PUT_LIT(w, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x80) { w->fail = true; return; }
        if (!JSONW_NEEDS_ESCAPE(ch)) continue;
        put(w, s + run, i - run);
        run = i + 1;
        const char *e = jsonw_escape(ch, u, &el);
        put(w, e, el);
    }
    put(w, s + run, n - run);
    PUT_LIT(w, "\"");
}

static void value(jw *w, const json_t *j, int depth)
{
    char n[32];
    if (w->fail) return;
    if (depth > JSONW_MAX_DEPTH) { w->fail = true; return; }
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        bool first = true;
        PUT_LIT(w, "{");
        /* Insertion order, as json_dumps without JSON_SORT_KEYS. */
        for (void *it = json_object_iter((json_t *)j); it && !w->fail;
             it = json_object_iter_next((json_t *)j, it)) {
            if (!first) PUT_LIT(w, ",");
            first = false;
            str(w, json_object_iter_key(it), json_object_iter_key_len(it));
            PUT_LIT(w, ":");
            value(w, json_object_iter_value(it), depth + 1);
        }
        PUT_LIT(w, "}");
        break;
    }
    case JSON_ARRAY:
        PUT_LIT(w, "[");
        for (size_t i = 0; i < json_array_size(j) && !w->fail; i++) {
            if (i) PUT_LIT(w, ",");
            value(w, json_array_get(j, i), depth + 1);
        }
        PUT_LIT(w, "]");
        break;
    case JSON_STRING:
        str(w, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: {
        int len = snprintf(n, sizeof n, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        put(w, n, (size_t)len);
        break;
    }
    case JSON_TRUE: PUT_LIT(w, "true"); break;
    case JSON_FALSE: PUT_LIT(w, "false"); break;
    case JSON_NULL: PUT_LIT(w, "null"); break;
    default: w->fail = true; break;   /* a real: jansson's own formatting */
    }
}

char *jsonw_dumps(const json_t *j)
{
    jw w = {0};
    if (!json_is_object(j) && !json_is_array(j)) return NULL;
    value(&w, j, 0);
    if (!w.fail) {
        w.p[w.len] = '\0';
        return w.p;
    }
    free(w.p);
    return json_dumps(j, JSON_COMPACT);
}
