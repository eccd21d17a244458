/* httpd_basic.c — HTTP Basic credentials (RFC 7617) decoded from an
 * Authorization header: pure, any thread. Apart from httpd.c so the listener
 * file stays a map of the request lifecycle; fuzz/fuzz_basic.c drives it. */
#include "net/httpd.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Strict standard base64 (RFC 4648 §4, padding optional); -1 on any other
 * byte. out must hold 3 * (n / 4) + 3 bytes. */
static long b64_decode(const char *in, size_t n, unsigned char *out)
{
    unsigned acc = 0;
    int bits = 0;
    long o = 0;
    while (n && in[n - 1] == '=') n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        unsigned v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+') v = 62;
        else if (c == '/') v = 63;
        else return -1;
        acc = (acc << 6) | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* Our own parse rather than MHD_basic_auth_get_username_password: the auth
 * scheme is case-insensitive (RFC 9110 §11.1; libmicrohttpd 0.9.75 wants
 * "Basic" exactly), and the decoded credentials are length-counted, so a
 * password with an embedded NUL is refused here instead of being cut at the
 * NUL and matching the token that is its prefix. Neither the configured
 * secrets nor any SID can contain a NUL, so refusing loses nothing. */
bool http_basic_decode(const char *h, char **user, char **pass)
{
    unsigned char *dec = NULL;
    bool ok = false;
    size_t n;
    long len = 0;
    *user = *pass = NULL;
    if (!h || strncasecmp(h, "basic", 5) != 0 || (h[5] != ' ' && h[5] != '\t')) return false;
    h += 5;
    while (*h == ' ' || *h == '\t') h++;
    n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
    if (!n || !(dec = malloc(3 * (n / 4) + 4))) return false;
    len = b64_decode(h, n, dec);
    if (len > 0 && !memchr(dec, '\0', (size_t)len)) {
        unsigned char *colon = memchr(dec, ':', (size_t)len);
        if (colon) {
            *user = strndup((char *)dec, (size_t)(colon - dec));
            *pass = strndup((char *)colon + 1, (size_t)(len - (colon + 1 - dec)));
            ok = *user && *pass;
        }
    }
    /* Wipe the decoded secret before handing the memory back. */
    if (len > 0) memset(dec, 0, (size_t)len);
    free(dec);
    if (!ok) {
        free(*user);
        if (*pass) memset(*pass, 0, strlen(*pass));
        free(*pass);
        *user = *pass = NULL;
    }
    return ok;
}
