/* form — application/x-www-form-urlencoded bodies and query strings.
 *
 * Decoding keeps repeated keys in order (Twilio lists arrive as repeated
 * keys: StatusCallbackEvent=a&StatusCallbackEvent=b). '+' decodes to space.
 * Encoding produces what Twilio sends to webhooks: spaces as '+', every byte
 * outside [A-Za-z0-9*-._] percent-encoded, uppercase hex (the WHATWG
 * application/x-www-form-urlencoded serializer, as browsers and Java's
 * URLEncoder do it; Python's urlencode differs only in '~' and '*', which
 * every decoder reads back the same).
 * Any thread; a form is owned by its creator. */
#ifndef TWIGATE_FORM_H
#define TWIGATE_FORM_H

#include <stdbool.h>
#include <stddef.h>
#include "base/buf.h"

/* Caps, with their reasons: Twilio's largest create has ~40 parameters and the
 * longest value is Twiml (4000 chars); anything far beyond is abuse. */
#define FORM_MAX_PAIRS     256
#define FORM_MAX_VALUE_LEN 65536

typedef struct form_pair { char *key; char *value; } form_pair;

/* The pairs' strings live in chunks the form owns (a callback's ~30 pairs cost
 * two or three allocations, not sixty): a key or value stays valid until
 * form_fini, even after form_set_value replaced it. */
typedef struct form_chunk form_chunk;

typedef struct form {
    form_pair  *pairs;
    size_t      n;
    size_t      alloc;
    form_chunk *chunks;   /* newest first */
} form;

typedef enum {
    FORM_OK = 0,
    FORM_ERR_TOO_MANY,   /* more than FORM_MAX_PAIRS */
    FORM_ERR_TOO_LONG,   /* a key or value longer than FORM_MAX_VALUE_LEN */
    FORM_ERR_ENCODING,   /* bad %XX escape or a NUL byte */
    FORM_ERR_NOMEM,
} form_status;

void form_init(form *f);
void form_fini(form *f);
/* Parses len bytes (need not be NUL-terminated) and appends the pairs. */
__attribute__((warn_unused_result))
form_status form_parse(form *f, const char *s, size_t len);
__attribute__((warn_unused_result))
form_status form_add(form *f, const char *key, const char *value);
/* Replaces the value of pair i (< f->n) with a copy of value. */
__attribute__((warn_unused_result))
form_status form_set_value(form *f, size_t i, const char *value);
/* First value for key (exact, case-sensitive), or NULL. */
const char *form_get(const form *f, const char *key);
/* Number of values for key. */
size_t form_count(const form *f, const char *key);
/* The i-th value (0-based) for key, or NULL. */
const char *form_get_nth(const form *f, const char *key, size_t i);
/* Appends the encoded form (k=v&k=v, in insertion order) to out. */
__attribute__((warn_unused_result))
buf_status form_encode(const form *f, buf *out);
/* Appends one percent-encoded component (as form_encode encodes values). */
__attribute__((warn_unused_result))
buf_status form_escape(buf *out, const char *s);
/* Decodes a single percent-encoded component into a new heap string
 * (plus_is_space selects form semantics). NULL on bad encoding. */
char *form_unescape(const char *s, size_t len, bool plus_is_space);

#endif
