/* sim_keys — each API key's state: credits, Kaphila's rate limit and the
 * counters the control API shows (GET /sim/keys).
 *
 * The rate limit is the strict reading of Kaphila's "N requests per hour
 * per key": at most rate_limit requests to the limited endpoints are
 * accepted in any half-open interval [t, t + rate_window_ms), counted at
 * receipt (after injected latency, before the endpoint runs). A request
 * refused with 429 is not counted, so a client that keeps knocking is not
 * punished further; Kaphila's docs say nothing either way and this is the
 * reading a client can plan against. A fixed window (the simulator's first
 * model) lets 2N through across a boundary; a sliding one never does, so a
 * client that passes here passes any fixed-window Kaphila too.
 *
 * Loop thread only, but sim_key_init/fini (sim_create/sim_destroy, with
 * the loop not running). */
#include "sim_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/sid.h"

/* First ring size; it doubles up to the key's rate_limit. */
#define WIN_MIN_CAP 16

static const char *const ep_names[SIM_EP_COUNT] = {"makecall", "batchcall", "voice", "play",
                                                   "gather",   "hangup",    "other"};
static const int injected_status[5] = {401, 402, 429, 500, 503};

static int endpoint_of(const char *path)
{
    for (int i = 0; i < SIM_EP_OTHER; i++)
        if (path[0] == '/' && strcmp(path + 1, ep_names[i]) == 0)
            return i;
    return SIM_EP_OTHER;
}

void sim_key_init(const sim *s, sim_key *k, char *key)
{
    memset(k, 0, sizeof *k);
    k->key = key;
    k->created_ms = sim_wall_ms();
    sim_key_reset(s, k);
}

void sim_key_fini(sim_key *k)
{
    free(k->key);
    free(k->win);
    k->key = NULL;
    k->win = NULL;
}

void sim_key_reset(const sim *s, sim_key *k)
{
    k->credits = s->cfg.credits;
    k->total_calls = 0;
    k->successful_calls = 0;
    k->rate_limit = s->cfg.rate_limit;
    k->rate_window_ms = s->cfg.rate_window_ms;
    k->win_head = k->win_n = 0;
    memset(k->accepted, 0, sizeof k->accepted);
    k->rate_limited = 0;
    memset(k->injected, 0, sizeof k->injected);
}

static int64_t win_at(const sim_key *k, size_t i)
{
    return k->win[(k->win_head + i) % k->win_cap];
}

/* Copies the ring into a new one of cap entries, keeping the newest. */
static int win_resize(sim_key *k, size_t cap)
{
    int64_t *w = cap ? malloc(cap * sizeof *w) : NULL;
    if (cap && !w)
        return -1;
    size_t keep = k->win_n < cap ? k->win_n : cap;
    for (size_t i = 0; i < keep; i++)
        w[i] = win_at(k, k->win_n - keep + i);
    free(k->win);
    k->win = w;
    k->win_cap = cap;
    k->win_head = 0;
    k->win_n = keep;
    return 0;
}

bool sim_key_admit(sim *s, sim_key *k, const char *path)
{
    int ep = endpoint_of(path);
    if (ep == SIM_EP_OTHER || k->rate_limit <= 0)
        return true;
    int64_t now = loop_now_ms(s->loop);
    while (k->win_n > 0 && now - k->win[k->win_head] >= k->rate_window_ms) {
        k->win_head = (k->win_head + 1) % k->win_cap;
        k->win_n--;
    }
    if (k->win_n >= (size_t)k->rate_limit) {
        k->rate_limited++;
        return false;
    }
    if (k->win_n == k->win_cap) {
        size_t cap = k->win_cap ? k->win_cap * 2 : WIN_MIN_CAP;
        if (cap > (size_t)k->rate_limit)
            cap = (size_t)k->rate_limit;
        if (win_resize(k, cap) != 0) {
            /* Refusing is the strict answer: accepting uncounted could let
             * more than the limit through. */
            log_warn("sim", "rate limit window: out of memory, request refused");
            k->rate_limited++;
            return false;
        }
    }
    k->win[(k->win_head + k->win_n) % k->win_cap] = now;
    k->win_n++;
    return true;
}

void sim_key_count(sim_key *k, const char *path)
{
    k->accepted[endpoint_of(path)]++;
}

void sim_key_count_injected(sim_key *k, int status)
{
    for (size_t i = 0; i < sizeof injected_status / sizeof *injected_status; i++)
        if (injected_status[i] == status)
            k->injected[i]++;
}

int sim_key_set_limit(sim_key *k, int limit, int window_ms)
{
    /* A lower limit keeps only the newest receipts that fit: the next
     * request then waits for the oldest kept one to leave the window. */
    if ((size_t)limit < k->win_n && win_resize(k, (size_t)limit) != 0)
        return -1;
    k->rate_limit = limit;
    k->rate_window_ms = window_ms;
    return 0;
}

json_t *sim_key_json(const sim *s, size_t i)
{
    const sim_key *k = &s->keys[i];
    char key_id[32];
    snprintf(key_id, sizeof key_id, "key_%zu", i + 1);
    json_t *req = json_object();
    long limited = 0;
    for (int e = 0; e < SIM_EP_COUNT; e++) {
        json_object_set_new(req, ep_names[e], json_integer(k->accepted[e]));
        if (e != SIM_EP_OTHER)
            limited += k->accepted[e];
    }
    json_t *inj = json_object();
    for (size_t e = 0; e < sizeof injected_status / sizeof *injected_status; e++) {
        char st[8];
        snprintf(st, sizeof st, "%d", injected_status[e]);
        json_object_set_new(inj, st, json_integer(k->injected[e]));
    }
    /* The window as it stands: receipts older than the window still in
     * the ring are pruned only by the next request, so count them here. */
    int64_t now = loop_now_ms(s->loop);
    long in_window = 0;
    for (size_t j = 0; j < k->win_n; j++)
        if (now - win_at(k, j) < k->rate_window_ms)
            in_window++;
    return json_pack("{s:i, s:s, s:s, s:f, s:i, s:i, s:i, s:I, s:o, s:I, s:I, s:o, s:I, s:I}",
                     "id", (int)i + 1, "keyId", key_id, "key", k->key, "credits", k->credits,
                     "rateLimit", k->rate_limit, "rateWindowMs", k->rate_window_ms,
                     "inWindow", (int)in_window, "limitedAccepted", (json_int_t)limited,
                     "requests", req, "rateLimited", (json_int_t)k->rate_limited,
                     "injected429", (json_int_t)k->injected[2], "injected", inj,
                     "totalCalls", (json_int_t)k->total_calls,
                     "successfulCalls", (json_int_t)k->successful_calls);
}

int sim_key_lookup(const sim *s, const char *id)
{
    int i = sim_key_index(s, id);
    if (i >= 0)
        return i;
    if (strncmp(id, "key_", 4) == 0)
        id += 4;
    if (!*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 6)
        return -1;
    long n = strtol(id, NULL, 10);
    return n >= 1 && (size_t)n <= s->n_keys ? (int)n - 1 : -1;
}

void sim_key_note_refusal(sim *s, sim_req *r, int key)
{
    int ep = endpoint_of(r->path);
    if (ep == SIM_EP_MAKECALL || ep == SIM_EP_BATCHCALL || !r->body->len)
        return;
    json_t *o = json_loadb(r->body->data, r->body->len, 0, NULL);
    const char *id = json_string_value(json_object_get(o, "callId"));
    sim_call *c = id ? sim_call_find(s, id) : NULL;
    if (c && sim_call_key(c) == key)
        sim_call_note_request(c, r, true);
    json_decref(o);
}
