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

/* A JSON string as jansson's dump_string writes it without flags: '"' and
 * '\\' escaped, \b \f \n \r \t by name, the other controls (NUL included)
 * as \u00XX in upper-case hex; '/' and DEL as they are. Non-ASCII text
 * gives up: jansson checks its UTF-8 there. */
static void str(jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0;
    PUT_LIT(w, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x80) { w->fail = true; return; }
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        put(w, s + run, i - run);
        run = i + 1;
        switch (ch) {
        case '"': PUT_LIT(w, "\\\""); break;
        case '\\': PUT_LIT(w, "\\\\"); break;
        case '\b': PUT_LIT(w, "\\b"); break;
        case '\f': PUT_LIT(w, "\\f"); break;
        case '\n': PUT_LIT(w, "\\n"); break;
        case '\r': PUT_LIT(w, "\\r"); break;
        case '\t': PUT_LIT(w, "\\t"); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            put(w, u, sizeof u);
        }
        }
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
