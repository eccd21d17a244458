/* sid — SIDs (creation time + CSPRNG bits) and tokens (CSPRNG).
 *
 * RAND_bytes is thread-safe in OpenSSL 3, so no locking is needed here. */
#include "base/sid.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define SID_TIME_BYTES   6   /* 48-bit Unix time in ms: 12 hex digits */
#define SID_RAND_BYTES  10   /* 80 bits: 20 hex digits */
#define TOKEN_TIME_DIGITS 12  /* the same 48-bit ms time, in hex */
#define TOKEN_RAND_BYTES 24   /* 32 base64url chars, of which the token keeps 31 */

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* The time prefix makes new SIDs sort after older ones (ms resolution), so
 * an index on a SID column grows at its right edge, as one on an
 * autoincrement id does: the calls' `sid` index and every index that leads
 * with a call's SID (`call_events`, recordings, notifications) then touch one
 * hot leaf per commit instead of one random leaf per row, which is fewer
 * pages in each commit's WAL frames and in the checkpointer's copies
 * (docs/performance.md). Twilio clients treat SIDs as opaque strings; the
 * creation time a SID reveals is in its resource's date_created anyway, and
 * 80 random bits still make one unguessable. */
bool sid_new(const char prefix[2], char out[SID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[SID_TIME_BYTES + SID_RAND_BYTES];
    uint64_t ms = now_ms();
    for (int i = 0; i < SID_TIME_BYTES; i++)
        r[i] = (unsigned char)(ms >> (8 * (SID_TIME_BYTES - 1 - i)));
    if (RAND_bytes(r + SID_TIME_BYTES, SID_RAND_BYTES) != 1)
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

/* A token is 12 hex digits of the time in ms, for the same reason as a SID
 * (the calls' `token` index grows at its right edge), then 31 base64url
 * characters of CSPRNG output: 186 random bits, well past the 128 a secret
 * in a URL needs. */
bool sid_token(char out[TOKEN_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[TOKEN_RAND_BYTES];
    unsigned char b64[4 * (TOKEN_RAND_BYTES / 3) + 1];   /* 32 chars + NUL, no padding */
    bool ok = false;
    if (RAND_bytes(r, sizeof r) != 1)
        goto out;
    if (EVP_EncodeBlock(b64, r, sizeof r) != 4 * (TOKEN_RAND_BYTES / 3))
        goto out;
    uint64_t ms = now_ms();
    for (int i = 0; i < TOKEN_TIME_DIGITS; i++)
        out[i] = hex[(ms >> (4 * (TOKEN_TIME_DIGITS - 1 - i))) & 15];
    /* Switch to the URL-safe alphabet, so the token can sit in a URL path
     * without escaping. */
    for (int i = 0; i < TOKEN_SIZE - 1 - TOKEN_TIME_DIGITS; i++) {
        char c = (char)b64[i];
        out[TOKEN_TIME_DIGITS + i] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    out[TOKEN_SIZE - 1] = '\0';
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
