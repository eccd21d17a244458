/* sim_control — the simulator's own control API under /sim/ (tests and
 * demos drive the far end with it): DTMF and hang-up by the callee, call
 * transcripts, failure and latency injection, a padded GET /calls
 * listing, per-key counters, credits and rate limits (/sim/keys), reset.
 * Allowed from loopback peers, or from anywhere with X-Sim-Admin-Token when
 * an admin token is configured. Loop thread only. */
#include "sim_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/form.h"
#include "base/sid.h"

#define MAX_PATH_SEGS 5

static void reply_ok(sim_req *r)
{
    sim_reply_json(r, 200, json_pack("{s:b}", "success", 1));
}

/* The Digits of a form or JSON body ("Digits" or "digits"); heap string. */
static char *body_digits(sim_req *r)
{
    const char *b = r->body->data ? r->body->data : "";
    if (r->body->len > 0 && b[0] == '{') {
        json_t *o = json_loadb(b, r->body->len, 0, NULL);
        json_t *v = json_object_get(o, "Digits");
        if (!v)
            v = json_object_get(o, "digits");
        char *d = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
        json_decref(o);
        return d;
    }
    form f;
    form_init(&f);
    char *d = NULL;
    if (form_parse(&f, b, r->body->len) == FORM_OK) {
        const char *v = form_get(&f, "Digits");
        if (!v)
            v = form_get(&f, "digits");
        d = v ? strdup(v) : NULL;
    }
    form_fini(&f);
    return d;
}

static void control_call(sim *s, sim_req *r, const char *id, const char *action)
{
    bool get = strcmp(r->method, "GET") == 0;
    bool post = strcmp(r->method, "POST") == 0;
    sim_call *c = sim_call_find(s, id);
    if (!c) {
        sim_reply_error(r, 404, "Call not found", NULL);
        return;
    }
    if (!action && get) {
        json_t *t = sim_call_transcript(c);
        if (t)
            json_object_set_new(t, "success", json_true());
        sim_reply_json(r, 200, t);
        return;
    }
    if (action && post && strcmp(action, "hangup") == 0) {
        if (sim_call_hangup_far(c) != SIM_OK)
            sim_reply_error(r, 409, "Call already ended", NULL);
        else
            reply_ok(r);
        return;
    }
    if (action && post && strcmp(action, "digits") == 0) {
        char *d = body_digits(r);
        if (!d) {
            sim_reply_error(r, 400, "Digits is required", NULL);
            return;
        }
        switch (sim_call_press(c, d)) {
        case SIM_OK:
            sim_reply_json(r, 200, json_pack("{s:b, s:s, s:s}", "success", 1, "callId",
                                             sim_call_id(c), "digits", d));
            break;
        case SIM_ERR_ENDED:
            sim_reply_error(r, 409, "Call already ended", NULL);
            break;
        case SIM_ERR_NOT_ANSWERED:
            sim_reply_error(r, 409, "Call not answered", NULL);
            break;
        case SIM_ERR_FULL:
            sim_reply_error(r, 429, "Too many digits pending", NULL);
            break;
        default:
            sim_reply_error(r, 400, "Digits must be 0-9, *, #, A-D", NULL);
            break;
        }
        free(d);
        return;
    }
    sim_reply_error(r, 404, "Endpoint not found", NULL);
}

static void control_calls(sim *s, sim_req *r)
{
    json_t *arr = json_array();
    for (sim_call *c = sim_calls_first(s); c; c = sim_calls_next(c))
        json_array_append_new(arr, sim_call_brief(c));
    sim_reply_json(r, 200, json_pack("{s:b, s:o}", "success", 1, "calls", arr));
}

/* key in a control body: a configured key, or absent for every key. */
static bool body_key(sim *s, sim_req *r, json_t *o, int *key)
{
    json_t *k = json_object_get(o, "key");
    *key = -1;
    if (!k || json_is_null(k))
        return true;
    if (!json_is_string(k) || (*key = sim_key_index(s, json_string_value(k))) < 0) {
        sim_reply_error(r, 400, "key is not a configured API key", NULL);
        return false;
    }
    return true;
}

static void control_fail(sim *s, sim_req *r)
{
    if (strcmp(r->method, "DELETE") == 0) {
        s->n_rules = 0;
        reply_ok(r);
        return;
    }
    json_t *o = sim_req_json(r);
    if (!o)
        return;
    int key;
    if (!body_key(s, r, o, &key))
        goto out;
    json_t *st = json_object_get(o, "status");
    json_t *cnt = json_object_get(o, "count");
    json_t *ep = json_object_get(o, "endpoint");
    int status = json_is_integer(st) ? (int)json_integer_value(st) : 0;
    if (status != 401 && status != 402 && status != 429 && status != 500 && status != 503) {
        sim_reply_error(r, 400, "status must be 401, 402, 429, 500 or 503", NULL);
        goto out;
    }
    long count = 1;
    if (cnt && !json_is_null(cnt)) {
        if (!json_is_integer(cnt) || (json_integer_value(cnt) < 1 && json_integer_value(cnt) != -1)) {
            sim_reply_error(r, 400, "count must be a positive integer or -1", NULL);
            goto out;
        }
        count = (long)json_integer_value(cnt);
    }
    sim_rule rule = {.key = key, .status = status, .count = count};
    if (ep && !json_is_null(ep)) {
        const char *e = json_string_value(ep);
        if (!e || e[0] != '/' || strlen(e) >= sizeof rule.endpoint) {
            sim_reply_error(r, 400, "endpoint must be a path like /makecall", NULL);
            goto out;
        }
        memcpy(rule.endpoint, e, strlen(e) + 1);
    }
    if (s->n_rules >= SIM_MAX_RULES) {
        sim_reply_error(r, 429, "Too many failure rules", NULL);
        goto out;
    }
    s->rules[s->n_rules++] = rule;
    reply_ok(r);
out:
    json_decref(o);
}

static void control_latency(sim *s, sim_req *r)
{
    json_t *o = sim_req_json(r);
    if (!o)
        return;
    int key;
    if (!body_key(s, r, o, &key))
        goto out;
    json_t *ms = json_object_get(o, "ms");
    if (!json_is_integer(ms) || json_integer_value(ms) < 0 ||
        json_integer_value(ms) > SIM_MAX_LATENCY_MS) {
        sim_reply_error(r, 400, "ms must be an integer between 0 and 60000", NULL);
        goto out;
    }
    int v = (int)json_integer_value(ms);
    if (key >= 0) {
        s->latency_key_ms[key] = v;
    } else {
        s->latency_all_ms = v;
        for (size_t i = 0; i < s->n_keys; i++)
            s->latency_key_ms[i] = -1;
    }
    reply_ok(r);
out:
    json_decref(o);
}

/* POST /sim/listing {"ended": N}: every GET /calls also lists N ended
 * calls (0 clears). */
static void control_listing(sim *s, sim_req *r)
{
    json_t *o = sim_req_json(r);
    if (!o)
        return;
    json_t *n = json_object_get(o, "ended");
    if (!json_is_integer(n) || json_integer_value(n) < 0 ||
        json_integer_value(n) > SIM_MAX_LISTED_ENDED)
        sim_reply_error(r, 400, "ended must be an integer between 0 and 100000", NULL);
    else {
        s->listed_ended = (int)json_integer_value(n);
        reply_ok(r);
    }
    json_decref(o);
}

static void control_reset(sim *s, sim_req *r)
{
    sim_calls_reset(s);
    s->n_rules = 0;
    s->listed_ended = 0;
    s->latency_all_ms = 0;
    for (size_t i = 0; i < s->n_keys; i++) {
        s->latency_key_ms[i] = -1;
        sim_key_reset(s, &s->keys[i]);
    }
    reply_ok(r);
}

static void control_keys_list(sim *s, sim_req *r)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < s->n_keys; i++)
        json_array_append_new(arr, sim_key_json(s, i));
    sim_reply_json(r, 200, json_pack("{s:b, s:o}", "success", 1, "keys", arr));
}

/* A number field of a /sim/keys body within [min, max]; absent = keep *out. */
static bool body_number(sim_req *r, json_t *o, const char *name, double min, double max,
                        bool integer, double *out)
{
    json_t *v = json_object_get(o, name);
    if (!v)
        return true;
    if ((integer ? !json_is_integer(v) : !json_is_number(v)) || json_number_value(v) < min ||
        json_number_value(v) > max) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s must be %s between %.0f and %.0f", name,
                 integer ? "an integer" : "a number", min, max);
        sim_reply_error(r, 400, msg, NULL);
        return false;
    }
    *out = json_number_value(v);
    return true;
}

/* POST /sim/keys[/{id}[/credits]]: {credits, rateLimit, rateWindowMs}, any
 * of them; without an id, every key. All checked before any is applied. */
static void control_keys_set(sim *s, sim_req *r, const char *id)
{
    int key = -1;
    if (id && (key = sim_key_lookup(s, id)) < 0) {
        sim_reply_error(r, 404, "Key not found", NULL);
        return;
    }
    json_t *o = sim_req_json(r);
    if (!o)
        return;
    double credits = -1, limit = -1, window = -1;
    if (!body_number(r, o, "credits", 0, SIM_CREDITS_MAX, false, &credits) ||
        !body_number(r, o, "rateLimit", 0, SIM_RATE_LIMIT_MAX, true, &limit) ||
        !body_number(r, o, "rateWindowMs", 1, SIM_RATE_WINDOW_MS_MAX, true, &window))
        goto out;
    size_t from = key >= 0 ? (size_t)key : 0, to = key >= 0 ? (size_t)key + 1 : s->n_keys;
    for (size_t i = from; i < to; i++) {
        sim_key *k = &s->keys[i];
        if (credits >= 0)
            k->credits = credits;
        if ((limit >= 0 || window >= 0) &&
            sim_key_set_limit(k, limit >= 0 ? (int)limit : k->rate_limit,
                              window >= 0 ? (int)window : k->rate_window_ms) != 0) {
            sim_reply_error(r, 500, "Out of memory", NULL);
            goto out;
        }
    }
    if (key >= 0)
        sim_reply_json(r, 200, json_pack("{s:b, s:o}", "success", 1, "key", sim_key_json(s, (size_t)key)));
    else
        reply_ok(r);
out:
    json_decref(o);
}

/* /sim/keys/reset: counters, windows, credits and limits back to the
 * configuration; calls, injections and latency stay. */
static void control_keys_reset(sim *s, sim_req *r)
{
    for (size_t i = 0; i < s->n_keys; i++)
        sim_key_reset(s, &s->keys[i]);
    reply_ok(r);
}

static void control_keys(sim *s, sim_req *r, char **seg, size_t n)
{
    bool get = strcmp(r->method, "GET") == 0;
    bool post = strcmp(r->method, "POST") == 0;
    if (n == 2 && get)
        control_keys_list(s, r);
    else if (n == 2 && post)
        control_keys_set(s, r, NULL);
    else if (n == 3 && post && strcmp(seg[2], "reset") == 0)
        control_keys_reset(s, r);
    else if (n == 3 && get) {
        int key = sim_key_lookup(s, seg[2]);
        if (key < 0)
            sim_reply_error(r, 404, "Key not found", NULL);
        else
            sim_reply_json(r, 200, json_pack("{s:b, s:o}", "success", 1, "key", sim_key_json(s, (size_t)key)));
    } else if ((n == 3 || (n == 4 && strcmp(seg[3], "credits") == 0)) && post)
        control_keys_set(s, r, seg[2]);
    else
        sim_reply_error(r, 404, "Endpoint not found", NULL);
}

static bool allowed(const sim *s, const sim_req *r)
{
    if (r->loopback)
        return true;
    return s->cfg.admin_token && r->admin && sid_equal_ct(r->admin, s->cfg.admin_token);
}

void sim_control_route(sim *s, sim_req *r)
{
    if (!allowed(s, r)) {
        sim_reply_error(r, 403, "Control API is for loopback or X-Sim-Admin-Token", NULL);
        return;
    }
    char copy[512];
    char *seg[MAX_PATH_SEGS];
    size_t n = 0;
    if (strlen(r->path) >= sizeof copy) {
        sim_reply_error(r, 404, "Endpoint not found", NULL);
        return;
    }
    snprintf(copy, sizeof copy, "%s", r->path);
    char *save = NULL;
    for (char *t = strtok_r(copy, "/", &save); t && n < MAX_PATH_SEGS; t = strtok_r(NULL, "/", &save))
        seg[n++] = t;
    bool get = strcmp(r->method, "GET") == 0;
    bool post = strcmp(r->method, "POST") == 0;
    bool del = strcmp(r->method, "DELETE") == 0;
    /* seg[0] is "sim" */
    if (n == 2 && strcmp(seg[1], "calls") == 0 && get)
        control_calls(s, r);
    else if ((n == 3 || n == 4) && strcmp(seg[1], "calls") == 0)
        control_call(s, r, seg[2], n == 4 ? seg[3] : NULL);
    else if (n == 2 && strcmp(seg[1], "fail") == 0 && (post || del))
        control_fail(s, r);
    else if (n == 2 && strcmp(seg[1], "latency") == 0 && post)
        control_latency(s, r);
    else if (n == 2 && strcmp(seg[1], "listing") == 0 && post)
        control_listing(s, r);
    else if (n == 2 && strcmp(seg[1], "reset") == 0 && post)
        control_reset(s, r);
    else if (n >= 2 && n <= 4 && strcmp(seg[1], "keys") == 0)
        control_keys(s, r, seg, n);
    else
        sim_reply_error(r, 404, "Endpoint not found", NULL);
}
