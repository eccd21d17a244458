/* fragment — "#ct=…&rt=…&tt=…&rc=…&rp=…" connection overrides.
 *
 * Customers write these by hand, so a bad override must never fail the
 * webhook: out-of-range numbers are clamped, unparsable ones and unknown
 * keys are ignored and the default stays. */
#include "base/fragment.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

void fragment_defaults(fragment_opts *o)
{
    o->connect_ms = 5000;
    o->read_ms = 15000;
    o->total_ms = 15000;
    o->retries = 1;
    o->retry_policy = FRAG_RP_CT;
}

/* Parses an optionally signed decimal integer spanning exactly [s, s+len);
 * values beyond int saturate (they are clamped afterwards anyway). */
static bool parse_int(const char *s, size_t len, long *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == len)
        return false;
    long v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v < INT_MAX)
            v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

static void set_clamped(int *field, const char *v, size_t vlen, int lo, int hi)
{
    long n;
    if (!parse_int(v, vlen, &n))
        return;
    *field = n < lo ? lo : n > hi ? hi : (int)n;
}

static void set_policy(int *field, const char *v, size_t vlen)
{
    static const struct { const char *name; int bit; } names[] = {
        { "ct", FRAG_RP_CT }, { "rt", FRAG_RP_RT }, { "4xx", FRAG_RP_4XX },
        { "5xx", FRAG_RP_5XX }, { "all", FRAG_RP_ALL },
    };
    int bits = 0;
    size_t i = 0;
    while (i < vlen) {
        const char *tok = v + i;
        const char *comma = memchr(tok, ',', vlen - i);
        size_t tlen = comma ? (size_t)(comma - tok) : vlen - i;
        i += tlen + 1;
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
            if (strlen(names[k].name) == tlen && strncasecmp(tok, names[k].name, tlen) == 0)
                bits |= names[k].bit;
    }
    if (bits != 0)   /* nothing recognised: keep the default rather than retry nothing */
        *field = bits;
}

static void apply(fragment_opts *o, const char *k, size_t klen, const char *v, size_t vlen)
{
#define KEY_IS(s) (klen == sizeof(s) - 1 && memcmp(k, s, klen) == 0)
    if (KEY_IS("ct"))
        set_clamped(&o->connect_ms, v, vlen, 100, 10000);
    else if (KEY_IS("rt"))
        set_clamped(&o->read_ms, v, vlen, 100, 15000);
    else if (KEY_IS("tt"))
        set_clamped(&o->total_ms, v, vlen, 100, 15000);
    else if (KEY_IS("rc"))
        set_clamped(&o->retries, v, vlen, 0, 5);
    else if (KEY_IS("rp"))
        set_policy(&o->retry_policy, v, vlen);
#undef KEY_IS
}

bool fragment_split(const char *url, char *base, size_t base_size, fragment_opts *o)
{
    fragment_defaults(o);
    if (url == NULL || base == NULL || base_size == 0)
        return false;
    const char *hash = strchr(url, '#');
    size_t blen = hash ? (size_t)(hash - url) : strlen(url);
    if (blen >= base_size) {
        base[0] = '\0';
        return false;
    }
    memcpy(base, url, blen);
    base[blen] = '\0';
    if (hash == NULL)
        return true;
    const char *p = hash + 1;
    while (*p != '\0') {
        size_t seglen = strcspn(p, "&");
        const char *eq = memchr(p, '=', seglen);
        if (eq != NULL)
            apply(o, p, (size_t)(eq - p), eq + 1, seglen - (size_t)(eq - p) - 1);
        p += seglen;
        if (*p == '&')
            p++;
    }
    return true;
}
