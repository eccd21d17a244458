/* sid — SIDs and tokens from OpenSSL's CSPRNG.
 *
 * RAND_bytes is thread-safe in OpenSSL 3, so no locking is needed here. */
#include "sid.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define SID_RAND_BYTES   16   /* 32 hex digits */
#define TOKEN_RAND_BYTES 32   /* 256 bits: unguessable even if tokens leak in bulk */

bool sid_new(const char prefix[2], char out[SID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[SID_RAND_BYTES];
    if (RAND_bytes(r, sizeof r) != 1)
        return false;
    out[0] = prefix[0];
    out[1] = prefix[1];
    for (size_t i = 0; i < sizeof r; i++) {
        out[2 + 2 * i] = hex[r[i] >> 4];
        out[3 + 2 * i] = hex[r[i] & 15];
    }
    out[SID_LEN] = '\0';
    OPENSSL_cleanse(r, sizeof r);
    return true;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool sid_valid(const char *s, const char prefix[2])
{
    if (s == NULL || s[0] != prefix[0] || s[0] == '\0' || s[1] != prefix[1] || s[1] == '\0')
        return false;
    for (size_t i = 2; i < SID_LEN; i++)
        if (!is_hex(s[i]))   /* also stops at a NUL before position 34 */
            return false;
    return s[SID_LEN] == '\0';
}

bool sid_token(char out[TOKEN_SIZE])
{
    unsigned char r[TOKEN_RAND_BYTES];
    /* EVP_EncodeBlock writes 4 chars per 3 bytes, padded, plus a NUL. */
    unsigned char b64[4 * ((TOKEN_RAND_BYTES + 2) / 3) + 1];
    bool ok = false;
    if (RAND_bytes(r, sizeof r) != 1)
        goto out;
    int n = EVP_EncodeBlock(b64, r, sizeof r);
    /* Strip padding and switch to the URL-safe alphabet, so the token can sit
     * in a URL path without escaping. */
    while (n > 0 && b64[n - 1] == '=')
        n--;
    if (n != TOKEN_SIZE - 1)
        goto out;
    for (int i = 0; i < n; i++) {
        char c = (char)b64[i];
        out[i] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    out[n] = '\0';
    ok = true;
out:
    OPENSSL_cleanse(r, sizeof r);
    OPENSSL_cleanse(b64, sizeof b64);
    return ok;
}

bool sid_equal_ct(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return false;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb)
        return false;
    return CRYPTO_memcmp(a, b, la) == 0;
}
