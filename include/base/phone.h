/* phone — endpoint validation and display formatting for To/From.
 *
 * Twilio endpoints are E.164 numbers (+ and 8–15 digits; lenient input such
 * as "+1 (415) 555-1212" or "14155551212" is normalised), "client:name",
 * "sip:user@host" and "sim:SID". Kaphila dials numbers only, so phone_kind
 * lets the caller refuse the rest with the right Twilio code.
 * Pure functions, any thread. */
#ifndef TWIGATE_PHONE_H
#define TWIGATE_PHONE_H

#include <stdbool.h>
#include <stddef.h>

#define PHONE_MAX 64   /* longest endpoint we keep; longer is invalid */

typedef enum {
    PHONE_INVALID = 0,
    PHONE_E164,      /* normalised into "+<digits>" */
    PHONE_CLIENT,    /* client:identity */
    PHONE_SIP,       /* sip:… */
    PHONE_SIM,       /* sim:DE… */
} phone_kind;

/* Classifies in and writes its normalised form into out (size PHONE_MAX).
 * Numbers: strips spaces, dashes, dots and parentheses; accepts a missing '+'
 * when 10 digits (NANP, +1 added) or 11–15 digits; rejects letters. */
phone_kind phone_normalize(const char *in, char out[PHONE_MAX]);
/* Display form: NANP (+1 and 10 digits) as "(415) 867-5309", anything else
 * as given. */
void phone_format(const char *e164, char out[PHONE_MAX]);
/* Kaphila's form of an E.164 number: the digits without '+'. */
void phone_kaphila(const char *e164, char out[PHONE_MAX]);

#endif
