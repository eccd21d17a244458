/* reconcile.c — no call stays live forever (issue 18).
 *
 * Kaphila posts each event once, and twigate can die, lose its disk or time
 * out at any moment, so an event can be lost and with it a call's end. The
 * reconciler asks Kaphila what it knows, with its two reads that are not
 * rate limited (GET /calls/:callId and GET /calls), and settles what it
 * finds through the engine (engine_int.h), which owns the status ladder:
 *
 *   1. quiet calls: a live call with no event for kaphila.reconcile_quiet_ms
 *      (every call, at start-up) is looked up; Kaphila answering 404 or an
 *      ended status ends it the Twilio way (call_end_reconciled), an
 *      answered status it never told us about starts its TwiML;
 *   2. failed hang-ups: retried with doubling backoff, then left to the
 *      quiet check, which finds the call ended or hangs it up again;
 *   3. lost /makecall answers: the call waits kaphila.orphan_wait_ms for
 *      its events (the engine adopts and hangs it up if they come), then a
 *      GET /calls is made before it is dropped;
 *   4. calls Kaphila has on one of our keys that no live call owns
 *      ("suspects"): hung up once they have been listed for longer than
 *      a /makecall can take to answer, so a call whose answer is still in
 *      flight is never mistaken for a stranger.
 *
 * One sweep every kaphila.reconcile_interval_ms does 1, 3 and 4. Nothing
 * here touches the hot paths: the engine only stamps last_event_ms.
 *
 * Threads: the engine loop's, but for one step. A GET /calls answer is
 * parsed on the engine's bio thread (parse_listing): 10,000 live calls are
 * ~2 MB of JSON and 50–150 ms of jansson, which on the loop held every
 * timer and exchange of every call for that long, once a sweep. The bio
 * thread keeps only the ids of the calls Kaphila has up (a list_ctx it
 * owns until engine_submit hands it back); the judging is on the loop. */
#include "engine_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/metrics.h"
#include "net/bio.h"
#include "store/cluster.h"

/* GET /calls/:callId in flight at once: a restart with 20,000 live calls
 * checks them in waves rather than opening 20,000 transfers. */
#define RECONCILE_MAX_INFLIGHT 64
/* Unknown Kaphila calls remembered between listings; beyond it the newest
 * wait for a later sweep. */
#define RECONCILE_MAX_SUSPECTS 1024
/* Distinct Kaphila keys listed per sweep. */
#define RECONCILE_MAX_KEYS 64
/* The longest /hangup backoff step. */
#define RECONCILE_MAX_BACKOFF_MS (10 * 60 * 1000)

typedef struct suspect {
    char    account_sid[SID_SIZE];   /* whose key listed it */
    char    call_id[STORE_KID_LEN];
    int64_t first_seen_ms;
    bool    seen;                    /* in the latest listing of its key */
    bool    hung;                    /* /hangup sent */
} suspect;

struct reconciler {
    engine     *e;
    loop_timer *tick;
    int         inflight;            /* GET /calls/:callId */
    atomic_int  listing;             /* GET /calls asked, not judged (bio cancels: any thread) */
    bool        backlog;             /* the last sweep hit RECONCILE_MAX_INFLIGHT */
    bool        sweeping;            /* in check_due: no re-entry from a callback */
    suspect    *sus;
    size_t      n_sus;
};

typedef struct check_ctx { reconciler *r; call *c; } check_ctx;
/* One key's GET /calls, from the request to its judgement. */
typedef struct list_ctx {
    reconciler *r;
    int64_t     started_ms;
    char        account_sid[SID_SIZE];
    /* the answer, for the bio thread */
    char       *raw;
    size_t      raw_len;
    int         http_status;
    /* what it made of it, for the loop */
    bool        ok;                     /* kaphila_ok: a listing to judge */
    char      (*ids)[STORE_KID_LEN];    /* the calls listed that are not ended */
    size_t      n_ids;
} list_ctx;

static void check_due(reconciler *r);

static const config *cfg_of(reconciler *r) { return engine_config(r->e); }

/* ---------------------------------------------------------------- status */

typedef enum { K_ALIVE, K_ANSWERED, K_ENDED } kstate;

/* Kaphila's status words are loosely specified: what is not known to mean
 * "ended" or "answered" is taken as alive, and the next quiet check asks
 * again. */
static kstate classify(const char *st)
{
    static const char *const ended[] = {
        "completed", "ended", "hangup", "hungup", "busy", "no-answer", "noanswer", "failed",
        "canceled", "cancelled", "rejected", "terminated", "finished",
    };
    static const char *const answered[] = {"answered", "in-progress", "up", "active",
                                           "bridged", "connected"};
    if (!st) return K_ALIVE;
    for (size_t i = 0; i < sizeof ended / sizeof ended[0]; i++)
        if (!strcasecmp(st, ended[i])) return K_ENDED;
    for (size_t i = 0; i < sizeof answered / sizeof answered[0]; i++)
        if (!strcasecmp(st, answered[i])) return K_ANSWERED;
    return K_ALIVE;
}

/* ---------------------------------------------------------------- 1 */

static void on_check(loop *l, void *arg, const kaphila_result *res)
{
    check_ctx *x = arg;
    reconciler *r = x->r;
    call *c = x->c;
    r->inflight--;
    c->checking = false;
    if (engine_is_stopping(r->e) || call_is_over(c)) goto out;
    log_context(NULL, call_row_account_sid(c), call_row_sid(c));
    if (res->http_status == 404) {
        call_end_reconciled(c, NULL, -1, "Kaphila no longer has the call (GET /calls/:callId: 404)");
        goto out;
    }
    if (!kaphila_ok(res)) {   /* asked again after another quiet period */
        c->last_event_ms = loop_now_ms(l);
        goto out;
    }
    const char *st = json_string_value(json_object_get(res->body, "status"));
    json_t *d = json_object_get(res->body, "callDuration");
    if (!json_is_integer(d)) d = json_object_get(res->body, "duration");
    switch (classify(st)) {
    case K_ENDED:
        call_end_reconciled(c, st, json_is_integer(d) ? (int)json_integer_value(d) : -1,
                            "Kaphila reports the call ended");
        goto out;
    case K_ANSWERED:
        c->last_event_ms = loop_now_ms(l);   /* known alive now */
        if (strcmp(call_row_status(c), "in-progress") != 0) call_answered_reconciled(c);
        break;
    case K_ALIVE:
        c->last_event_ms = loop_now_ms(l);
        if (st && strcasecmp(st, "ringing") && strcasecmp(st, "initiated"))
            log_debug("reconcile", "Kaphila status '%.40s' taken as alive", st);
        break;
    }
    if (c->resume_state && !call_is_over(c)) {
        /* Restarted with a checkpoint, and Kaphila still has the call up. */
        call_resume(c);
    }
    if (c->pending_hangup && !call_is_over(c)) {
        /* Reloaded after a storage fault, answered: its program is lost. */
        c->pending_hangup = false;
        call_notify(c, 20500, 1, "a storage fault interrupted this call; the TwiML program "
                    "cannot be resumed, so the call is ended", NULL, NULL);
        call_hangup(c, "storage fault");
    }
    if (c->hangup_wanted && !call_is_over(c)) {
        /* Every retry of its /hangup failed, and Kaphila still has it: once
         * more; further failures keep doubling the backoff, up to 10 min. */
        c->hangup_wanted = false;
        call_hangup(c, "reconciler: still live at Kaphila after failed hang-ups");
    }
out:
    call_unref(c);
    free(x);
    /* A wave of start-up checks is done: the next one need not wait for
     * the timer. */
    if (r->backlog && !r->inflight && !r->sweeping && !engine_is_stopping(r->e)) check_due(r);
}

static void check_call(reconciler *r, call *c)
{
    check_ctx *x = calloc(1, sizeof *x);
    char path[96];
    if (!x) return;
    x->r = r;
    x->c = c;
    snprintf(path, sizeof path, "/calls/%s", call_row_kaphila_id(c));
    call_ref(c);
    c->checking = true;
    r->inflight++;
    if (engine_kaphila(r->e, call_row_account_sid(c), "GET", path, NULL, on_check, x) != 0) {
        kaphila_result res = {.endpoint = "/calls", .curl_rc = CURLE_FAILED_INIT};
        on_check(engine_loop(r->e), x, &res);
    }
}

typedef struct due_ctx {
    reconciler *r;
    int64_t     now;
    call       *due[RECONCILE_MAX_INFLIGHT];
    int         n, room;
    bool        more;
} due_ctx;

static void find_due(call *c, void *arg)
{
    due_ctx *d = arg;
    const config *cfg = cfg_of(d->r);
    if (call_is_over(c) || c->checking || !call_row_kaphila_id(c)[0] ||
        engine_reply_some(c->create_req) || c->lost_since_ms || c->hangup_retry)
        return;
    if (!c->hangup_wanted && c->last_event_ms &&
        d->now - c->last_event_ms < cfg->reconcile_quiet_ms)
        return;
    if (d->n >= d->room) { d->more = true; return; }
    d->due[d->n++] = c;
}

/* ---------------------------------------------------------------- 3, 4 */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* For arrays of char[STORE_KID_LEN]: the same order as cmp_str. */
static int cmp_kid(const void *a, const void *b)
{
    return strcmp(a, b);
}

typedef struct ids_ctx { const char **ids; size_t n, cap; } ids_ctx;

static void collect_id(call *c, void *arg)
{
    ids_ctx *x = arg;
    if (call_row_kaphila_id(c)[0] && x->n < x->cap) x->ids[x->n++] = call_row_kaphila_id(c);
}

typedef struct lost_ctx { call *list[RECONCILE_MAX_INFLIGHT]; int n; int64_t before; } lost_ctx;

static void find_lost(call *c, void *arg)
{
    lost_ctx *x = arg;
    if (c->lost_since_ms && !call_is_over(c) && c->lost_since_ms <= x->before &&
        x->n < RECONCILE_MAX_INFLIGHT)
        x->list[x->n++] = c;
}

static void on_unowned_hangup(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    char *id = arg;
    log_warn("reconcile", "Kaphila call %s, not owned by twigate: /hangup -> %d", id,
             res->http_status);
    free(id);
}

/* A key's suspects sorted by call id (judge_listing's idx), for a binary
 * search: a listing of 12,000 strangers against 1,024 suspects was 12
 * million strcmp (34 ms of the engine's thread) searched one by one. */
static int cmp_sus(const void *a, const void *b)
{
    return strcmp((*(suspect *const *)a)->call_id, (*(suspect *const *)b)->call_id);
}

static suspect *sus_lookup(suspect *const *idx, size_t n, const char *id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(idx[mid]->call_id, id);
        if (c == 0) return idx[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* The calls Kaphila lists for one key, against the live calls: a call
 * nobody owns is a suspect; one listed for longer than a /makecall can
 * take to answer (kaphila.timeout_ms, plus a sweep) is hung up. */
static void judge_listing(reconciler *r, const list_ctx *lc)
{
    engine *e = r->e;
    const config *cfg = cfg_of(r);
    int64_t now = loop_now_ms(engine_loop(e));
    ids_ctx ids = {0};
    size_t i;

    ids.cap = engine_live_calls(e) + 16;
    ids.ids = malloc(ids.cap * sizeof *ids.ids);
    suspect **idx = malloc((r->n_sus + 1) * sizeof *idx);
    size_t n_idx = 0, k = 0;
    if (!ids.ids || !idx) {
        free(ids.ids);
        free(idx);
        return;
    }
    engine_each_live(e, collect_id, &ids);
    qsort(ids.ids, ids.n, sizeof *ids.ids, cmp_str);

    for (i = 0; i < r->n_sus; i++)
        if (!strcmp(r->sus[i].account_sid, lc->account_sid)) {
            r->sus[i].seen = false;
            idx[n_idx++] = &r->sus[i];
        }
    qsort(idx, n_idx, sizeof *idx, cmp_sus);
    /* Both lists in strcmp order (the listing sorted and without repeats
     * by parse_listing): one walk finds the listed calls that are ours. A
     * suspect added below is not in idx, and need not be: no id comes
     * twice. */
    for (size_t j = 0; j < lc->n_ids; j++) {
        const char *id = lc->ids[j];
        while (k < ids.n && strcmp(ids.ids[k], id) < 0) k++;
        if (k < ids.n && !strcmp(ids.ids[k], id)) continue;
        suspect *s = sus_lookup(idx, n_idx, id);
        if (!s && r->n_sus < RECONCILE_MAX_SUSPECTS) {
            s = &r->sus[r->n_sus++];
            memset(s, 0, sizeof *s);
            snprintf(s->account_sid, sizeof s->account_sid, "%s", lc->account_sid);
            snprintf(s->call_id, sizeof s->call_id, "%s", id);
            s->first_seen_ms = now;
        }
        if (s) s->seen = true;
    }
    free(ids.ids);
    free(idx);

    /* Forget what Kaphila no longer lists; hang up what has waited enough. */
    int64_t grace = (int64_t)cfg->kaphila_timeout_ms + cfg->reconcile_interval_ms;
    for (i = 0; i < r->n_sus;) {
        suspect *s = &r->sus[i];
        if (strcmp(s->account_sid, lc->account_sid) != 0) { i++; continue; }
        if (!s->seen) { r->sus[i] = r->sus[--r->n_sus]; continue; }
        if (!s->hung && now - s->first_seen_ms >= grace && engine_db_shared(e) &&
            store_call_live_kaphila(engine_db(e), s->call_id) == STORE_OK) {
            /* Live in the database, so owned — by another instance sharing
             * it (store/cluster.h), whose calls this one's memory does not
             * hold: not a stranger. (Alone on SQLite, memory holds every
             * live call: the database is not asked.) */
            r->sus[i] = r->sus[--r->n_sus];
            continue;
        }
        if (!s->hung && now - s->first_seen_ms >= grace) {
            json_t *body = json_pack("{s:s}", "callId", s->call_id);
            char *id = strdup(s->call_id);
            log_context(NULL, s->account_sid, NULL);
            log_warn("reconcile", "Kaphila call %s is not owned by twigate; hanging it up",
                     s->call_id);
            metrics_inc(engine_metrics(e), "twigate_reconciled_total", "outcome=\"unowned\"", 1);
            s->hung = true;
            if (!body || !id ||
                engine_kaphila(e, s->account_sid, "POST", "/hangup", body, on_unowned_hangup, id) != 0)
                free(id);
            json_decref(body);
        }
        i++;
    }
}

static void list_free(list_ctx *lc)
{
    free(lc->raw);
    free(lc->ids);
    free(lc);
}

/* Any thread (the bio thread): the answer in lc->raw becomes lc->ok and
 * lc->ids. classify is a pure function; nothing of the engine is read. */
static void parse_listing(list_ctx *lc)
{
    kaphila_result res = {.endpoint = "/calls", .http_status = lc->http_status};
    if (lc->raw) res.body = json_loadb(lc->raw, lc->raw_len, 0, NULL);
    free(lc->raw);
    lc->raw = NULL;
    json_t *calls = json_object_get(res.body, "calls");
    lc->ok = kaphila_ok(&res) && json_is_array(calls);
    size_t n = lc->ok ? json_array_size(calls) : 0;
    if (n && !(lc->ids = malloc(n * sizeof *lc->ids))) {
        lc->ok = false;   /* as if the listing failed: the next sweep asks again */
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(calls, i);
        const char *id = json_string_value(json_object_get(it, "callId"));
        const char *st = json_string_value(json_object_get(it, "status"));
        if (!id || !*id || strlen(id) >= STORE_KID_LEN || classify(st) == K_ENDED) continue;
        memcpy(lc->ids[lc->n_ids++], id, strlen(id) + 1);
    }
    json_decref(res.body);
    /* Sorted, each id once: the engine walks it beside its own sorted ids
     * (judge_listing) instead of searching for each. */
    if (lc->n_ids > 1) qsort(lc->ids, lc->n_ids, sizeof *lc->ids, cmp_kid);
    size_t kept = 0;
    for (size_t i = 0; i < lc->n_ids; i++)
        if (!kept || strcmp(lc->ids[kept - 1], lc->ids[i]) != 0)
            memmove(lc->ids[kept++], lc->ids[i], sizeof *lc->ids);
    lc->n_ids = kept;
}

/* Engine thread: the parsed listing judged, and what it settles. */
static void listing_done(engine *e, void *arg)
{
    list_ctx *lc = arg;
    reconciler *r = lc->r;
    atomic_fetch_sub(&r->listing, 1);
    if (engine_is_stopping(e)) goto out;
    if (lc->ok) judge_listing(r, lc);
    /* Lost /makecall answers old enough before this listing began: no event
     * named them, and GET /calls has now been asked (had Kaphila dialled,
     * the call is a suspect and will be hung up). */
    const config *cfg = cfg_of(r);
    const config_account *listed = config_account_by_sid(cfg, lc->account_sid);
    lost_ctx lost = {.before = lc->started_ms - cfg->orphan_wait_ms};
    engine_each_live(r->e, find_lost, &lost);
    for (int i = 0; i < lost.n; i++) {
        /* Accounts may share a Kaphila key: one listing covers them all. */
        const config_account *a = config_account_by_sid(cfg, call_row_account_sid(lost.list[i]));
        if (!a || (listed && !strcmp(a->kaphila_key, listed->kaphila_key)))
            call_drop_lost(lost.list[i]);
    }
out:
    list_free(lc);
}

/* Bio thread: the bio stopped before parsing (twigate is stopping), or the
 * engine's queue is full: nothing is judged, the next sweep asks again. */
static void parse_cancel(void *arg)
{
    list_ctx *lc = arg;
    atomic_fetch_sub(&lc->r->listing, 1);
    list_free(lc);
}

static void parse_run(void *arg)
{
    list_ctx *lc = arg;
    parse_listing(lc);
    if (!engine_submit(lc->r->e, listing_done, lc)) parse_cancel(lc);
}

static void on_list(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    list_ctx *lc = arg;
    engine *e = lc->r->e;
    lc->http_status = res->http_status;
    lc->raw = kaphila_take_raw(res, &lc->raw_len);
    if (engine_is_stopping(e)) {
        listing_done(e, lc);
        return;
    }
    if (!bio_submit(engine_bio(e), parse_run, parse_cancel, lc)) {
        /* The bio's queue is full (of file work): parsed here, as before. */
        parse_listing(lc);
        listing_done(e, lc);
    }
}

static void list_key(reconciler *r, const char *account_sid)
{
    list_ctx *lc = calloc(1, sizeof *lc);
    if (!lc) return;
    lc->r = r;
    lc->started_ms = loop_now_ms(engine_loop(r->e));
    snprintf(lc->account_sid, sizeof lc->account_sid, "%s", account_sid);
    atomic_fetch_add(&r->listing, 1);
    if (engine_kaphila_get_raw(r->e, account_sid, "/calls", on_list, lc) != 0) {
        kaphila_result res = {.endpoint = "/calls", .curl_rc = CURLE_FAILED_INIT};
        on_list(engine_loop(r->e), lc, &res);
    }
}

/* ---------------------------------------------------------------- sweep */

static void check_due(reconciler *r)
{
    due_ctx d = {.r = r, .now = loop_now_ms(engine_loop(r->e))};
    d.room = RECONCILE_MAX_INFLIGHT - r->inflight;
    if (d.room > 0) engine_each_live(r->e, find_due, &d);
    r->backlog = d.more || d.room <= 0;
    r->sweeping = true;
    for (int i = 0; i < d.n; i++) check_call(r, d.due[i]);
    r->sweeping = false;
}

static void sweep(reconciler *r)
{
    const config *cfg = cfg_of(r);
    engine_resync(r->e);
    check_due(r);
    if (atomic_load(&r->listing)) return;   /* the last listing is still out, or being judged */
    const char *keys[RECONCILE_MAX_KEYS];
    size_t nk = 0;
    for (size_t i = 0; i < cfg->n_accounts && nk < RECONCILE_MAX_KEYS; i++) {
        const config_account *a = &cfg->accounts[i];
        bool dup = false;
        for (size_t j = 0; j < nk && !dup; j++) dup = !strcmp(keys[j], a->kaphila_key);
        if (dup) continue;
        keys[nk++] = a->kaphila_key;
        list_key(r, a->sid);
    }
}

static void tick(loop *l, void *arg)
{
    reconciler *r = arg;
    r->tick = NULL;
    if (engine_is_stopping(r->e)) return;
    sweep(r);
    r->tick = loop_timer_add(l, cfg_of(r)->reconcile_interval_ms, tick, r);
    if (!r->tick) log_warn("reconcile", "cannot schedule the next sweep");
}

void reconcile_check_now(engine *e)
{
    reconciler *r = *engine_reconciler_slot(e);
    if (r && !engine_is_stopping(e) && !r->sweeping) check_due(r);
}

void reconcile_start(engine *e)
{
    reconciler **slot = engine_reconciler_slot(e);
    reconciler *r = calloc(1, sizeof *r);
    if (r) r->sus = calloc(RECONCILE_MAX_SUSPECTS, sizeof *r->sus);
    if (!r || !r->sus) {
        log_error("reconcile", "out of memory: no reconciler");
        if (r) free(r);
        return;
    }
    r->e = e;
    *slot = r;
    /* Recovered calls carry last_event_ms = 0: the first sweep checks them
     * all with Kaphila, whatever happened while twigate was down. */
    tick(engine_loop(e), r);
}

void reconcile_destroy(reconciler *r)
{
    if (!r) return;
    free(r->sus);
    free(r);
}

/* ---------------------------------------------------------------- 2 */

static void hangup_retry_fired(loop *l, void *arg)
{
    (void)l;
    call *c = arg;
    c->hangup_retry = NULL;
    if (!call_is_over(c)) {
        log_context(NULL, call_row_account_sid(c), call_row_sid(c));
        call_hangup(c, "retry of a failed hang-up");
    }
    call_unref(c);
}

void reconcile_hangup_failed(call *c)
{
    const config *cfg = call_config(c);
    if (call_is_over(c) || c->hangup_retry) return;
    if (++c->hangup_tries == cfg->hangup_retries + 1) {
        /* Retries spent: the next sweep asks Kaphila what the call is. */
        c->hangup_wanted = true;
        log_warn("engine", "hang-up failed %d times; the reconciler takes over", c->hangup_tries);
        return;
    }
    int64_t delay = cfg->hangup_backoff_ms;
    for (int i = 1; i < c->hangup_tries && delay < RECONCILE_MAX_BACKOFF_MS; i++) delay *= 2;
    if (delay > RECONCILE_MAX_BACKOFF_MS) delay = RECONCILE_MAX_BACKOFF_MS;
    call_ref(c);
    c->hangup_retry = loop_timer_add(call_loop(c), delay, hangup_retry_fired, c);
    if (!c->hangup_retry) {
        call_unref(c);
        c->hangup_wanted = true;
    }
}

void reconcile_forget(call *c)
{
    if (c->hangup_retry) {
        loop_timer_cancel(call_loop(c), c->hangup_retry);
        c->hangup_retry = NULL;
        call_unref(c);
    }
}

static void on_stray_hangup(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    char *sid = arg;
    log_context(NULL, NULL, sid);
    log_info("reconcile", "stray Kaphila call of an ended call: /hangup -> %d", res->http_status);
    free(sid);
}

void reconcile_stray_event(engine *e, const char *account_sid, const char *call_sid, json_t *ev)
{
    const char *id = json_string_value(json_object_get(ev, "callId"));
    if (!id || !*id || engine_is_stopping(e)) return;
    json_t *body = json_pack("{s:s}", "callId", id);
    char *sid = strdup(call_sid);
    log_warn("reconcile", "Kaphila is still placing call %s of an ended call; hanging it up", id);
    if (!body || !sid || engine_kaphila(e, account_sid, "POST", "/hangup", body, on_stray_hangup, sid) != 0)
        free(sid);
    json_decref(body);
}
