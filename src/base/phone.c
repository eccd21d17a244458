/* phone — To/From classification and normalisation.
 *
 * Numbers are checked for shape only (country code not starting with 0,
 * 8–15 digits in all): Kaphila, not twigate, knows which numbers it can
 * reach. The URI-like endpoints get just enough checking to refuse obvious
 * garbage with 21211/21212 instead of passing it downstream. */
#include "base/phone.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* E.164 allows at most 15 digits; 8 is the shortest number seen in the wild
 * (small-country numbering plans with a 3-digit country code). */
#define E164_MIN_DIGITS 8
#define E164_MAX_DIGITS 15
#define NANP_DIGITS     10

/* ASCII-only classes: the process locale must not change what is valid. */
static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool identity_char(unsigned char c)
{
    return is_alnum(c) || c == '_' || c == '.' || c == '-' || c == '@';
}

static phone_kind client(const char *id, char out[PHONE_MAX])
{
    if (*id == '\0')
        return PHONE_INVALID;
    for (const char *p = id; *p; p++)
        if (!identity_char((unsigned char)*p))
            return PHONE_INVALID;
    snprintf(out, PHONE_MAX, "client:%s", id);
    return PHONE_CLIENT;
}

/* RFC 3261 user part: unreserved, escaped and user-unreserved characters. */
static bool sip_user_char(unsigned char c)
{
    return is_alnum(c) || strchr("-_.!~*'()&=+$,;?/%", c) != NULL;
}

static bool sip_host_char(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '.';
}

/* user@host[:port][;params] or host[:port][;params] */
static phone_kind sip(const char *rest, char out[PHONE_MAX])
{
    const char *host = rest;
    const char *at = strchr(rest, '@');
    if (at != NULL) {
        if (at == rest)
            return PHONE_INVALID;
        for (const char *p = rest; p < at; p++)
            if (!sip_user_char((unsigned char)*p))
                return PHONE_INVALID;
        host = at + 1;
    }
    const char *p = host;
    while (sip_host_char((unsigned char)*p))
        p++;
    if (p == host || host[0] == '.' || host[0] == '-')
        return PHONE_INVALID;
    if (*p == ':') {
        const char *port = ++p;
        while (is_digit((unsigned char)*p))
            p++;
        if (p == port || p - port > 5)
            return PHONE_INVALID;
    }
    if (*p == ';' || *p == '?') {   /* URI parameters / headers: printable, no spaces */
        for (; *p; p++)
            if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
                return PHONE_INVALID;
    }
    if (*p != '\0')
        return PHONE_INVALID;
    snprintf(out, PHONE_MAX, "sip:%s", rest);
    return PHONE_SIP;
}

static phone_kind sim(const char *id, char out[PHONE_MAX])
{
    if (*id == '\0')
        return PHONE_INVALID;
    for (const char *p = id; *p; p++)
        if (!is_alnum((unsigned char)*p))
            return PHONE_INVALID;
    snprintf(out, PHONE_MAX, "sim:%s", id);
    return PHONE_SIM;
}

static phone_kind number(const char *in, char out[PHONE_MAX])
{
    char d[E164_MAX_DIGITS + 1];
    size_t n = 0;
    const char *p = in;
    while (*p == ' ')
        p++;
    bool plus = *p == '+';
    if (plus)
        p++;
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (is_digit(c)) {
            if (n == E164_MAX_DIGITS)
                return PHONE_INVALID;
            d[n++] = (char)c;
        } else if (c != ' ' && c != '-' && c != '.' && c != '(' && c != ')') {
            return PHONE_INVALID;   /* letters (vanity numbers), a second '+', … */
        }
    }
    d[n] = '\0';
    if (!plus && n == NANP_DIGITS) {
        snprintf(out, PHONE_MAX, "+1%s", d);
        return PHONE_E164;
    }
    if (n < (plus ? E164_MIN_DIGITS : NANP_DIGITS + 1) || d[0] == '0')
        return PHONE_INVALID;   /* no country code starts with 0 */
    snprintf(out, PHONE_MAX, "+%s", d);
    return PHONE_E164;
}

phone_kind phone_normalize(const char *in, char out[PHONE_MAX])
{
    out[0] = '\0';
    if (in == NULL || strlen(in) >= PHONE_MAX)
        return PHONE_INVALID;
    phone_kind k;
    if (strncasecmp(in, "client:", 7) == 0)
        k = client(in + 7, out);
    else if (strncasecmp(in, "sip:", 4) == 0)
        k = sip(in + 4, out);
    else if (strncasecmp(in, "sim:", 4) == 0)
        k = sim(in + 4, out);
    else
        k = number(in, out);
    if (k == PHONE_INVALID)
        out[0] = '\0';
    return k;
}

void phone_format(const char *e164, char out[PHONE_MAX])
{
    if (e164 == NULL) {
        out[0] = '\0';
        return;
    }
    size_t len = strlen(e164);
    bool nanp = len == 2 + NANP_DIGITS && e164[0] == '+' && e164[1] == '1';
    for (size_t i = 2; nanp && i < len; i++)
        nanp = is_digit((unsigned char)e164[i]);
    if (nanp)
        snprintf(out, PHONE_MAX, "(%.3s) %.3s-%.4s", e164 + 2, e164 + 5, e164 + 8);
    else
        snprintf(out, PHONE_MAX, "%s", e164);
}

void phone_kaphila(const char *e164, char out[PHONE_MAX])
{
    if (e164 == NULL) {
        out[0] = '\0';
        return;
    }
    snprintf(out, PHONE_MAX, "%s", e164[0] == '+' ? e164 + 1 : e164);
}
