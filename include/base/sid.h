/* sid — Twilio resource identifiers and unguessable tokens.
 *
 * A SID is a 2-letter prefix plus 32 lowercase hex characters (34 chars), as
 * real Twilio emits them. A new SID's first 12 digits are its creation time
 * (ms), so SIDs sort by age; the other 20 come from OpenSSL's CSPRNG (80
 * bits), so they still double as unguessable names. Any thread. */
#ifndef TWIGATE_SID_H
#define TWIGATE_SID_H

#include <stdbool.h>
#include <stddef.h>

#define SID_LEN  34
#define SID_SIZE 35             /* with NUL */
#define TOKEN_SIZE 44           /* 12 hex digits of time + 31 base64url (186 random bits) + NUL */

/* Fills out with prefix ("CA", "RE", …) + 12 hex digits of the time in ms +
 * 20 random hex digits. Returns false only if the CSPRNG fails. */
__attribute__((warn_unused_result))
bool sid_new(const char prefix[2], char out[SID_SIZE]);
/* True when s is exactly prefix + 32 hex digits (either case). */
bool sid_valid(const char *s, const char prefix[2]);
/* Token for per-call Kaphila webhook URLs and idempotency tokens: the time
 * in ms (12 hex digits, so tokens sort by age) + 186 random bits in 31
 * base64url characters; 43 characters, URL-safe. */
__attribute__((warn_unused_result))
bool sid_token(char out[TOKEN_SIZE]);
/* Constant-time comparison of two NUL-terminated strings (length leaks only). */
bool sid_equal_ct(const char *a, const char *b);

#endif
