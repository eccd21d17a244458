/* sid — Twilio resource identifiers and unguessable tokens.
 *
 * A SID is a 2-letter prefix plus 32 lowercase hex characters (34 chars), as
 * real Twilio emits them. New SIDs come from OpenSSL's CSPRNG, so they double
 * as unguessable names. Any thread. */
#ifndef TWIGATE_SID_H
#define TWIGATE_SID_H

#include <stdbool.h>
#include <stddef.h>

#define SID_LEN  34
#define SID_SIZE 35             /* with NUL */
#define TOKEN_SIZE 44           /* 32 random bytes, base64url without padding + NUL */

/* Fills out with prefix ("CA", "RE", …) + 32 random hex digits. Returns false
 * only if the CSPRNG fails. */
__attribute__((warn_unused_result))
bool sid_new(const char prefix[2], char out[SID_SIZE]);
/* True when s is exactly prefix + 32 hex digits (either case). */
bool sid_valid(const char *s, const char prefix[2]);
/* 256-bit random token, base64url, for per-call Kaphila webhook URLs and
 * idempotency tokens. */
__attribute__((warn_unused_result))
bool sid_token(char out[TOKEN_SIZE]);
/* Constant-time comparison of two NUL-terminated strings (length leaks only). */
bool sid_equal_ct(const char *a, const char *b);

#endif
