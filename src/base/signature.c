/* signature — X-Twilio-Signature via OpenSSL's EVP_MAC (HMAC-SHA1).
 *
 * The MAC is fed piece by piece (URL, then name and value of each sorted
 * parameter), so signing a large body needs no concatenated copy of it.
 * Identical name=value pairs are fed once: the SDK validators (python ≥ 7.14,
 * node) sign the set of distinct values, and we must agree with them. */
#include "base/signature.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define SHA1_LEN   20
#define SHA256_LEN 32

static int pair_cmp(const void *a, const void *b)
{
    const form_pair *x = *(const form_pair *const *)a;
    const form_pair *y = *(const form_pair *const *)b;
    int c = strcmp(x->key, y->key);   /* strcmp compares as unsigned char: byte order */
    return c != 0 ? c : strcmp(x->value, y->value);
}

/* HMAC's implementation, fetched once: a fetch per signature looked it up in
 * OpenSSL's method store, behind its lock, for every callback. Never freed
 * (one per process, like OpenSSL's own defaults). */
static EVP_MAC *hmac;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
    hmac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
}

static bool mac_str(EVP_MAC_CTX *ctx, const char *s)
{
    return EVP_MAC_update(ctx, (const unsigned char *)s, strlen(s)) == 1;
}

bool signature_compute(const char *auth_token, const char *url, const form *params,
                       char out[SIGNATURE_SIZE])
{
    bool ok = false;
    EVP_MAC_CTX *ctx = NULL;
    const form_pair **sorted = NULL;
    size_t n = params != NULL ? params->n : 0;
    unsigned char md[SHA1_LEN];
    size_t mdlen = 0;

    out[0] = '\0';
    if (auth_token == NULL || url == NULL)
        goto out;
    if (n > 0) {
        sorted = malloc(n * sizeof *sorted);
        if (sorted == NULL)
            goto out;
        for (size_t i = 0; i < n; i++)
            sorted[i] = &params->pairs[i];
        qsort(sorted, n, sizeof *sorted, pair_cmp);
    }
    pthread_once(&hmac_once, hmac_fetch);
    if (hmac == NULL)
        goto out;
    ctx = EVP_MAC_CTX_new(hmac);
    if (ctx == NULL)
        goto out;
    OSSL_PARAM mp[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA1", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(ctx, (const unsigned char *)auth_token, strlen(auth_token), mp) != 1)
        goto out;
    if (!mac_str(ctx, url))
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && pair_cmp(&sorted[i - 1], &sorted[i]) == 0)
            continue;
        if (!mac_str(ctx, sorted[i]->key) || !mac_str(ctx, sorted[i]->value))
            goto out;
    }
    if (EVP_MAC_final(ctx, md, &mdlen, sizeof md) != 1 || mdlen != SHA1_LEN)
        goto out;
    /* 20 bytes → 28 base64 characters with '=' padding, plus the NUL. */
    if (EVP_EncodeBlock((unsigned char *)out, md, SHA1_LEN) != SIGNATURE_SIZE - 1)
        goto out;
    ok = true;
out:
    if (!ok)
        out[0] = '\0';
    EVP_MAC_CTX_free(ctx);
    free(sorted);
    return ok;
}

void signature_body_sha256(const void *body, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_LEN];
    unsigned int mdlen = 0;
    if (EVP_Digest(body, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != SHA256_LEN) {
        out[0] = '\0';   /* only if OpenSSL itself is broken */
        return;
    }
    for (size_t i = 0; i < SHA256_LEN; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}
