/* params — validates request parameters at the edge against a table
 * (name, type, bounds, allowed values, the Twilio error code to answer) and
 * turns them into a JSON object of typed values that the rest of twigate
 * trusts. Booleans, methods and enum/list words are case-insensitive
 * (python sends "True", ported apps write "enable") and stored in their
 * canonical spelling; list values may repeat the key or be space/comma
 * separated. Pure, any thread. */
#ifndef TWIGATE_PARAMS_H
#define TWIGATE_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include "base/form.h"

typedef enum {
    P_STR,      /* string, max = length cap */
    P_URL,      /* absolute http(s) URL with a host; fragment allowed (connection overrides) */
    P_METHOD,   /* GET | POST (case-insensitive), stored upper case */
    P_BOOL,     /* true/false, any case */
    P_INT,      /* decimal integer in [min, max] */
    P_ENUM,     /* one of values ("a|b|c"), any case when only one value matches that
                   way; stored as spelled in values */
    P_LIST,     /* one or more of values (matched as P_ENUM), stored as a JSON array of
                   distinct canonical strings */
    P_IGNORE,   /* accepted, kept as string, has no effect (reported by the caller) */
} param_type;

typedef struct param_spec {
    const char *name;     /* Twilio's form name, e.g. "StatusCallbackEvent" */
    const char *key;      /* key in the output object, e.g. "status_callback_event" */
    param_type  type;
    long        min, max; /* P_INT bounds; P_STR max length (0 = 4096) */
    const char *values;   /* P_ENUM / P_LIST allowed values, '|' separated */
    int         code;     /* Twilio code when the value is invalid */
} param_spec;

typedef struct param_error {
    int  code;
    char message[512];
} param_error;

/* Validates every parameter of f that table names into out (an object).
 * Names not in the table are collected into unknown (an array; may be NULL).
 * Returns false and fills err on the first invalid value. */
bool params_parse(const param_spec *table, const form *f, json_t *out, json_t *unknown,
                  param_error *err);
/* True when s is an absolute http(s) URL with a host (curl's URL parser). */
bool params_url_ok(const char *s);

#endif
