/* exec_sound.c — <Play> URL → Kaphila sound name (the rule is in
 * include/engine/exec_sound.h and docs/twiml.md). Map of this file: the
 * sound_map lookup, then the basename rule. */
#include "engine/exec_sound.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Trims [*s, *e) of blanks. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && is_space(**s)) (*s)++;
    while (*e > *s && is_space((*e)[-1])) (*e)--;
}

static int put(char *out, size_t n, const char *a, size_t alen, const char *b, size_t blen)
{
    if (n == 0 || alen + blen >= n)
        return -1;
    memcpy(out, a, alen);
    memcpy(out + alen, b, blen);
    out[alen + blen] = '\0';
    return 0;
}

/* 1 found (out written), 0 not in the map, -1 found but does not fit. */
static int map_lookup(const char *map, const char *url, char *out, size_t n)
{
    size_t ulen = strlen(url);
    const char *p = map;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *eq = NULL;
        for (const char *q = p; q < end; q++)
            if (*q == '=') eq = q;
        if (eq) {
            const char *ks = p, *ke = eq, *vs = eq + 1, *ve = end;
            trim(&ks, &ke);
            trim(&vs, &ve);
            if ((size_t)(ke - ks) == ulen && memcmp(ks, url, ulen) == 0 && ve > vs)
                return put(out, n, vs, (size_t)(ve - vs), "", 0) == 0 ? 1 : -1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

static bool safe_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
}

int exec_sound_name(const char *map, const char *prefix, const char *url, char *out, size_t n)
{
    if (!url)
        return -1;
    if (map && *map) {
        int r = map_lookup(map, url, out, n);
        if (r != 0)
            return r > 0 ? 0 : -1;
    }
    /* The path: after "scheme://authority", up to the query or fragment. */
    const char *path = url;
    const char *sep = strstr(url, "://");
    if (sep) {
        path = strchr(sep + 3, '/');
        if (!path)
            return -1;
    }
    size_t plen = strcspn(path, "?#");
    const char *base = path;
    for (size_t i = 0; i < plen; i++)
        if (path[i] == '/') base = path + i + 1;
    size_t blen = (size_t)(path + plen - base);
    /* Drop the extension: the last dot, unless it starts the name. */
    for (size_t i = blen; i > 1; i--)
        if (base[i - 1] == '.') {
            blen = i - 1;
            break;
        }
    if (blen == 0 || base[0] == '.')
        return -1;
    for (size_t i = 0; i < blen; i++)
        if (!safe_char(base[i]))
            return -1;
    if (!prefix) prefix = "";
    return put(out, n, prefix, strlen(prefix), base, blen);
}
