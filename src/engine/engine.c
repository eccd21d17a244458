/* engine.c — the call engine on its own loop thread.
 *
 * Map of this file:
 *   1. the call table (hash by CallSid) and call lifetime (refs);
 *   2. transactions: every state change commits the call row, the outbox
 *      rows it causes and the Kaphila event it consumes together; the
 *      deliveries start only after the commit;
 *   3. status callbacks (contract §8.3) and the AMD callback;
 *   4. the outbox: one ordered queue per call, delivered with webhook.c;
 *   5. Kaphila events → the Twilio status ladder (never backwards);
 *   6. messages from HTTP threads: originate, update, event;
 *   7. services for the executor (engine_int.h);
 *   8. start-up recovery and shutdown.
 *
 * Status ladder (rank): queued 0 < initiated 1 < ringing 2 < in-progress 3
 * < terminal 4. An event only ever raises the rank, so duplicated or late
 * Kaphila events cannot move a call backwards or repeat a callback. */
#include "engine_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "store/calljson.h"
#include "base/errors.h"
#include "net/kevent.h"
#include "net/bio.h"
#include "net/netpolicy.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/phone.h"
#include "engine/recordings.h"
#include "base/sid.h"
#include "base/timefmt.h"
#include "sim/sim.h"

enum { RANK_QUEUED, RANK_INITIATED, RANK_RINGING, RANK_ANSWERED, RANK_OVER };
enum { CB_INITIATED = 1, CB_RINGING = 2, CB_ANSWERED = 4, CB_COMPLETED = 8 };

/* Hash buckets for live calls and outbox queues (power of two). Chains stay
 * short up to limits.max_live_calls (20,000 by default). */
#define ENGINE_BUCKETS 16384
/* Outbox rows a call can have queued; a call produces at most a dozen. */
#define ENGINE_MAX_OUTBOX_PER_CALL 256

typedef enum { M_ORIGINATE, M_UPDATE, M_DELETE, M_KEVENT, M_RECOVER, M_CALLBACK } mkind;

typedef struct emsg {
    mkind      k;
    engine_reply r;           /* ops NULL: nothing to answer (start-up replay) */
    store_call call;          /* M_ORIGINATE */
    json_t    *j;             /* update or event */
    int64_t    kid;           /* kevent id (a stored event replayed at start-up), 0 = posted */
    char       token[TOKEN_SIZE];   /* M_KEVENT posted by Kaphila */
    char       sid[SID_SIZE];
    char       account_sid[SID_SIZE];
    void     (*fn)(engine *e, void *arg);   /* M_CALLBACK */
    void      *arg;
} emsg;

typedef struct ob_item {
    store_outbox    o;
    struct ob_item *next;
} ob_item;

/* A reply that waits for the open batch to commit: a Kaphila event applied
 * in it (json NULL: 200, or its rescue), or a REST reply showing state
 * written in it. */
typedef struct ack {
    engine_reply r;
    char     *json;     /* REST body (owned), NULL for a Kaphila event */
    int       status;   /* REST status */
    char      call_sid[SID_SIZE];
} ack;

typedef struct obq {
    char        call_sid[SID_SIZE];
    ob_item    *head, *tail;
    int         n;
    bool        busy;
    struct obq *hnext;
} obq;

struct engine {
    app           *a;
    loop          *l;
    bio           *bio;                       /* file work off this thread (recordings) */
    store_conn    *db;
    kaphila_client kc;
    call          *calls[ENGINE_BUCKETS];
    call          *by_token[ENGINE_BUCKETS];
    obq           *queues[ENGINE_BUCKETS];
    ob_item       *kick_head, *kick_tail;     /* committed in this step, to deliver */
    ack           *acks;                      /* answered when the batch commits */
    size_t         n_acks, cap_acks;
    call         **origs;                     /* created in the batch: /makecall after it commits */
    size_t         n_origs, cap_origs;
    atomic_size_t  live;
    atomic_int     inflight_deliveries;
    atomic_bool    kaphila_ok;     /* last /health probe answered 2xx */
    bool           probing;
    bool           started;
    bool           stopping;       /* engine_destroy: start nothing new */
    bool           batch;          /* a write transaction is open (see txn_begin) */
    const kevent  *ending;         /* the call.ended being applied, for finish_call's log line */
    netpolicy     *policy;         /* customer destinations; see engine_policy */
    const config  *policy_cfg;     /* the config policy was last checked against */
    reconciler    *rc;             /* reconcile.c's state */
    bool           resync;         /* a batch was lost: memory is ahead of the store */
};

/* /readyz reports Kaphila's reachability from this probe, so the endpoint
 * itself never waits on the network; a few seconds of staleness is fine. */
#define ENGINE_HEALTH_PROBE_MS 2000

static size_t bucket(const char *sid)
{
    size_t h = 2166136261u;
    for (; *sid; sid++) h = (h ^ (unsigned char)*sid) * 16777619u;
    return h & (ENGINE_BUCKETS - 1);
}

/* ---------------------------------------------------------------- 1 */

static call *call_find(engine *e, const char *sid)
{
    for (call *c = e->calls[bucket(sid)]; c; c = c->hnext)
        if (!strcmp(c->row.sid, sid)) return c;
    return NULL;
}

/* Live calls by their event token: Kaphila's events name the call only by
 * it, and a live call is found without a database read. */
static call *call_find_token(engine *e, const char *token)
{
    for (call *c = e->by_token[bucket(token)]; c; c = c->tnext)
        if (!strcmp(c->row.token, token)) return c;
    return NULL;
}

static void call_unlink(engine *e, call *c)
{
    call **pp = &e->calls[bucket(c->row.sid)];
    while (*pp && *pp != c) pp = &(*pp)->hnext;
    if (*pp) {
        *pp = c->hnext;
        atomic_fetch_sub(&e->live, 1);
    }
    c->hnext = NULL;
    pp = &e->by_token[bucket(c->row.token)];
    while (*pp && *pp != c) pp = &(*pp)->tnext;
    if (*pp) *pp = c->tnext;
    c->tnext = NULL;
}

static call *call_new(engine *e, store_call *row)
{
    call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->e = e;
    c->row = *row;                 /* takes row->params */
    row->params = NULL;
    c->refs = 1;                   /* the table's reference */
    c->rank = (int)json_integer_value(json_object_get(c->row.params, "rank"));
    c->last_event_ms = loop_now_ms(e->l);
    size_t b = bucket(c->row.sid);
    c->hnext = e->calls[b];
    e->calls[b] = c;
    b = bucket(c->row.token);
    c->tnext = e->by_token[b];
    e->by_token[b] = c;
    atomic_fetch_add(&e->live, 1);
    return c;
}

void call_ref(call *c) { c->refs++; }

void call_unref(call *c)
{
    if (--c->refs > 0) return;
    exec_free(c);
    store_call_fini(&c->row);
    free(c);
}

bool call_is_over(const call *c) { return c->over; }
loop *call_loop(call *c) { return c->e->l; }
const config *call_config(call *c) { return app_config(c->e->a); }
const config_account *call_account(call *c)
{
    return config_account_by_sid(app_config(c->e->a), c->row.account_sid);
}
const char *call_public_url(call *c) { return c->e->a->public_url; }
const char *call_sound_map(call *c)
{
    const config *cfg = call_config(c);
    return cfg->play_sound_map ? cfg->play_sound_map : "";
}
const char *call_sound_prefix(call *c)
{
    const config *cfg = call_config(c);
    return cfg->play_sound_prefix ? cfg->play_sound_prefix : "custom/";
}
int64_t call_answered_ms(call *c)
{
    return c->row.answered_at ? timefmt_now_ms() - c->row.answered_at : 0;
}

static const char *param_str(const call *c, const char *key)
{
    return json_string_value(json_object_get(c->row.params, key));
}

static int cb_done(const call *c)
{
    return (int)json_integer_value(json_object_get(c->row.params, "cb_done"));
}

/* ---------------------------------------------------------------- 2 */

/* Group commit: the engine keeps one write transaction open for a whole
 * loop iteration — every state change, event-log line, notification and
 * outbox row of that iteration joins it — and commits it in engine_idle,
 * before the loop sleeps. Deliveries wait for that commit (an outbox row is
 * never sent before it is durable), and anything that answers a REST client
 * commits first (batch_flush) so the client never reads older state. One
 * commit per iteration instead of three per event.
 *
 * Kaphila's events ride the same batch: the engine applies a posted event
 * in it and answers Kaphila's POST only after the commit (the acks), so an
 * event Kaphila believes delivered is durable as its effects, with no raw
 * copy of the event written first. Should the batch be lost (a failed
 * write or commit), the raw events of its acks are stored for replay at
 * the next start instead (ack_rescue), as every event once was. REST
 * replies wait for the commit the same way (reply_call), so a burst of
 * creates shares one commit instead of forcing one each. */
static bool txn_begin(engine *e)
{
    if (e->batch) return true;
    if (store_begin(e->db) != STORE_OK) return false;
    e->batch = true;
    return true;
}

static void deliver_kicked(engine *e);
static void origs_start(engine *e);
static void origs_fail(engine *e);

static void drop_kicked(engine *e)
{
    while (e->kick_head) {
        ob_item *it = e->kick_head;
        e->kick_head = it->next;
        store_outbox_fini(&it->o);
        free(it);
    }
    e->kick_tail = NULL;
}

static const char kev_ok[] = "{\"success\":true}";
static const char kev_unavailable[] = "{\"success\":false,\"error\":\"event not stored; retry\"}";

/* Holds r's answer until the batch commits (json: a REST body, taken).
 * false = out of memory; the caller still owns json. */
static bool ack_add(engine *e, engine_reply r, const char *call_sid, int status, char *json)
{
    if (e->n_acks == e->cap_acks) {
        size_t ncap = e->cap_acks ? e->cap_acks * 2 : 64;
        ack *na = realloc(e->acks, ncap * sizeof *na);
        if (!na) return false;
        e->acks = na;
        e->cap_acks = ncap;
    }
    ack *a = &e->acks[e->n_acks++];
    a->r = r;
    a->json = json;
    a->status = status;
    snprintf(a->call_sid, SID_SIZE, "%s", call_sid);
    return true;
}

/* ok: the batch committed (or the events were rescued). REST replies go
 * out either way: they describe a call whose row is stored, as a reply
 * after a failed commit always did. */
static void acks_reply(engine *e, bool ok)
{
    for (size_t i = 0; i < e->n_acks; i++) {
        ack *a = &e->acks[i];
        if (a->json) engine_reply_owned(a->r, a->status, "application/json", a->json, strlen(a->json));
        else if (ok) engine_reply_bytes(a->r, 200, "application/json", kev_ok, sizeof kev_ok - 1);
        else engine_reply_bytes(a->r, 503, "application/json", kev_unavailable, sizeof kev_unavailable - 1);
    }
    e->n_acks = 0;
}

/* The batch holding the acked events' effects was rolled back: store the
 * raw events, pending, so the next start replays them (the state in memory
 * has moved on and cannot take them again), and tell Kaphila 200 only if
 * that worked. */
static void ack_rescue(engine *e)
{
    size_t n = 0;
    bool ok = true;
    for (size_t i = 0; i < e->n_acks; i++) n += !e->acks[i].json;
    if (n) {
        ok = store_begin(e->db) == STORE_OK;
        for (size_t i = 0; ok && i < e->n_acks; i++) {
            const buf *b = engine_reply_body(e->acks[i].r);
            if (!e->acks[i].json)
                ok = store_kevent_insert(e->db, e->acks[i].call_sid, buf_str(b), b->len, false,
                                         NULL) == STORE_OK;
        }
        if (ok && store_commit(e->db) != STORE_OK) ok = false;
        if (!ok) store_rollback(e->db);
        log_error("engine", "%zu Kaphila event(s) %s", n,
                  ok ? "stored for replay at the next start" : "refused with 503: not stored");
    }
    acks_reply(e, ok);
}

/* The open batch is lost: nothing of it may be delivered or acknowledged. */
static void batch_failed(engine *e)
{
    e->batch = false;
    e->resync = true;   /* engine_resync, once the store takes writes again */
    store_rollback(e->db);
    drop_kicked(e);
    ack_rescue(e);
    origs_fail(e);
}

static bool batch_flush(engine *e)
{
    if (!e->batch) {
        acks_reply(e, true);   /* events that wrote nothing */
        return true;
    }
    if (store_commit(e->db) != STORE_OK) {
        log_error("engine", "a batch of state changes could not be committed");
        batch_failed(e);
        return false;
    }
    e->batch = false;
    acks_reply(e, true);
    deliver_kicked(e);
    origs_start(e);
    return true;
}

static void engine_idle(loop *l, void *arg)
{
    (void)l;
    (void)batch_flush(arg);
}

/* Every engine timer (Pause, TimeLimit, retries, probes) is due at a time a
 * Twilio user can see; how late they fire is the loop's health figure. */
static void engine_timer_late(loop *l, int64_t late_ms, void *arg)
{
    (void)l;
    engine *e = arg;
    metrics_observe(e->a->metrics, "twigate_timer_lateness_seconds", NULL, (double)late_ms / 1000.0);
}

/* Persists c (when given) and marks kid consumed, in the open batch. */
static bool txn_commit(engine *e, call *c, int64_t kid)
{
    if (c) {
        json_object_set_new(c->row.params, "rank", json_integer(c->rank));
        if (store_call_update(e->db, &c->row) != STORE_OK) goto fail;
    }
    if (kid > 0 && store_kevent_done(e->db, kid) != STORE_OK) goto fail;
    return true;
fail:
    log_error("engine", "a state change could not be written; the batch is rolled back");
    batch_failed(e);
    return false;
}

/* ---------------------------------------------------------------- 3 */

static const char *geo_fields[] = {
    "FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip",
    "ToCountry", "CallerCity", "CallerState", "CallerZip", "CallerCountry", "CalledCity",
    "CalledState", "CalledZip", "CalledCountry",
};

static bool amd_ran(const call *c)
{
    return param_str(c, "machine_detection") && c->row.answered_by[0];
}

void call_voice_params(call *c, form *f)
{
    bool ok = form_add(f, "CallSid", c->row.sid) == FORM_OK &&
              form_add(f, "AccountSid", c->row.account_sid) == FORM_OK &&
              form_add(f, "From", c->row.from) == FORM_OK &&
              form_add(f, "To", c->row.to) == FORM_OK &&
              form_add(f, "Called", c->row.to) == FORM_OK &&
              form_add(f, "Caller", c->row.from) == FORM_OK &&
              form_add(f, "CallStatus", c->row.status) == FORM_OK &&
              form_add(f, "ApiVersion", "2010-04-01") == FORM_OK &&
              form_add(f, "Direction", c->row.direction) == FORM_OK &&
              form_add(f, "ForwardedFrom", "") == FORM_OK &&
              form_add(f, "CallerName", "") == FORM_OK &&
              form_add(f, "ParentCallSid", c->row.parent_call_sid) == FORM_OK;
    for (size_t i = 0; ok && i < sizeof geo_fields / sizeof geo_fields[0]; i++)
        ok = form_add(f, geo_fields[i], "") == FORM_OK;
    /* Blocking AMD: the result rides on the voice request (§8.1). */
    if (ok && amd_ran(c) && !json_is_true(json_object_get(c->row.params, "async_amd"))) {
        char ms[24];
        snprintf(ms, sizeof ms, "%lld",
                 (long long)json_integer_value(json_object_get(c->row.params, "amd_ms")));
        ok = form_add(f, "AnsweredBy", c->row.answered_by) == FORM_OK &&
             form_add(f, "MachineDetectionDuration", ms) == FORM_OK;
    }
    if (!ok) log_error("engine", "out of memory building webhook parameters");
}

/* Queues a delivery in the current transaction. */
static void outbox_add(engine *e, call *c, const char *kind, const char *url, const char *method,
                       const form *params)
{
    ob_item *it = calloc(1, sizeof *it);
    buf enc;
    buf_init(&enc, 1 << 20);
    if (!it || form_encode(params, &enc) != BUF_OK || !sid_token(it->o.idem)) goto fail;
    snprintf(it->o.call_sid, sizeof it->o.call_sid, "%s", c->row.sid);
    snprintf(it->o.account_sid, sizeof it->o.account_sid, "%s", c->row.account_sid);
    snprintf(it->o.kind, sizeof it->o.kind, "%s", kind);
    it->o.seq = c->row.cb_seq;
    it->o.url = strdup(url);
    it->o.method = strdup(method ? method : "POST");
    it->o.params = buf_steal(&enc);
    it->o.created = timefmt_now_ms();
    if (!it->o.url || !it->o.method || !it->o.params) goto fail;
    if (store_outbox_insert(e->db, &it->o) != STORE_OK) goto fail;
    if (e->kick_tail) e->kick_tail->next = it;
    else e->kick_head = it;
    e->kick_tail = it;
    buf_fini(&enc);
    return;
fail:
    log_error("engine", "could not write a %s callback to the outbox", kind);
    if (it) store_outbox_fini(&it->o);
    free(it);
    buf_fini(&enc);
}

static bool event_requested(const call *c, const char *event)
{
    json_t *ev = json_object_get(c->row.params, "status_callback_event");
    if (!ev || !json_array_size(ev)) return !strcmp(event, "completed");
    for (size_t i = 0; i < json_array_size(ev); i++)
        if (!strcmp(json_string_value(json_array_get(ev, i)), event)) return true;
    return false;
}

static const char *sip_code(const char *status)
{
    if (!strcmp(status, "completed")) return "200";
    if (!strcmp(status, "busy")) return "486";
    if (!strcmp(status, "no-answer")) return "480";
    if (!strcmp(status, "canceled")) return "487";
    return "500";
}

/* Emits the status callback for `event` once (inside a transaction). */
static void status_callback(engine *e, call *c, const char *event, int bit)
{
    const char *url = param_str(c, "status_callback");
    int done = cb_done(c);
    form f;
    char seq[16], ts[TIMEFMT_RFC2822_LEN], n[24];
    if (done & bit) return;
    json_object_set_new(c->row.params, "cb_done", json_integer(done | bit));
    if (!url || !event_requested(c, event)) return;

    form_init(&f);
    call_voice_params(c, &f);
    /* CallStatus names the event, not the REST status, for these two. */
    if (bit == CB_INITIATED || bit == CB_RINGING)
        for (size_t i = 0; i < f.n; i++)
            if (!strcmp(f.pairs[i].key, "CallStatus")) {
                char *v = strdup(event);
                if (v) { free(f.pairs[i].value); f.pairs[i].value = v; }
            }
    snprintf(seq, sizeof seq, "%d", c->row.cb_seq);
    timefmt_rfc2822(timefmt_now_ms(), ts);
    bool ok = form_add(&f, "CallbackSource", "call-progress-events") == FORM_OK &&
              form_add(&f, "SequenceNumber", seq) == FORM_OK &&
              form_add(&f, "Timestamp", ts) == FORM_OK;
    if (ok && bit == CB_COMPLETED) {
        int d = c->row.duration > 0 ? c->row.duration : 0;
        snprintf(n, sizeof n, "%d", d);
        ok = form_add(&f, "CallDuration", n) == FORM_OK;
        snprintf(n, sizeof n, "%d", (d + 59) / 60);   /* billed minutes */
        ok = ok && form_add(&f, "Duration", n) == FORM_OK &&
             form_add(&f, "SipResponseCode", sip_code(c->row.status)) == FORM_OK &&
             rec_status_params(c, &f, d);   /* Record=true: RecordingUrl, … */
    }
    if (ok && amd_ran(c) && json_is_true(json_object_get(c->row.params, "async_amd"))) {
        /* Async AMD: the voice request didn't carry it; status callbacks do. */
        snprintf(n, sizeof n, "%lld", (long long)json_integer_value(json_object_get(c->row.params, "amd_ms")));
        ok = form_add(&f, "AnsweredBy", c->row.answered_by) == FORM_OK &&
             form_add(&f, "MachineDetectionDuration", n) == FORM_OK;
    }
    if (ok) outbox_add(e, c, "status", url, param_str(c, "status_callback_method"), &f);
    c->row.cb_seq++;
    form_fini(&f);
}

static void amd_callback(engine *e, call *c)
{
    const char *url = param_str(c, "async_amd_status_callback");
    form f;
    char ms[24];
    if (!url || !json_is_true(json_object_get(c->row.params, "async_amd"))) return;
    form_init(&f);
    snprintf(ms, sizeof ms, "%lld", (long long)json_integer_value(json_object_get(c->row.params, "amd_ms")));
    if (form_add(&f, "CallSid", c->row.sid) == FORM_OK &&
        form_add(&f, "AccountSid", c->row.account_sid) == FORM_OK &&
        form_add(&f, "AnsweredBy", c->row.answered_by) == FORM_OK &&
        form_add(&f, "MachineDetectionDuration", ms) == FORM_OK)
        outbox_add(e, c, "amd", url, param_str(c, "async_amd_status_callback_method"), &f);
    form_fini(&f);
}

/* ---------------------------------------------------------------- 4 */

static obq *obq_get(engine *e, const char *call_sid, bool create)
{
    size_t b = bucket(call_sid);
    for (obq *q = e->queues[b]; q; q = q->hnext)
        if (!strcmp(q->call_sid, call_sid)) return q;
    if (!create) return NULL;
    obq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    snprintf(q->call_sid, sizeof q->call_sid, "%s", call_sid);
    q->hnext = e->queues[b];
    e->queues[b] = q;
    return q;
}

static void obq_drop(engine *e, obq *q)
{
    obq **pp = &e->queues[bucket(q->call_sid)];
    while (*pp && *pp != q) pp = &(*pp)->hnext;
    if (*pp) *pp = q->hnext;
    free(q);
}

static void obq_pump(engine *e, obq *q);

/* Keep the log small: the first 4 KiB of a body is enough to debug. */
#define EVENT_BODY_MAX 4096

/* Length of the well-formed UTF-8 sequence at s[0..n) (jansson's rules: no
 * overlongs, no surrogates, nothing past U+10FFFF); 0 = not one, and
 * *cut = true when it is the start of one that n ends too early. */
static size_t utf8_len(const unsigned char *s, size_t n, bool *cut)
{
    size_t len = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
               : s[0] >= 0xe0 && s[0] <= 0xef ? 3 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
    unsigned lo = 0x80, hi = 0xbf;
    if (len < 2) return len;
    if (s[0] == 0xe0) lo = 0xa0;
    if (s[0] == 0xed) hi = 0x9f;
    if (s[0] == 0xf0) lo = 0x90;
    if (s[0] == 0xf4) hi = 0x8f;
    for (size_t i = 1; i < len; i++) {
        if (i == n) { *cut = true; return 0; }
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xbf)) return 0;
    }
    return len;
}

/* A JSON string of the first max bytes of s, lossily: a byte that is not
 * part of well-formed UTF-8 becomes U+FFFD and a character cut by max is
 * dropped (*lossy set), where jansson would refuse the whole string and
 * with it the event log entry. NULL only when out of memory. */
static json_t *lossy_string(const char *s, size_t len, size_t max, bool *lossy)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = len < max ? len : max, o = 0;
    char *out = malloc(n * 3 + 1);   /* each byte at worst one U+FFFD */
    json_t *j;
    if (!out) return NULL;
    for (size_t i = 0; i < n;) {
        bool cut = false;
        size_t k = utf8_len(u + i, n - i, &cut);
        if (k) {
            memcpy(out + o, u + i, k);
            o += k;
            i += k;
            continue;
        }
        *lossy = true;
        if (cut && n < len) break;   /* a character straddling the cut */
        memcpy(out + o, "\xef\xbf\xbd", 3);
        o += 3;
        i++;
    }
    j = json_stringn_nocheck(out, o);
    free(out);
    return j;
}

/* Writes the request/response pair of one exchange into the event log, in
 * the batch. params: the request's parameters, form-encoded (the outbox
 * row's own encoding, stored as it is). A body (or header) that is not
 * UTF-8 is kept lossily and the entry says so (response_body_lossy). */
static void log_exchange_enc(engine *e, const char *account_sid, const char *call_sid,
                             const char *method, const char *url, const char *params,
                             const webhook_result *res)
{
    (void)txn_begin(e);
    json_t *rq, *rs;
    char when[TIMEFMT_RFC2822_LEN];
    bool lossy = false, meta_lossy = false;
    rq = json_pack("{s:s,s:s}", "method", method, "url", url);
    timefmt_rfc2822(timefmt_now_ms(), when);
    rs = json_pack("{s:i,s:I,s:o*,s:o*,s:s}", "response_code", res->http_status,
                   "request_duration", (json_int_t)res->duration_ms, "content_type",
                   lossy_string(res->content_type, strlen(res->content_type),
                                sizeof res->content_type, &meta_lossy),
                   "response_body", lossy_string(buf_str(&res->body), res->body.len,
                                                 EVENT_BODY_MAX, &lossy),
                   "date_created", when);
    if (lossy && rs) json_object_set_new(rs, "response_body_lossy", json_true());
    if (res->error_code && rs) {
        json_object_set_new(rs, "error_code", json_integer(res->error_code));
        json_object_set_new(rs, "error_message",
                            lossy_string(res->error_msg, strlen(res->error_msg),
                                         sizeof res->error_msg, &meta_lossy));
    }
    if (!rq || !rs ||
        store_event_insert(e->db, account_sid, call_sid, timefmt_now_ms(), rq, params, rs) != STORE_OK)
        log_warn("engine", "could not write the call event log");
    json_decref(rq);
    json_decref(rs);
}

static void log_exchange(engine *e, const char *account_sid, const char *call_sid,
                         const char *method, const char *url, const form *params,
                         const webhook_result *res)
{
    buf enc;
    buf_init(&enc, 1 << 20);
    if (params && form_encode(params, &enc) != BUF_OK) {
        log_warn("engine", "event log: parameters too large to keep");
        buf_reset(&enc);
    }
    log_exchange_enc(e, account_sid, call_sid, method, url, buf_str(&enc), res);
    buf_fini(&enc);
}

static void notify(engine *e, const char *account_sid, const char *call_sid, int code, int level,
                   const char *message, const char *url, const char *method, const char *vars,
                   const webhook_result *res)
{
    store_notification n = {0};
    buf msg;
    char labels[64];
    buf_init(&msg, 4096);
    (void)txn_begin(e);
    if (!sid_new("NO", n.sid)) return;
    snprintf(n.account_sid, sizeof n.account_sid, "%s", account_sid);
    snprintf(n.call_sid, sizeof n.call_sid, "%s", call_sid ? call_sid : "");
    n.error_code = code;
    n.log = level;
    n.date = timefmt_now_ms();
    if (buf_puts(&msg, "Msg=") == BUF_OK && form_escape(&msg, message) == BUF_OK &&
        (!url || (buf_puts(&msg, "&url=") == BUF_OK && form_escape(&msg, url) == BUF_OK)))
        n.message_text = buf_str(&msg);
    n.request_method = method;
    n.request_url = url;
    n.request_variables = vars;
    if (res) n.response_body = buf_str(&res->body);
    if (store_notification_insert(e->db, &n) != STORE_OK)
        log_warn("engine", "could not record notification %d", code);
    snprintf(labels, sizeof labels, "code=\"%d\"", code);
    metrics_inc(e->a->metrics, "twigate_notifications_total", labels, 1);
    log_context(NULL, account_sid, call_sid);
    log_warn("engine", "notification %d: %s", code, message);
    buf_fini(&msg);
}

/* The destination policy for customer URLs under the current config. It is
 * rebuilt only when a reload changed webhook.allow/deny/proxy, with the
 * next generation, so connections opened under the old one are never
 * reused (loop_http_start_isolated). NULL only when out of memory. */
static netpolicy *engine_policy(engine *e)
{
    const config *cfg = app_config(e->a);
    if (e->policy && e->policy_cfg == cfg) return e->policy;
    if (!e->policy ||
        !netpolicy_same(e->policy, cfg->webhook_allow, cfg->webhook_deny, cfg->webhook_proxy)) {
        /* twigate's own listeners are never a customer's destination. */
        netpolicy_listener ls[2];
        size_t n = 0;
        /* listen.port is the bound port (config_bind_port) once the server listens. */
        if (e->a->http) ls[n++] = (netpolicy_listener){cfg->listen_address, cfg->listen_port};
        if (e->a->sim) ls[n++] = (netpolicy_listener){cfg->sim_address, sim_port(e->a->sim)};
        netpolicy *p = netpolicy_create(cfg->webhook_allow, cfg->webhook_deny, cfg->webhook_proxy,
                                        ls, n, e->a->kaphila_url,
                                        e->policy ? netpolicy_gen(e->policy) + 1 : 1);
        if (!p) return e->policy;
        netpolicy_unref(e->policy);
        e->policy = p;
    }
    e->policy_cfg = cfg;
    return e->policy;
}

typedef struct ob_ctx { engine *e; obq *q; ob_item *it; } ob_ctx;

/* Drops the head of q (delivered, failed, or left pending for a restart). */
static void obq_pop(obq *q)
{
    ob_item *it = q->head;
    q->head = it->next;
    if (!q->head) q->tail = NULL;
    q->n--;
    q->busy = false;
    store_outbox_fini(&it->o);
    free(it);
}

static void ob_done(loop *l, void *arg, const webhook_result *res)
{
    (void)l;
    ob_ctx *x = arg;
    engine *e = x->e;
    obq *q = x->q;
    ob_item *it = x->it;
    char labels[96];

    atomic_fetch_sub(&e->inflight_deliveries, 1);
    if (res->aborted) {
        /* Cut by the stop: the row stays pending and goes out at the next
         * start with the same idempotency token. */
        obq_pop(q);
        free(x);
        return;
    }
    log_context(NULL, it->o.account_sid, it->o.call_sid);
    log_exchange_enc(e, it->o.account_sid, it->o.call_sid, it->o.method, res->url, it->o.params, res);
    if (res->error_code)
        notify(e, it->o.account_sid, it->o.call_sid, res->error_code, 0, res->error_msg,
               res->url, it->o.method, it->o.params, res);
    (void)txn_begin(e);
    if (store_outbox_finish(e->db, it->o.id, res->error_code ? "failed" : "done", res->attempts) != STORE_OK)
        log_warn("engine", "outbox row %lld: state not saved (it may be sent again)", (long long)it->o.id);
    snprintf(labels, sizeof labels, "kind=\"%s\",outcome=\"%d\"", it->o.kind, res->error_code);
    metrics_inc(e->a->metrics, "twigate_webhooks_total", labels, 1);
    snprintf(labels, sizeof labels, "kind=\"%s\"", it->o.kind);
    metrics_observe(e->a->metrics, "twigate_webhook_seconds", labels, (double)res->duration_ms / 1000.0);

    obq_pop(q);
    free(x);
    obq_pump(e, q);
}

/* Starts the head of q when nothing of this call is in flight: per call,
 * callbacks leave in SequenceNumber order. */
static void obq_pump(engine *e, obq *q)
{
    if (e->stopping) return;   /* what is queued stays pending in the store */
    while (q->head && !q->busy) {
        ob_item *it = q->head;
        const config *cfg = app_config(e->a);
        const config_account *acct = config_account_by_sid(cfg, it->o.account_sid);
        form params;
        ob_ctx *x = NULL;
        form_init(&params);
        if (!acct || form_parse(&params, it->o.params, strlen(it->o.params)) != FORM_OK ||
            !(x = calloc(1, sizeof *x))) {
            log_error("engine", "outbox row %lld cannot be sent (account %s gone?)",
                      (long long)it->o.id, it->o.account_sid);
            if (store_outbox_finish(e->db, it->o.id, "failed", 0) != STORE_OK)
                log_warn("engine", "outbox row state not saved");
            obq_pop(q);
            form_fini(&params);
            continue;
        }
        webhook_req req = {
            .url = it->o.url, .method = it->o.method, .params = &params,
            .encoded = it->o.params, .auth_token = acct->auth_token, .idem = it->o.idem,
            .max_response = (size_t)cfg->webhook_max_response, .policy = engine_policy(e),
        };
        x->e = e;
        x->q = q;
        x->it = it;
        q->busy = true;
        atomic_fetch_add(&e->inflight_deliveries, 1);
        if (webhook_send(e->l, &req, ob_done, x) != 0) {
            /* A URL that cannot even be requested (11100): record it as a
             * failed delivery through the normal completion path. */
            webhook_result fake = {0};
            snprintf(fake.error_msg, sizeof fake.error_msg, "Invalid URL format");
            fake.error_code = 11100;
            buf_init(&fake.body, 1);
            snprintf(fake.url, sizeof fake.url, "%s", it->o.url);
            form_fini(&params);
            ob_done(e->l, x, &fake);   /* pumps the rest of the queue */
            buf_fini(&fake.body);
            return;
        }
        form_fini(&params);
    }
    if (!q->head && !q->busy) obq_drop(e, q);
}

static void outbox_enqueue(engine *e, ob_item *it)
{
    obq *q = obq_get(e, it->o.call_sid, true);
    if (!q || q->n >= ENGINE_MAX_OUTBOX_PER_CALL) {
        log_error("engine", "outbox queue for %s is full; row %lld waits for the next start",
                  it->o.call_sid, (long long)it->o.id);
        store_outbox_fini(&it->o);
        free(it);
        return;
    }
    it->next = NULL;
    if (q->tail) q->tail->next = it;
    else q->head = it;
    q->tail = it;
    q->n++;
    obq_pump(e, q);
}

static void deliver_kicked(engine *e)
{
    ob_item *it = e->kick_head;
    e->kick_head = e->kick_tail = NULL;
    while (it) {
        ob_item *next = it->next;
        outbox_enqueue(e, it);
        it = next;
    }
}

/* ---------------------------------------------------------------- 5 */

static void set_status(call *c, const char *status)
{
    char labels[48];
    snprintf(c->row.status, sizeof c->row.status, "%s", status);
    c->row.date_updated = timefmt_now_ms();
    snprintf(labels, sizeof labels, "status=\"%s\"", status);
    metrics_inc(c->e->a->metrics, "twigate_calls_total", labels, 1);
}

/* Raises the rank to `to` (< RANK_OVER), emitting the callbacks of every
 * rung passed. Inside a transaction. */
static void advance(engine *e, call *c, int to)
{
    if (c->rank >= to) return;
    if (c->rank < RANK_INITIATED && to >= RANK_INITIATED) {
        status_callback(e, c, "initiated", CB_INITIATED);
    }
    if (c->rank < RANK_RINGING && to >= RANK_RINGING) {
        set_status(c, "ringing");
        /* start_time: when Kaphila reports the call placed (the 201 of a
         * create still shows null, as on Twilio). */
        if (!c->row.start_time) c->row.start_time = timefmt_now_ms();
        status_callback(e, c, "ringing", CB_RINGING);
    }
    if (c->rank < RANK_ANSWERED && to >= RANK_ANSWERED) {
        set_status(c, "in-progress");
        c->row.answered_at = timefmt_now_ms();
        status_callback(e, c, "answered", CB_ANSWERED);
    }
    c->rank = to;
}

static void time_limit_fired(loop *l, void *arg);

/* The last line of a call's story at info; like every lifecycle line
 * (created, dialled, answered, ended) it relies on the caller having set
 * the call's log context. k: Kaphila's call.ended, NULL when twigate ended
 * the call without one (a REST hang-up, recovery). */
static void log_call_ended(const char *status, int duration, const kevent *k)
{
    char cause[96] = "before any call.ended from Kaphila";
    if (k)
        snprintf(cause, sizeof cause, "Kaphila cause %d (%s)", k->hangup_cause,
                 k->end_reason[0] ? k->end_reason : "no endReason");
    log_info("engine", "call ended: %s, %d s, %s", status, duration > 0 ? duration : 0, cause);
}

/* The call reached a terminal status (inside a transaction). */
static void finish_call(engine *e, call *c, const char *status, int duration)
{
    if (c->rank >= RANK_OVER) return;
    if (c->time_limit) { loop_timer_cancel(e->l, c->time_limit); c->time_limit = NULL; call_unref(c); }
    set_status(c, status);
    c->row.end_time = c->row.date_updated;
    if (!c->row.start_time) c->row.start_time = c->row.end_time;
    c->row.duration = duration;
    c->rank = RANK_OVER;
    c->over = true;
    status_callback(e, c, "completed", CB_COMPLETED);
    log_call_ended(status, duration, e->ending);
}

/* After the commit of a terminal step: stop the executor and forget the call. */
static void retire(engine *e, call *c)
{
    reconcile_forget(c);
    if (c->x) exec_call_ended(c);
    call_unlink(e, c);
    call_unref(c);
}

static void on_answered(engine *e, call *c, const kevent *k)
{
    const char *md = param_str(c, "machine_detection");
    if (md) {
        snprintf(c->row.answered_by, sizeof c->row.answered_by, "%s",
                 kevent_answered_by(k->amd_status, !strcmp(md, "DetectMessageEnd")));
        json_object_set_new(c->row.params, "amd_ms", json_integer(k->amd_ms));
        if (!k->has_amd)
            call_log(c, "amd-missing", json_pack("{s:s}", "note",
                     "MachineDetection was requested but Kaphila reported no AMD result"));
    }
    advance(e, c, RANK_ANSWERED);
    log_info("engine", "call answered (AMD: %s)", md ? c->row.answered_by : "not requested");
    amd_callback(e, c);
}

static void start_time_limit(engine *e, call *c)
{
    json_int_t tl = json_integer_value(json_object_get(c->row.params, "time_limit"));
    if (tl <= 0 || c->time_limit) return;
    call_ref(c);
    c->time_limit = loop_timer_add(e->l, (int64_t)tl * 1000, time_limit_fired, c);
    if (!c->time_limit) call_unref(c);
}

/* Kaphila events twigate does not act on are kept, raw, for the record. */
static void keep_raw(engine *e, const char *call_sid, const buf *raw)
{
    if (raw && store_kevent_insert(e->db, call_sid, buf_str(raw), raw->len, true, NULL) != STORE_OK)
        log_warn("engine", "could not keep an unknown Kaphila event");
}

/* raw: the posted body (NULL for a stored event replayed at start-up). */
static void apply_event(engine *e, call *c, json_t *ev, int64_t kid, const buf *raw)
{
    kevent k;
    bool answered_now = false, ended_now = false, learned = false;
    int rank0 = c->rank;

    if (!kevent_parse(ev, &k) || !txn_begin(e)) return;
    c->last_event_ms = loop_now_ms(e->l);   /* the reconciler's quiet clock */
    if (c->lost_since_ms) {
        /* /makecall's answer was lost, yet Kaphila dialled: reconcile.c. */
        if (!c->row.kaphila_id[0] && json_is_string(json_object_get(ev, "callId")))
            snprintf(c->row.kaphila_id, sizeof c->row.kaphila_id, "%s",
                     json_string_value(json_object_get(ev, "callId")));
        if (c->row.kaphila_id[0] && txn_commit(e, NULL, kid)) call_adopt_lost(c);
        return;
    }
    if (k.kind == KE_OTHER) keep_raw(e, c->row.sid, raw);
    /* Under load Kaphila's first events can overtake its /makecall answer:
     * learn the callId from them, or later commands would go out without it. */
    if (!c->row.kaphila_id[0] && json_is_string(json_object_get(ev, "callId"))) {
        snprintf(c->row.kaphila_id, sizeof c->row.kaphila_id, "%s",
                 json_string_value(json_object_get(ev, "callId")));
        learned = true;
    }
    switch (k.kind) {
    case KE_INITIATED:
        advance(e, c, RANK_RINGING);
        break;
    case KE_ANSWERED:
        if (c->rank < RANK_ANSWERED) {
            on_answered(e, c, &k);
            answered_now = true;
        }
        break;
    case KE_ENDED:
        if (c->rank < RANK_OVER) {
            const char *st = kevent_terminal_status(&k, c->rank >= RANK_ANSWERED, c->cancel_requested);
            int dur = -1;
            if (!strcmp(st, "completed")) {
                if (c->rank < RANK_ANSWERED) advance(e, c, RANK_ANSWERED);
                dur = k.duration >= 0 ? k.duration
                      : (int)((timefmt_now_ms() - c->row.answered_at) / 1000);
            }
            e->ending = &k;
            finish_call(e, c, st, dur);
            e->ending = NULL;
            ended_now = true;
        }
        break;
    case KE_DTMF: case KE_GATHER: case KE_TTS_PLAYED:
        if (c->rank < RANK_ANSWERED) log_info("engine", "%s before the call was answered; ignored", k.name);
        break;
    case KE_RECORDING: case KE_OTHER:
        break;
    }
    /* The row only changes with the rank (status, times, callbacks owed)
     * or a learned callId: recording.*, dtmf and the like write nothing. */
    if (!txn_commit(e, c->rank != rank0 || learned ? c : NULL, kid)) return;

    if (answered_now) {
        start_time_limit(e, c);
        rec_call_answered(c);
        exec_start(c);
    } else if (ended_now) {
        retire(e, c);
    } else if (c->x && (k.kind == KE_DTMF || k.kind == KE_GATHER || k.kind == KE_TTS_PLAYED ||
                        k.kind == KE_RECORDING || k.kind == KE_OTHER)) {
        exec_event(c, k.name, ev);
    }
    if (k.kind == KE_RECORDING || k.kind == KE_ENDED)
        rec_kaphila_event(e, c->row.account_sid, c->row.sid, k.name, ev);
}

/* An event for a call no longer live (late recording events, duplicates
 * after the end): recorded, nothing moves. row NULL: the call is unknown. */
static void event_for_gone_call(engine *e, const char *sid, const store_call *row, json_t *ev,
                                int64_t kid, const buf *raw)
{
    const char *name = json_string_value(json_object_get(ev, "event"));
    kevent k;
    log_context(NULL, row ? row->account_sid : NULL, sid);
    log_debug("engine", "%s for a call that is no longer live", name ? name : "?");
    if (kid > 0 && store_kevent_done(e->db, kid) != STORE_OK)
        log_warn("engine", "could not mark event %lld done", (long long)kid);
    if (!kevent_parse(ev, &k)) return;
    if (k.kind == KE_OTHER) keep_raw(e, sid, raw);
    /* A call twigate has ended that Kaphila is still placing or answering. */
    if (row && (k.kind == KE_INITIATED || k.kind == KE_ANSWERED))
        reconcile_stray_event(e, row->account_sid, sid, ev);
    /* Kaphila reports the recording after the call has ended. */
    if (row && (k.kind == KE_RECORDING || k.kind == KE_ENDED))
        rec_kaphila_event(e, row->account_sid, sid, k.name, ev);
}

/* A stored event replayed at start-up. */
static void handle_kevent(engine *e, emsg *m)
{
    call *c = call_find(e, m->sid);
    log_context(NULL, c ? c->row.account_sid : NULL, m->sid);
    if (!c) {
        store_call row = {0};
        bool known = store_call_get_by_sid(e->db, m->sid, &row) == STORE_OK;
        event_for_gone_call(e, m->sid, known ? &row : NULL, m->j, m->kid, NULL);
        store_call_fini(&row);
        return;
    }
    call_ref(c);
    apply_event(e, c, m->j, m->kid, NULL);
    call_unref(c);
}

static void kev_reply(engine_reply r, int status, const char *body)
{
    engine_reply_bytes(r, status, "application/json", body, strlen(body));
}

/* An event posted by Kaphila: a live call from memory, an ended one (the
 * recording.* events come after call.ended) from the store. */
static void handle_kevent_post(engine *e, emsg *m)
{
    call *c = call_find_token(e, m->token);
    store_call row = {0};
    const buf *raw = engine_reply_body(m->r);
    char label[96];

    if (!c) {
        store_status st = store_call_get_by_token(e->db, m->token, &row);
        if (st == STORE_NOTFOUND) {
            kev_reply(m->r, 404, "{\"success\":false,\"error\":\"unknown call\"}");
            return;
        }
        if (st != STORE_OK) {
            kev_reply(m->r, 503, kev_unavailable);
            return;
        }
    }
    const char *sid = c ? c->row.sid : row.sid;
    log_context(engine_reply_request_id(m->r), c ? c->row.account_sid : row.account_sid, sid);
    /* Counted once the token is known good: names sent by strangers would
     * otherwise make series without bound. */
    snprintf(label, sizeof label, "event=\"%.48s\"", json_string_value(json_object_get(m->j, "event")));
    for (char *p = label + 7; *p; p++) if (*p == '\\' || *p == '\n' || *p == '"') *p = '_';
    label[strlen(label) - 1] = '"';
    metrics_inc(e->a->metrics, "twigate_kaphila_events_total", label, 1);
    if (!txn_begin(e) || !ack_add(e, m->r, sid, 200, NULL)) {
        kev_reply(m->r, 503, kev_unavailable);
        store_call_fini(&row);
        return;
    }
    m->r = (engine_reply){0};   /* answered by the batch's commit (or its rescue) */
    if (!c) {
        event_for_gone_call(e, sid, &row, m->j, 0, raw);
    } else {
        call_ref(c);
        apply_event(e, c, m->j, 0, raw);
        call_unref(c);
    }
    store_call_fini(&row);
}

/* ---------------------------------------------------------------- 6 */

typedef struct orig_ctx { engine *e; call *c; } orig_ctx;

/* The Call JSON as of now, sent once what it shows is committed. */
static void reply_call(engine_reply r, int status, const call *c)
{
    engine *e = c->e;
    json_t *j = calljson_call(&c->row);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        engine_reply_error(r, 20500, 500, NULL);
        return;
    }
    if (e->batch && ack_add(e, r, c->row.sid, status, s)) return;
    engine_reply_owned(r, status, "application/json", s, strlen(s));
}

/* No HTTP answer although the request may have reached Kaphila: a timeout
 * or a connection cut after sending. A refused connection sent nothing. */
static bool answer_lost(const kaphila_result *res)
{
    return res->http_status == 0 &&
           (res->curl_rc == CURLE_OPERATION_TIMEDOUT || res->curl_rc == CURLE_GOT_NOTHING ||
            res->curl_rc == CURLE_RECV_ERROR || res->curl_rc == CURLE_SEND_ERROR ||
            res->curl_rc == CURLE_PARTIAL_FILE);
}

static void on_makecall(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    call *c = arg;
    engine *e = c->e;
    engine_reply r = c->create_req;
    c->create_req = (engine_reply){0};
    log_context(NULL, c->row.account_sid, c->row.sid);
    metrics_observe(e->a->metrics, "twigate_kaphila_request_seconds", "endpoint=\"/makecall\"",
                    (double)res->latency_ms / 1000.0);

    if (kaphila_ok(res)) {
        const char *kid = json_string_value(json_object_get(res->body, "callId"));
        metrics_inc(e->a->metrics, "twigate_kaphila_requests_total", "endpoint=\"/makecall\",outcome=\"ok\"", 1);
        metrics_inc(e->a->metrics, "twigate_calls_total", "status=\"queued\"", 1);
        if (kid) snprintf(c->row.kaphila_id, sizeof c->row.kaphila_id, "%s", kid);
        log_info("engine", "call dialled: Kaphila callId %s", kid ? kid : "not given");
        if (c->over && kid) {
            /* Canceled while /makecall was in flight: Kaphila has just
             * started dialling a call nobody wants any more. */
            if (call_kaphila(c, "/hangup", json_object(), NULL, NULL) != 0)
                log_warn("engine", "could not hang up a call canceled during origination");
        }
        if (!c->over && txn_begin(e)) {
            advance(e, c, RANK_INITIATED);
            (void)txn_commit(e, c, 0);
        }
        if (engine_reply_some(r)) reply_call(r, 201, c);
        call_unref(c);
        return;
    }

    int code, status;
    char msg[400], labels[96];
    kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
    snprintf(labels, sizeof labels, "endpoint=\"/makecall\",outcome=\"%s\"", kaphila_outcome(res));
    metrics_inc(e->a->metrics, "twigate_kaphila_requests_total", labels, 1);
    if (answer_lost(res) && !c->over && !e->stopping) {
        /* Kaphila may have dialled: the caller is told it failed, but the
         * call and its token stay until its events or GET /calls settle it
         * (reconcile.c). */
        log_warn("engine", "origination answer lost (%s); waiting for the call's events", msg);
        c->lost_since_ms = loop_now_ms(l);
        if (engine_reply_some(r)) engine_reply_error(r, code, status, msg);
        call_unref(c);   /* the origination list's; the table keeps the call */
        return;
    }
    /* Nothing was dialled: the call never existed for the customer. */
    log_warn("engine", "origination failed: %s", msg);
    if (store_call_delete(e->db, c->row.account_sid, c->row.sid) != STORE_OK)
        log_error("engine", "could not delete the refused call row");
    c->over = true;
    c->rank = RANK_OVER;
    (void)batch_flush(e);
    if (engine_reply_some(r)) engine_reply_error(r, code, status, msg);
    call_unlink(e, c);
    c->refs--;       /* the table's; the request's reference is still held */
    call_unref(c);
}

/* Dials c on Kaphila; its row is committed. on_makecall gets the reference
 * the origination list held. */
static void start_makecall(engine *e, call *c)
{
    const config_account *acct = config_account_by_sid(app_config(e->a), c->row.account_sid);
    char number[PHONE_MAX], hook[1024];
    json_t *body = NULL;

    log_context(NULL, c->row.account_sid, c->row.sid);
    log_info("engine", "call created (queued)");
    if (acct && !e->stopping) {
        phone_kaphila(c->row.to, number);
        /* The token authenticates Kaphila's events; CallSid is for humans and
         * the simulator's control API, never trusted. */
        snprintf(hook, sizeof hook, "%s/kaphila/events/%s?CallSid=%s", e->a->public_url,
                 c->row.token, c->row.sid);
        body = json_pack("{s:s,s:s,s:s,s:b,s:I}", "number", number, "webhookUrl", hook, "callerId",
                         param_str(c, "caller_id") ? param_str(c, "caller_id") : c->row.from,
                         "useAmd", param_str(c, "machine_detection") != NULL, "ringTimeout",
                         json_integer_value(json_object_get(c->row.params, "timeout")));
        /* The account's voice for the whole call (Kaphila has no per-<Say>
         * voice); absent = Kaphila's default. */
        if (body && acct->kaphila_voice && *acct->kaphila_voice)
            json_object_set_new(body, "voiceName", json_string(acct->kaphila_voice));
    }
    if (!body || kaphila_call(e->l, &e->kc, acct->kaphila_key, "POST", "/makecall", body,
                              on_makecall, c) != 0) {
        kaphila_result res = {.endpoint = "/makecall", .curl_rc = CURLE_FAILED_INIT};
        on_makecall(e->l, c, &res);
    }
    json_decref(body);
}

/* The batch that stored these calls has committed: dial them, in the order
 * they were created. The list is taken first because a failed /makecall
 * flushes the batch again (on_makecall), which comes back here. */
static void origs_start(engine *e)
{
    call **list = e->origs;
    size_t n = e->n_origs;
    if (!n) return;
    e->origs = NULL;
    e->n_origs = e->cap_origs = 0;
    for (size_t i = 0; i < n; i++) start_makecall(e, list[i]);
    free(list);
}

/* The batch that stored these calls was rolled back: they never existed. */
static void origs_fail(engine *e)
{
    call **list = e->origs;
    size_t n = e->n_origs;
    e->origs = NULL;
    e->n_origs = e->cap_origs = 0;
    for (size_t i = 0; i < n; i++) {
        call *c = list[i];
        if (engine_reply_some(c->create_req)) engine_reply_error(c->create_req, 20503, 503, "The call could not be stored; try again");
        c->create_req = (engine_reply){0};
        c->over = true;
        c->rank = RANK_OVER;
        call_unlink(e, c);
        c->refs--;       /* the table's */
        call_unref(c);   /* the list's */
    }
    free(list);
}

static bool origs_reserve(engine *e)
{
    if (e->n_origs < e->cap_origs) return true;
    size_t ncap = e->cap_origs ? e->cap_origs * 2 : 64;
    call **na = realloc(e->origs, ncap * sizeof *na);
    if (!na) return false;
    e->origs = na;
    e->cap_origs = ncap;
    return true;
}

/* A REST create: the row joins the open batch (a burst of creates shares one
 * commit, and only the engine writes calls, so its page cache stays warm),
 * and /makecall goes out once that batch has committed (origs_start):
 * Kaphila never dials a call whose row could still be lost. warnings: the
 * 20001 notifications the request earned (strings), recorded with it. */
static void handle_originate(engine *e, emsg *m)
{
    const config *cfg = app_config(e->a);
    const config_account *acct = config_account_by_sid(cfg, m->call.account_sid);
    call *c;

    log_context(NULL, m->call.account_sid, m->call.sid);
    if (!acct || atomic_load(&e->live) >= (size_t)cfg->max_live_calls) {
        engine_reply_error(m->r, acct ? 20429 : 20003, acct ? 429 : 401,
                         acct ? "Too many live calls on this gateway (limits.max_live_calls)" : NULL);
        store_call_fini(&m->call);
        return;
    }
    if (!txn_begin(e) || !origs_reserve(e) || !(c = call_new(e, &m->call))) {
        engine_reply_error(m->r, 20503, 503, NULL);
        store_call_fini(&m->call);
        return;
    }
    if (store_call_insert(e->db, &c->row) != STORE_OK) {
        log_error("engine", "a new call could not be written; the batch is rolled back");
        engine_reply_error(m->r, 20500, 500, NULL);
        call_unlink(e, c);
        call_unref(c);
        batch_failed(e);
        return;
    }
    size_t i;
    json_t *w;
    json_array_foreach(m->j, i, w)
        notify(e, c->row.account_sid, c->row.sid, 20001, 1, json_string_value(w), NULL, NULL, NULL,
               NULL);
    c->create_req = m->r;
    call_ref(c);
    e->origs[e->n_origs++] = c;
}

typedef struct upd_ctx { call *c; engine_reply r; json_t *upd; } upd_ctx;

static void on_update_hangup(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    upd_ctx *u = arg;
    call *c = u->c;
    engine *e = c->e;
    log_context(NULL, c->row.account_sid, c->row.sid);
    /* 404: Kaphila says the call already ended — the hangup's goal holds. */
    if (!kaphila_ok(res) && res->http_status != 404) {
        int code, status;
        char msg[400];
        kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
        c->hangup_sent = false;
        engine_reply_error(u->r, code, status, msg);
        if (!c->over) reconcile_hangup_failed(c);   /* the hang-up was asked for: retried */
        goto out;
    }
    if (!c->over && txn_begin(e)) {
        bool answered = c->rank >= RANK_ANSWERED;
        finish_call(e, c, answered ? "completed" : "canceled",
                    answered ? (int)((timefmt_now_ms() - c->row.answered_at) / 1000) : -1);
        if (txn_commit(e, c, 0)) {
            reply_call(u->r, 200, c);
            retire(e, c);
            goto out;
        }
    }
    reply_call(u->r, 200, c);
out:
    json_decref(u->upd);
    call_unref(c);
    free(u);
}

static void handle_update(engine *e, emsg *m)
{
    call *c = call_find(e, m->sid);
    json_t *upd = m->j, *v;
    const char *key;
    store_call row = {0};

    log_context(NULL, m->account_sid, m->sid);
    if (!c || strcmp(c->row.account_sid, m->account_sid) != 0) {
        /* Ended between the REST read and now: answer from the store. */
        if (store_call_get(e->db, m->account_sid, m->sid, &row) == STORE_OK) {
            if (json_object_get(upd, "url") || json_object_get(upd, "twiml"))
                engine_reply_error(m->r, 21220, 400, "Call is not in-progress. Cannot redirect.");
            else
                engine_reply_json(m->r, 200, calljson_call(&row));
            store_call_fini(&row);
        } else {
            engine_reply_error(m->r, 20404, 404, NULL);
        }
        json_decref(upd);
        return;
    }
    if ((json_object_get(upd, "url") || json_object_get(upd, "twiml")) && c->rank != RANK_ANSWERED) {
        engine_reply_error(m->r, 21220, 400, "Call is not in-progress. Cannot redirect.");
        json_decref(upd);
        return;
    }
    /* Parameters that take effect for what follows. */
    json_object_foreach(upd, key, v) {
        if (!strcmp(key, "status") || !strcmp(key, "url") || !strcmp(key, "twiml") ||
            !strcmp(key, "method"))
            continue;
        json_object_set(c->row.params, key, v);
    }
    if (json_object_get(upd, "time_limit") && c->rank == RANK_ANSWERED) {
        if (c->time_limit) { loop_timer_cancel(e->l, c->time_limit); c->time_limit = NULL; call_unref(c); }
        json_int_t tl = json_integer_value(json_object_get(upd, "time_limit"));
        json_int_t elapsed = (timefmt_now_ms() - c->row.answered_at) / 1000;
        json_object_set_new(c->row.params, "time_limit", json_integer(tl > elapsed ? tl - elapsed : 1));
        start_time_limit(e, c);
        json_object_set_new(c->row.params, "time_limit", json_integer(tl));
    }
    c->row.date_updated = timefmt_now_ms();
    if (store_call_update(e->db, &c->row) != STORE_OK)
        log_warn("engine", "update not persisted");

    const char *st = json_string_value(json_object_get(upd, "status"));
    if (st && (!strcmp(st, "completed") || (!strcmp(st, "canceled") && c->rank < RANK_ANSWERED))) {
        upd_ctx *u = calloc(1, sizeof *u);
        const config_account *acct = call_account(c);
        if (!u || !acct) {
            free(u);
            engine_reply_error(m->r, 20500, 500, NULL);
            json_decref(upd);
            return;
        }
        if (!strcmp(st, "canceled") || c->rank < RANK_ANSWERED) c->cancel_requested = true;
        u->c = c;
        u->r = m->r;
        u->upd = upd;
        call_ref(c);
        c->hangup_sent = true;
        json_t *body = json_pack("{s:s}", "callId", c->row.kaphila_id);
        if (!c->row.kaphila_id[0]) {
            /* Not dialled yet (makecall in flight): Kaphila has nothing to hang up. */
            kaphila_result res = {.endpoint = "/hangup", .http_status = 404};
            json_decref(body);
            on_update_hangup(e->l, u, &res);
            return;
        }
        if (!body || kaphila_call(e->l, &e->kc, acct->kaphila_key, "POST", "/hangup", body,
                                  on_update_hangup, u) != 0) {
            kaphila_result res = {.endpoint = "/hangup", .curl_rc = CURLE_FAILED_INIT};
            on_update_hangup(e->l, u, &res);
        }
        json_decref(body);
        return;
    }
    if (json_object_get(upd, "url") || json_object_get(upd, "twiml")) {
        const char *url = json_string_value(json_object_get(upd, "url"));
        const char *method = json_string_value(json_object_get(upd, "method"));
        if (url) {
            json_object_set_new(c->row.params, "url", json_string(url));
            json_object_set_new(c->row.params, "method", json_string(method ? method : "POST"));
        }
        reply_call(m->r, 200, c);
        exec_replace(c, url, method ? method : "POST",
                     json_string_value(json_object_get(upd, "twiml")));
        json_decref(upd);
        return;
    }
    reply_call(m->r, 200, c);
    json_decref(upd);
}

/* ---------------------------------------------------------------- 7 */

typedef struct kc_ctx {
    call      *c;
    kaphila_cb cb;
    void      *arg;
    char       path[64];
    json_t    *body;
} kc_ctx;

static void on_call_kaphila(loop *l, void *arg, const kaphila_result *res)
{
    kc_ctx *k = arg;
    call *c = k->c;
    engine *e = c->e;
    webhook_result wr = {0};
    form p;
    char labels[96];
    const char *key;
    json_t *v;

    log_context(NULL, c->row.account_sid, c->row.sid);
    snprintf(labels, sizeof labels, "endpoint=\"%s\",outcome=\"%s\"", res->endpoint,
             kaphila_outcome(res));
    metrics_inc(e->a->metrics, "twigate_kaphila_requests_total", labels, 1);
    snprintf(labels, sizeof labels, "endpoint=\"%s\"", res->endpoint);
    metrics_observe(e->a->metrics, "twigate_kaphila_request_seconds", labels, (double)res->latency_ms / 1000.0);

    /* The event log shows Kaphila commands like webhooks (minus the key). */
    form_init(&p);
    json_object_foreach(k->body, key, v) {
        char *s = json_is_string(v) ? strdup(json_string_value(v)) : json_dumps(v, JSON_ENCODE_ANY);
        if (s && form_add(&p, key, s) != FORM_OK) log_warn("engine", "event log truncated");
        free(s);
    }
    wr.http_status = res->http_status;
    wr.duration_ms = res->latency_ms;
    snprintf(wr.content_type, sizeof wr.content_type, "application/json");
    buf_init(&wr.body, 4096);
    char *rb = res->body ? json_dumps(res->body, JSON_COMPACT) : NULL;
    if (rb && buf_puts(&wr.body, rb) != BUF_OK) buf_reset(&wr.body);
    free(rb);
    char url[600];
    snprintf(url, sizeof url, "%s%s", e->kc.base_url, k->path);
    log_exchange(e, c->row.account_sid, c->row.sid, "POST", url, &p, &wr);
    form_fini(&p);
    buf_fini(&wr.body);

    if (!kaphila_ok(res) && !c->over) {
        int code, status;
        char msg[400];
        kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
        if (!k->cb && strcmp(k->path, "/hangup") != 0) {
            call_notify(c, code, 0, msg, url, "POST");
            call_hangup(c, "Kaphila command failed");
        }
    }
    if (k->cb) k->cb(l, k->arg, res);
    json_decref(k->body);
    call_unref(c);
    free(k);
}

int call_kaphila(call *c, const char *path, json_t *body, kaphila_cb cb, void *arg)
{
    engine *e = c->e;
    const config_account *acct = call_account(c);
    kc_ctx *k = calloc(1, sizeof *k);
    if (!k || !acct || !body) {
        free(k);
        json_decref(body);
        return -1;
    }
    json_object_set_new(body, "callId", json_string(c->row.kaphila_id));
    k->c = c;
    k->cb = cb;
    k->arg = arg;
    k->body = body;
    snprintf(k->path, sizeof k->path, "%s", path);
    call_ref(c);
    if (kaphila_call(e->l, &e->kc, acct->kaphila_key, "POST", path, body, on_call_kaphila, k) != 0) {
        /* Reported through the callback like any other failure. */
        kaphila_result res = {.endpoint = "other", .curl_rc = CURLE_FAILED_INIT};
        on_call_kaphila(e->l, k, &res);
    }
    return 0;
}

typedef struct wh_ctx {
    call      *c;
    webhook_cb cb;
    void      *arg;
    char      *method;
    form       params;
    bool       twiml;
} wh_ctx;

static void on_call_webhook(loop *l, void *arg, const webhook_result *res)
{
    wh_ctx *w = arg;
    call *c = w->c;
    engine *e = c->e;
    char labels[96];
    buf vars;
    log_context(NULL, c->row.account_sid, c->row.sid);
    log_exchange(e, c->row.account_sid, c->row.sid, w->method, res->url, &w->params, res);
    snprintf(labels, sizeof labels, "kind=\"%s\",outcome=\"%d\"", w->twiml ? "twiml" : "other",
             res->error_code);
    metrics_inc(e->a->metrics, "twigate_webhooks_total", labels, 1);
    if (w->twiml)
        metrics_observe(e->a->metrics, "twigate_twiml_fetch_seconds", NULL, (double)res->duration_ms / 1000.0);
    if (res->error_code && !res->aborted) {
        buf_init(&vars, 1 << 16);
        if (form_encode(&w->params, &vars) != BUF_OK) buf_reset(&vars);
        notify(e, c->row.account_sid, c->row.sid, res->error_code, 0, res->error_msg, res->url,
               w->method, buf_str(&vars), res);
        buf_fini(&vars);
    }
    w->cb(l, w->arg, res);
    form_fini(&w->params);
    free(w->method);
    call_unref(c);
    free(w);
}

int call_webhook(call *c, const char *url, const char *method, form *params,
                 bool twiml_fetch, webhook_cb cb, void *arg)
{
    const config *cfg = call_config(c);
    const config_account *acct = call_account(c);
    wh_ctx *w = calloc(1, sizeof *w);
    if (!w || !acct) { free(w); return -1; }
    form_init(&w->params);
    if (params) {   /* taken, not copied: ~30 pairs, two strings each */
        w->params = *params;
        form_init(params);
    }
    w->c = c;
    w->cb = cb;
    w->arg = arg;
    w->twiml = twiml_fetch;
    w->method = strdup(method ? method : "POST");
    if (!w->method) goto fail;
    webhook_req req = {
        .url = url, .method = w->method, .params = &w->params, .auth_token = acct->auth_token,
        .max_response = twiml_fetch ? (size_t)cfg->max_twiml_bytes : (size_t)cfg->webhook_max_response,
        .policy = engine_policy(c->e), .follow_redirects = twiml_fetch,
    };
    call_ref(c);
    if (webhook_send(c->e->l, &req, on_call_webhook, w) != 0) {
        call_unref(c);
        goto fail;
    }
    return 0;
fail:
    form_fini(&w->params);
    free(w->method);
    free(w);
    return -1;
}

static void on_hangup_done(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    call *c = arg;
    if (c->over || kaphila_ok(res)) return;
    if (res->http_status == 404 && c->row.kaphila_id[0]) {
        /* Kaphila no longer has the call: the hang-up's goal holds, and no
         * call.ended will come to say so. */
        call_end_reconciled(c, NULL, -1, "Kaphila answered 404 to /hangup");
        return;
    }
    if (res->http_status == 404) return;
    if (!c->hangup_tries) {   /* one notification, not one per retry */
        char msg[400];
        int code, status;
        kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
        call_notify(c, code, 0, msg, NULL, NULL);
    }
    c->hangup_sent = false;   /* a later attempt may succeed */
    reconcile_hangup_failed(c);
}

void call_hangup(call *c, const char *why)
{
    if (c->over || c->hangup_sent) return;
    c->hangup_sent = true;
    call_log(c, "hangup", json_pack("{s:s}", "reason", why ? why : ""));
    if (call_kaphila(c, "/hangup", json_object(), on_hangup_done, c) != 0)
        c->hangup_sent = false;
}

void call_notify(call *c, int code, int level, const char *message, const char *url,
                 const char *method)
{
    notify(c->e, c->row.account_sid, c->row.sid, code, level, message, url, method, NULL, NULL);
    call_log(c, "notification", json_pack("{s:i,s:s,s:s?}", "error_code", code, "message",
                                           message, "url", url));
}

void call_log(call *c, const char *what, json_t *detail)
{
    (void)txn_begin(c->e);
    json_t *rq = json_pack("{s:s,s:s,s:o}", "method", "TWIGATE", "url", what, "parameters",
                           detail ? detail : json_object());
    char when[TIMEFMT_RFC2822_LEN];
    timefmt_rfc2822(timefmt_now_ms(), when);
    json_t *rs = json_pack("{s:i,s:i,s:s}", "response_code", 0, "request_duration", 0,
                           "date_created", when);
    if (!rq || !rs ||
        store_event_insert(c->e->db, c->row.account_sid, c->row.sid, timefmt_now_ms(), rq, NULL, rs) != STORE_OK)
        log_warn("engine", "could not write the call event log");
    json_decref(rq);
    json_decref(rs);
}

static void time_limit_fired(loop *l, void *arg)
{
    (void)l;
    call *c = arg;
    c->time_limit = NULL;
    if (!c->over) {
        log_context(NULL, c->row.account_sid, c->row.sid);
        call_log(c, "time-limit", json_pack("{s:I}", "time_limit",
                 json_integer_value(json_object_get(c->row.params, "time_limit"))));
        call_hangup(c, "TimeLimit reached");
    }
    call_unref(c);
}

const char *call_row_sid(const call *c) { return c->row.sid; }
const char *call_row_account_sid(const call *c) { return c->row.account_sid; }
const char *call_row_kaphila_id(const call *c) { return c->row.kaphila_id; }
const char *call_row_status(const call *c) { return c->row.status; }
int64_t     call_row_answered_at(const call *c) { return c->row.answered_at; }
json_t     *call_row_param(const call *c, const char *key) { return json_object_get(c->row.params, key); }
json_t     *call_row_params(const call *c) { return c->row.params; }

engine       *call_engine(call *c) { return c->e; }
store_conn   *engine_db(engine *e) { return e->db; }
loop         *engine_loop(engine *e) { return e->l; }
bio          *engine_bio(engine *e) { return e->bio; }
const config *engine_config(engine *e) { return app_config(e->a); }
const char   *engine_public_url(engine *e) { return e->a->public_url; }
const char   *engine_kaphila_url(engine *e) { return e->kc.base_url; }

void engine_enqueue_callback(engine *e, const char *account_sid, const char *call_sid,
                             const char *kind, const char *url, const char *method,
                             const form *params)
{
    /* outbox_add wants a call for its identity and sequence; a stand-in
     * carrying just those is enough. */
    call *live = call_find(e, call_sid);
    call tmp = {0};
    call *c = live ? live : &tmp;
    if (!live) {
        snprintf(tmp.row.sid, sizeof tmp.row.sid, "%s", call_sid);
        snprintf(tmp.row.account_sid, sizeof tmp.row.account_sid, "%s", account_sid);
    }
    if (!txn_begin(e)) return;
    outbox_add(e, c, kind, url, method, params);
    (void)txn_commit(e, NULL, 0);
}

int engine_kaphila(engine *e, const char *account_sid, const char *method, const char *path,
                   json_t *body, kaphila_cb cb, void *arg)
{
    const config_account *acct = config_account_by_sid(app_config(e->a), account_sid);
    if (!acct) return -1;
    return kaphila_call(e->l, &e->kc, acct->kaphila_key, method, path, body, cb, arg);
}

int engine_kaphila_key(engine *e, const char *api_key, const char *method, const char *path,
                       json_t *body, kaphila_cb cb, void *arg)
{
    return kaphila_call(e->l, &e->kc, api_key, method, path, body, cb, arg);
}

void engine_notify(engine *e, const char *account_sid, const char *call_sid, int code,
                   int level, const char *message, const char *url)
{
    notify(e, account_sid, call_sid, code, level, message, url, NULL, NULL, NULL);
}

/* Services for the reconciler (reconcile.c): the decisions are there, the
 * state changes here, where the ladder and the batch live. */
reconciler **engine_reconciler_slot(engine *e) { return &e->rc; }
bool engine_is_stopping(engine *e) { return e->stopping; }
metrics *engine_metrics(engine *e) { return e->a->metrics; }

void engine_each_live(engine *e, void (*fn)(call *c, void *arg), void *arg)
{
    for (size_t b = 0; b < ENGINE_BUCKETS; b++)
        for (call *c = e->calls[b]; c; c = c->hnext) fn(c, arg);
}

static const char *reconciled_status(const call *c, const char *kstatus, bool *answered)
{
    static const char *const same[] = {"busy", "no-answer", "failed", "canceled"};
    *answered = c->rank >= RANK_ANSWERED;
    if (*answered) return "completed";
    for (size_t i = 0; kstatus && i < sizeof same / sizeof same[0]; i++)
        if (!strcasecmp(kstatus, same[i])) return same[i];
    if (kstatus && !strcasecmp(kstatus, "cancelled")) return "canceled";
    if (kstatus && (!strcasecmp(kstatus, "rejected") || !strcasecmp(kstatus, "busy"))) return "busy";
    if (kstatus && !strcasecmp(kstatus, "completed") && !c->cancel_requested) {
        *answered = true;   /* Kaphila says it completed: it was answered, unseen */
        return "completed";
    }
    return c->cancel_requested ? "canceled" : "failed";
}

void call_end_reconciled(call *c, const char *kstatus, int kduration, const char *why)
{
    engine *e = c->e;
    bool answered;
    char msg[300];
    if (c->over || !txn_begin(e)) return;
    log_context(NULL, c->row.account_sid, c->row.sid);
    const char *st = reconciled_status(c, kstatus, &answered);
    /* The best known end: the last event heard since the start, else the
     * row's last change (a restart: twigate heard nothing since). */
    int64_t end = c->last_event_ms > 0
                  ? timefmt_now_ms() - (loop_now_ms(e->l) - c->last_event_ms)
                  : c->row.date_updated;
    int dur = -1;
    const char *basis = "none";
    if (answered && kduration >= 0) { dur = kduration; basis = "kaphila"; }
    else if (answered && c->row.answered_at) {
        dur = end > c->row.answered_at ? (int)((end - c->row.answered_at) / 1000) : 0;
        basis = c->last_event_ms > 0 ? "last-event" : "last-update";
    } else if (answered) { dur = 0; basis = "unknown-answer"; }
    snprintf(msg, sizeof msg, "The end of this call was reconciled, not observed: %s; "
             "marked %s", why, st);
    call_notify(c, 20500, 1, msg, NULL, NULL);
    call_log(c, "reconciled", json_pack("{s:s,s:s?,s:s,s:i,s:s}", "reason", why, "kaphila_status",
                                        kstatus, "status", st, "duration", dur, "duration_basis", basis));
    metrics_inc(e->a->metrics, "twigate_reconciled_total", "outcome=\"ended\"", 1);
    finish_call(e, c, st, dur);
    if (txn_commit(e, c, 0)) retire(e, c);
}

void call_answered_reconciled(call *c)
{
    engine *e = c->e;
    json_t *ev = json_pack("{s:s,s:s,s:s}", "event", "call.answered", "callId", c->row.kaphila_id,
                           "status", "answered");
    if (!ev || c->over || c->rank >= RANK_ANSWERED) { json_decref(ev); return; }
    call_log(c, "reconciled", json_pack("{s:s}", "reason",
             "Kaphila reports the call answered; its call.answered never arrived"));
    metrics_inc(e->a->metrics, "twigate_reconciled_total", "outcome=\"answered\"", 1);
    call_ref(c);
    apply_event(e, c, ev, 0, NULL);
    call_unref(c);
    json_decref(ev);
}

void call_adopt_lost(call *c)
{
    engine *e = c->e;
    c->lost_since_ms = 0;
    if (c->over || !txn_begin(e)) return;
    log_context(NULL, c->row.account_sid, c->row.sid);
    call_notify(c, 20500, 1, "Kaphila placed this call although its /makecall answer was lost "
                "and the create was answered with an error; the call is hung up", NULL, NULL);
    metrics_inc(e->a->metrics, "twigate_reconciled_total", "outcome=\"adopted\"", 1);
    call_ref(c);
    call_hangup(c, "the create was answered with an error");
    finish_call(e, c, "failed", -1);
    if (txn_commit(e, c, 0)) retire(e, c);
    call_unref(c);
}

void call_drop_lost(call *c)
{
    engine *e = c->e;
    log_context(NULL, c->row.account_sid, c->row.sid);
    log_info("engine", "no sign of the call at Kaphila after its lost /makecall answer; dropped");
    metrics_inc(e->a->metrics, "twigate_reconciled_total", "outcome=\"dropped\"", 1);
    c->lost_since_ms = 0;
    if (!txn_begin(e) || store_call_delete(e->db, c->row.account_sid, c->row.sid) != STORE_OK) {
        log_error("engine", "could not delete a call whose /makecall answer was lost");
        return;
    }
    c->over = true;
    c->rank = RANK_OVER;
    reconcile_forget(c);
    call_unlink(e, c);
    call_unref(c);   /* the table's */
}

/* After a lost batch (disk full, I/O errors) memory is ahead of the store:
 * calls moved on, some even retired, while their rows still say what they
 * said before. Once writes work again (the reconciler calls this every
 * sweep until it succeeds): the live calls' rows are written from memory,
 * and rows still live in the store but not in memory (retired in the lost
 * batch) are loaded back and checked with Kaphila at once, as after a
 * restart, so their end and `completed` callback — never sent, as the
 * batch was rolled back — happen for good. */
typedef struct resync_rows { store_call *v; size_t n, cap; } resync_rows;

static void resync_collect(store_call *row, void *arg)
{
    resync_rows *rs = arg;
    if (rs->n == rs->cap) {
        size_t ncap = rs->cap ? rs->cap * 2 : 256;
        store_call *nv = realloc(rs->v, ncap * sizeof *nv);
        if (!nv) return;
        rs->v = nv;
        rs->cap = ncap;
    }
    rs->v[rs->n] = *row;
    rs->v[rs->n++].params = json_incref(row->params);
}

typedef struct resync_calls { call **v; size_t n, cap; } resync_calls;

static bool resync_collect_call(resync_calls *rc, call *c)
{
    if (rc->n == rc->cap) {
        size_t ncap = rc->cap ? rc->cap * 2 : 64;
        call **nv = realloc(rc->v, ncap * sizeof *nv);
        if (!nv) return false;
        rc->v = nv;
        rc->cap = ncap;
    }
    rc->v[rc->n++] = c;
    return true;
}

void engine_resync(engine *e)
{
    resync_rows rs = {0};
    resync_calls starts = {0};
    size_t loaded = 0;
    if (!e->resync || !batch_flush(e) || !txn_begin(e)) return;
    if (store_write_probe(e->db) != STORE_OK) { batch_failed(e); return; }
    for (size_t b = 0; b < ENGINE_BUCKETS; b++)
        for (call *c = e->calls[b]; c; c = c->hnext)
            if (!c->over && !c->lost_since_ms && !txn_commit(e, c, 0)) return;
    if (!batch_flush(e)) return;   /* still failing: the next sweep tries again */
    /* Answered in a lost batch: the program never started. Start it now
     * (collected first: a start that fails at once retires its call). */
    for (size_t b = 0; b < ENGINE_BUCKETS; b++)
        for (call *c = e->calls[b]; c; c = c->hnext)
            if (!c->over && c->rank == RANK_ANSWERED && !c->x && !c->pending_hangup &&
                resync_collect_call(&starts, c))
                call_ref(c);
    for (size_t i = 0; i < starts.n; i++) {
        call *c = starts.v[i];
        if (!c->over) {
            start_time_limit(e, c);
            rec_call_answered(c);
            exec_start(c);
        }
        call_unref(c);
    }
    free(starts.v);
    if (store_call_each_live(e->db, resync_collect, &rs) != STORE_OK) goto out;
    for (size_t i = 0; i < rs.n; i++) {
        call *c = call_find(e, rs.v[i].sid);
        if (c && !c->over) continue;
        if (c) retire(e, c);   /* ended in memory only: the store's word wins */
        if (!(c = call_new(e, &rs.v[i]))) continue;
        c->last_event_ms = 0;   /* checked with Kaphila by the next sweep */
        loaded++;
        if (c->rank >= RANK_ANSWERED) c->pending_hangup = true;
    }
    e->resync = false;
    log_info("engine", "store writable again: %zu call(s) reloaded from it", loaded);
out:
    for (size_t i = 0; i < rs.n; i++) store_call_fini(&rs.v[i]);
    free(rs.v);
}

/* ---------------------------------------------------------------- 8 */

static void probe_tick(loop *l, void *arg);

static void on_probe(loop *l, void *arg, const kaphila_result *res)
{
    engine *e = arg;
    bool ok = res->http_status >= 200 && res->http_status < 300;
    if (ok != atomic_load(&e->kaphila_ok))
        log_info("engine", "Kaphila %s (GET /health: %d)", ok ? "reachable" : "unreachable",
                 res->http_status);
    atomic_store(&e->kaphila_ok, ok);
    e->probing = false;
    if (!loop_timer_add(l, ENGINE_HEALTH_PROBE_MS, probe_tick, e))
        log_warn("engine", "cannot schedule the Kaphila health probe");
}

static void probe_tick(loop *l, void *arg)
{
    engine *e = arg;
    /* GET /health needs no key; an empty bearer is ignored by Kaphila. */
    if (e->probing) return;
    e->probing = true;
    if (kaphila_call(l, &e->kc, "", "GET", "/health", NULL, on_probe, e) != 0) {
        kaphila_result res = {.endpoint = "/health", .curl_rc = CURLE_FAILED_INIT};
        on_probe(l, e, &res);
    }
}

bool engine_kaphila_ready(engine *e) { return e && atomic_load(&e->kaphila_ok); }

static void recover_call(store_call *row, void *arg)
{
    engine *e = arg;
    store_call copy = *row;
    row->params = json_incref(row->params);   /* the caller frees its own */
    call *c = call_new(e, &copy);
    if (!c) return;
    c->last_event_ms = 0;   /* nothing heard since the restart: checked at once */
    log_context(NULL, c->row.account_sid, c->row.sid);
    if (!c->row.kaphila_id[0]) {
        /* Crashed between the insert and Kaphila's answer: we cannot know
         * whether it was dialled, and nobody was told it exists. */
        c->pending_fail = true;
    } else if (c->rank >= RANK_ANSWERED) {
        /* The TwiML program counter is not persisted: end the call cleanly
         * rather than replay the customer's application from the top. */
        c->pending_hangup = true;
    }
}

static void recover_kevent(int64_t id, const char *call_sid, const char *body, void *arg)
{
    engine *e = arg;
    json_t *ev = json_loads(body, 0, NULL);
    emsg m = {.k = M_KEVENT, .kid = id, .j = ev};
    snprintf(m.sid, sizeof m.sid, "%s", call_sid);
    if (!ev || !json_is_object(ev) || !json_is_string(json_object_get(ev, "event"))) {
        if (store_kevent_done(e->db, id) != STORE_OK) log_warn("engine", "bad stored event %lld", (long long)id);
    } else {
        handle_kevent(e, &m);
    }
    json_decref(ev);
}

static void recover_outbox(store_outbox *o, void *arg)
{
    engine *e = arg;
    ob_item *it = calloc(1, sizeof *it);
    if (!it) return;
    it->o = *o;
    o->url = o->method = o->params = NULL;   /* moved */
    outbox_enqueue(e, it);
}

static void recover(engine *e)
{
    if (store_call_each_live(e->db, recover_call, e) != STORE_OK)
        log_error("engine", "could not load live calls");
    if (store_kevent_each_pending(e->db, recover_kevent, e) != STORE_OK)
        log_error("engine", "could not replay stored Kaphila events");
    /* Calls whose fate is unknowable are settled after the replay, which
     * may have ended them already. */
    for (size_t b = 0; b < ENGINE_BUCKETS; b++) {
        call *c = e->calls[b];
        while (c) {
            call *next = c->hnext;
            log_context(NULL, c->row.account_sid, c->row.sid);
            if (c->pending_fail && !c->over && txn_begin(e)) {
                notify(e, c->row.account_sid, c->row.sid, 20500, 0,
                       "twigate stopped before Kaphila confirmed this call; marked failed",
                       NULL, NULL, NULL, NULL);
                finish_call(e, c, "failed", -1);
                if (txn_commit(e, c, 0)) retire(e, c);
            } else if (c->pending_hangup && !c->over) {
                call_notify(c, 20500, 1, "twigate restarted during this call; the TwiML"
                            " program cannot be resumed, so the call is ended", NULL, NULL);
                call_hangup(c, "restart");
            }
            c = next;
        }
    }
    if (store_outbox_each_pending(e->db, recover_outbox, e) != STORE_OK)
        log_error("engine", "could not load the outbox");
    rec_recover(e);
    log_info("engine", "recovered %zu live calls", atomic_load(&e->live));
    reconcile_start(e);
}

/* DELETE …/Calls/{CA}.json. Only the engine writes calls (docs/architecture.md):
 * the HTTP thread saw an ended row, but a call still in the table may yet
 * write it (its final status, a retry after a lost batch), so it is refused
 * as still in progress; otherwise the row goes in the batch, committed now
 * so the 204 means it is gone. */
static void handle_delete(engine *e, emsg *m)
{
    log_context(NULL, m->account_sid, m->sid);
    if (call_find(e, m->sid)) {
        engine_reply_error(m->r, 21220, 400, "Invalid call state: the call is still in progress;"
                         " end it with Status=completed (or canceled) before deleting it");
        return;
    }
    if (!txn_begin(e) || store_call_delete(e->db, m->account_sid, m->sid) != STORE_OK ||
        !batch_flush(e)) {
        engine_reply_error(m->r, 20503, 503, NULL);
        return;
    }
    engine_reply_bytes(m->r, 204, NULL, "", 0);
}

static void on_msg(loop *l, void *msg)
{
    engine *e = loop_ctx(l);
    emsg *m = msg;
    if (!e->db) e->db = store_conn_acquire(e->a->store);
    if (!e->db) {
        log_error("engine", "no database connection; message dropped");
        if (engine_reply_some(m->r) && m->k == M_KEVENT) kev_reply(m->r, 503, kev_unavailable);
        else if (engine_reply_some(m->r)) engine_reply_error(m->r, 20503, 503, NULL);
        goto out;
    }
    switch (m->k) {
    case M_ORIGINATE: handle_originate(e, m); break;
    case M_UPDATE:    handle_update(e, m); m->j = NULL; break;
    case M_DELETE:    handle_delete(e, m); break;
    case M_KEVENT:    if (engine_reply_some(m->r)) handle_kevent_post(e, m); else handle_kevent(e, m); break;
    case M_RECOVER:   recover(e); probe_tick(l, e); break;
    case M_CALLBACK:  m->fn(e, m->arg); break;
    }
out:
    log_context_clear();
    json_decref(m->j);
    free(m);
}

engine *engine_create(app *a, char *err, size_t errlen)
{
    engine *e = calloc(1, sizeof *e);
    if (!e) { snprintf(err, errlen, "out of memory"); return NULL; }
    const config *cfg = app_config(a);
    e->a = a;
    e->kc.base_url = a->kaphila_url;
    e->kc.timeout_ms = cfg->kaphila_timeout_ms;
    e->kc.connect_ms = cfg->kaphila_connect_ms;
    e->l = loop_create("engine", on_msg, e);
    if (!e->l) {
        snprintf(err, errlen, "cannot create the engine loop");
        free(e);
        return NULL;
    }
    e->bio = bio_create("engine-bio", err, errlen);
    if (!e->bio) {
        loop_destroy(e->l);
        free(e);
        return NULL;
    }
    loop_set_idle(e->l, engine_idle, e);
    loop_set_timer_observer(e->l, engine_timer_late, e);
    return e;
}

static bool post(engine *e, emsg *m)
{
    if (loop_post(e->l, m)) return true;
    free(m);
    return false;
}

int engine_start(engine *e)
{
    emsg *m = calloc(1, sizeof *m);
    if (!m) return -1;
    m->k = M_RECOVER;
    if (loop_start(e->l) != 0) { free(m); return -1; }
    e->started = true;
    return post(e, m) ? 0 : -1;
}

bool engine_originate(engine *e, engine_reply r, store_call *call_row, json_t *warnings)
{
    emsg *m = calloc(1, sizeof *m);
    if (!m) { json_decref(warnings); return false; }
    m->k = M_ORIGINATE;
    m->r = r;
    m->call = *call_row;
    m->j = warnings;
    if (!loop_post(e->l, m)) { json_decref(warnings); free(m); return false; }
    call_row->params = NULL;   /* moved */
    return true;
}

bool engine_update(engine *e, engine_reply r, const char *account_sid, const char *call_sid,
                   json_t *upd)
{
    emsg *m = calloc(1, sizeof *m);
    if (!m) { json_decref(upd); return false; }
    m->k = M_UPDATE;
    m->r = r;
    m->j = upd;
    snprintf(m->sid, sizeof m->sid, "%s", call_sid);
    snprintf(m->account_sid, sizeof m->account_sid, "%s", account_sid);
    if (!loop_post(e->l, m)) { json_decref(upd); free(m); return false; }
    return true;
}

bool engine_delete_call(engine *e, engine_reply r, const char *account_sid, const char *call_sid)
{
    emsg *m = calloc(1, sizeof *m);
    if (!m) return false;
    m->k = M_DELETE;
    m->r = r;
    snprintf(m->sid, sizeof m->sid, "%s", call_sid);
    snprintf(m->account_sid, sizeof m->account_sid, "%s", account_sid);
    if (!loop_post(e->l, m)) { free(m); return false; }
    return true;
}

bool engine_kevent(engine *e, engine_reply r, const char *token, json_t *ev)
{
    emsg *m = calloc(1, sizeof *m);
    if (!m) { json_decref(ev); return false; }
    m->k = M_KEVENT;
    m->r = r;
    m->j = ev;
    snprintf(m->token, sizeof m->token, "%s", token);
    if (!loop_post(e->l, m)) { json_decref(ev); free(m); return false; }
    return true;
}

size_t engine_live_calls(const engine *e) { return e ? atomic_load(&e->live) : 0; }

int engine_inflight_deliveries(engine *e)
{
    return e ? atomic_load(&e->inflight_deliveries) : 0;
}

bool engine_submit(engine *e, void (*fn)(engine *e, void *arg), void *arg)
{
    emsg *m = calloc(1, sizeof *m);
    if (!m) return false;
    m->k = M_CALLBACK;
    m->fn = fn;
    m->arg = arg;
    if (!loop_post(e->l, m)) { free(m); return false; }
    return true;
}

typedef struct drain_ctx { engine *e; int64_t deadline; atomic_bool done; } drain_ctx;

void engine_stop(engine *e, int grace_ms)
{
    if (!e || !e->started) return;
    /* Let in-flight deliveries finish, bounded by the grace period;
     * whatever is still pending stays in the outbox for the next start. */
    int64_t deadline = timefmt_mono_ms() + grace_ms;
    while (atomic_load(&e->inflight_deliveries) > 0 && timefmt_mono_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* File work first: the pass under way finishes and posts its result to
     * the loop, still running; queued passes are cancelled (their rows stay
     * pending for the next start). */
    bio_stop(e->bio);
    loop_stop(e->l);
    e->started = false;
}

void engine_destroy(engine *e)
{
    if (!e) return;
    e->stopping = true;
    /* Live calls: their executor's timers and the time limit each hold a
     * reference that loop_destroy would drop without running them. */
    for (size_t b = 0; b < ENGINE_BUCKETS; b++)
        for (call *c = e->calls[b]; c; c = c->hnext) {
            reconcile_forget(c);
            if (c->x) exec_call_ended(c);
            if (c->time_limit) {
                loop_timer_cancel(e->l, c->time_limit);
                c->time_limit = NULL;
                call_unref(c);
            }
        }
    bio_destroy(e->bio);  /* an engine that never started: its queued passes are cancelled */
    e->bio = NULL;
    loop_destroy(e->l);   /* in-flight transfers are cancelled: their callbacks run now */
    netpolicy_unref(e->policy);
    e->policy = NULL;
    if (e->db) (void)batch_flush(e);   /* what those callbacks wrote */
    reconcile_destroy(e->rc);
    for (size_t b = 0; b < ENGINE_BUCKETS; b++) {
        while (e->calls[b]) {
            call *c = e->calls[b];
            e->calls[b] = c->hnext;
            c->hnext = NULL;
            if (engine_reply_some(c->create_req)) engine_reply_error(c->create_req, 20503, 503, "twigate is stopping");
            c->create_req = (engine_reply){0};
            call_unref(c);
        }
        while (e->queues[b]) {
            obq *q = e->queues[b];
            e->queues[b] = q->hnext;
            while (q->head) {
                ob_item *it = q->head;
                q->head = it->next;
                store_outbox_fini(&it->o);
                free(it);
            }
            free(q);
        }
    }
    acks_reply(e, false);   /* nothing left to commit them: Kaphila keeps them */
    free(e->acks);
    free(e->origs);
    store_conn_release(e->db);
    free(e);
}
