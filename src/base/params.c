/* params.c — table-driven validation. Error messages name the parameter and
 * echo the value the way Twilio does ("Url is not a valid url: x"). */
#include "base/params.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest string parameter accepted when a spec gives no cap. */
#define PARAMS_DEFAULT_MAX_LEN 4096

bool params_url_ok(const char *s)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = false;
    if (!u || !s || !*s) goto out;
    if (curl_url_set(u, CURLUPART_URL, s, 0) != CURLUE_OK) goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) goto out;
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) goto out;
    ok = (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "https")) && host[0] &&
         strncasecmp(s, scheme, strlen(scheme)) == 0;   /* no scheme guessing */
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

/* The allowed value of values ('|' separated) that v[0..n) names, or NULL.
 * An exact match wins; otherwise a case-insensitive one, but only when it
 * is the only one: ported apps write Twilio's words in any case
 * ("enable", "detectmessageend", "Completed"), and an enum whose values
 * differ only in case would make that ambiguous, so there the case counts.
 * *len gets the length of the canonical spelling returned. */
static const char *canonical(const char *values, const char *v, size_t n, size_t *len)
{
    const char *fold = NULL;
    size_t fold_len = 0;
    int folds = 0;
    for (const char *p = values; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == n && strncmp(p, v, n) == 0) {
            *len = l;
            return p;
        }
        if (l == n && strncasecmp(p, v, n) == 0) {
            fold = p;
            fold_len = l;
            folds++;
        }
        p = bar ? bar + 1 : NULL;
    }
    if (folds != 1) return NULL;
    *len = fold_len;
    return fold;
}

#define FAIL(err, c, ...) \
    do { (err)->code = (c); snprintf((err)->message, sizeof (err)->message, __VA_ARGS__); } while (0)

static bool one(const param_spec *s, const char *v, json_t *out, param_error *err)
{
    switch (s->type) {
    case P_STR: case P_IGNORE: {
        size_t max = s->max > 0 ? (size_t)s->max : PARAMS_DEFAULT_MAX_LEN;
        if (strlen(v) > max) {
            err->code = s->code;
            snprintf(err->message, sizeof err->message, "%s is too long (at most %zu characters)",
                     s->name, max);
            return false;
        }
        json_object_set_new(out, s->key, json_string(v));
        return true;
    }
    case P_URL:
        if (!params_url_ok(v)) { FAIL(err, s->code, "%s is not a valid url: %s", s->name, v); return false; }
        json_object_set_new(out, s->key, json_string(v));
        return true;
    case P_METHOD:
        if (strcasecmp(v, "GET") && strcasecmp(v, "POST")) {
            FAIL(err, s->code, "%s must be either GET or POST, not '%s'", s->name, v);
            return false;
        }
        json_object_set_new(out, s->key, json_string(strcasecmp(v, "GET") ? "POST" : "GET"));
        return true;
    case P_BOOL:
        if (!strcasecmp(v, "true")) json_object_set_new(out, s->key, json_true());
        else if (!strcasecmp(v, "false")) json_object_set_new(out, s->key, json_false());
        else { FAIL(err, s->code, "%s must be true or false, not '%s'", s->name, v); return false; }
        return true;
    case P_INT: {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (!*v || *end || errno || n < s->min || n > s->max) {
            err->code = s->code;
            snprintf(err->message, sizeof err->message,
                     "%s must be an integer between %ld and %ld, not '%.64s'", s->name, s->min,
                     s->max, v);
            return false;
        }
        json_object_set_new(out, s->key, json_integer(n));
        return true;
    }
    case P_ENUM: {
        size_t len;
        const char *c = canonical(s->values, v, strlen(v), &len);
        if (!c) {
            err->code = s->code;
            snprintf(err->message, sizeof err->message, "%s must be one of %s, not '%.64s'",
                     s->name, s->values, v);
            return false;
        }
        json_object_set_new(out, s->key, json_stringn(c, len));   /* the canonical spelling */
        return true;
    }
    case P_LIST: {
        json_t *arr = json_object_get(out, s->key);
        if (!arr) {
            arr = json_array();
            json_object_set_new(out, s->key, arr);
        }
        for (const char *p = v; *p;) {
            size_t n = strcspn(p, " ,");
            if (n) {
                bool seen = false;
                size_t len;
                const char *c = canonical(s->values, p, n, &len);
                if (!c) {
                    err->code = s->code;
                    snprintf(err->message, sizeof err->message,
                             "Invalid '%s': '%.*s' is not one of %s", s->name, (int)(n > 64 ? 64 : n),
                             p, s->values);
                    return false;
                }
                for (size_t i = 0; i < json_array_size(arr); i++)
                    if (strlen(json_string_value(json_array_get(arr, i))) == len &&
                        !strncmp(json_string_value(json_array_get(arr, i)), c, len))
                        seen = true;
                if (!seen) json_array_append_new(arr, json_stringn(c, len));
            }
            p += n;
            while (*p == ' ' || *p == ',') p++;
        }
        return true;
    }
    }
    return false;
}

bool params_parse(const param_spec *table, const form *f, json_t *out, json_t *unknown,
                  param_error *err)
{
    for (size_t i = 0; i < f->n; i++) {
        const char *name = f->pairs[i].key;
        const param_spec *s = table;
        while (s->name && strcmp(s->name, name)) s++;
        if (!s->name) {
            if (unknown) json_array_append_new(unknown, json_string(name));
            continue;
        }
        /* An empty value means "not given" (curl users send Url= by
         * accident); only free-text parameters keep it. */
        if (!*f->pairs[i].value && s->type != P_STR) continue;
        if (!one(s, f->pairs[i].value, out, err)) return false;
    }
    return true;
}
