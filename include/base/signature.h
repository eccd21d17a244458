/* signature — X-Twilio-Signature, as Twilio computes it (contract §9).
 *
 * HMAC-SHA1 keyed with the account's auth token over the URL followed by each
 * POST parameter as name+value, sorted by name (byte order; equal names keep
 * their values sorted too), base64 with padding. For GET requests the
 * parameters are already in the URL and none are appended. The JSON-body
 * variant signs a URL that carries bodySHA256=<hex sha256 of body>.
 * Pure functions, any thread. */
#ifndef TWIGATE_SIGNATURE_H
#define TWIGATE_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>
#include "base/form.h"

#define SIGNATURE_SIZE 29   /* base64 of 20 bytes (28 chars) + NUL */

/* params may be NULL (GET, or bodySHA256 variant). */
__attribute__((warn_unused_result))
bool signature_compute(const char *auth_token, const char *url, const form *params,
                       char out[SIGNATURE_SIZE]);
/* Lowercase hex SHA-256 of body (65 bytes with NUL). */
void signature_body_sha256(const void *body, size_t len, char out[65]);

#endif
