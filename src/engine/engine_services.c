/* engine_services.c — the engine's services for the executor and the
 * reconciler (engine_int.h): Kaphila requests and webhooks on a call's
 * behalf, hangup, notifications, the row accessors, the reconciler's
 * verdicts and resync. Engine thread only (engine_core_int.h). */
#include "engine_core_int.h"
#include "budget_int.h"

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
    eng_log_exchange(e, c->row.account_sid, c->row.sid, "POST", url, &p, &wr);
    form_fini(&p);
    buf_fini(&wr.body);

    if (!kaphila_ok(res) && !c->over &&
        !(e->stopping && res->curl_rc == CURLE_ABORTED_BY_CALLBACK)) {
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
    /* Kaphila's budget: a hang-up before anything else, a live call's
     * command before any new call (budget_int.h). */
    bool hangup = !strcmp(path, "/hangup");
    if (hangup && c->bud_live) {
        budget_live(c->bk, -1);
        c->bud_live = false;
    }
    if (budget_send(e, c->bk, acct, hangup ? BUDGET_HANGUP : BUDGET_LIVE, "POST", path, body,
                    on_call_kaphila, k) != 0) {
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
    eng_log_exchange(e, c->row.account_sid, c->row.sid, w->method, res->url, &w->params, res);
    snprintf(labels, sizeof labels, "kind=\"%s\",outcome=\"%d\"", w->twiml ? "twiml" : "other",
             res->error_code);
    metrics_inc(e->a->metrics, "twigate_webhooks_total", labels, 1);
    if (w->twiml)
        metrics_observe(e->a->metrics, "twigate_twiml_fetch_seconds", NULL, (double)res->duration_ms / 1000.0);
    if (res->error_code && !res->aborted) {
        buf_init(&vars, 1 << 16);
        if (form_encode(&w->params, &vars) != BUF_OK) buf_reset(&vars);
        eng_notify(e, c->row.account_sid, c->row.sid, res->error_code, 0, res->error_msg, res->url,
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
    eng_notify(c->e, c->row.account_sid, c->row.sid, code, level, message, url, method, NULL, NULL);
    call_log(c, "notification", json_pack("{s:i,s:s,s:s?}", "error_code", code, "message",
                                           message, "url", url));
}

void call_log(call *c, const char *what, json_t *detail)
{
    (void)eng_txn_begin(c->e);
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

void eng_time_limit_fired(loop *l, void *arg)
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
bool          engine_db_shared(engine *e) { return store_shared(e->a->store); }
loop         *engine_loop(engine *e) { return e->l; }
bio          *engine_bio(engine *e) { return e->bio; }
const config *engine_config(engine *e) { return app_config(e->a); }
const char   *engine_public_url(engine *e) { return e->a->public_url; }
const char   *engine_kaphila_url(engine *e) { return e->kc.base_url; }

void engine_enqueue_callback(engine *e, const char *account_sid, const char *call_sid,
                             const char *kind, const char *url, const char *method,
                             const form *params)
{
    /* eng_outbox_add wants a call for its identity and sequence; a stand-in
     * carrying just those is enough. */
    call *live = call_find(e, call_sid);
    call tmp = {0};
    call *c = live ? live : &tmp;
    if (!live) {
        snprintf(tmp.row.sid, sizeof tmp.row.sid, "%s", call_sid);
        snprintf(tmp.row.account_sid, sizeof tmp.row.account_sid, "%s", account_sid);
    }
    /* eng_outbox_add takes its pairs: a copy, params being the caller's. */
    form copy;
    form_init(&copy);
    for (size_t i = 0; params && i < params->n; i++)
        if (form_add(&copy, params->pairs[i].key, params->pairs[i].value) != FORM_OK) {
            log_error("engine", "out of memory copying %s callback parameters", kind);
            form_fini(&copy);
            return;
        }
    if (eng_txn_begin(e)) {
        eng_outbox_add(e, c, kind, url, method, &copy);
        (void)eng_txn_commit(e, NULL, 0);
    }
    form_fini(&copy);
}

int engine_kaphila(engine *e, const char *account_sid, const char *method, const char *path,
                   json_t *body, kaphila_cb cb, void *arg)
{
    const config_account *acct = config_account_by_sid(app_config(e->a), account_sid);
    if (!acct) return -1;
    bkey *k = e->bud ? budget_key(e->bud, acct) : NULL;
    return budget_send(e, k, acct, strcmp(path, "/hangup") ? BUDGET_LIVE : BUDGET_HANGUP, method,
                       path, body, cb, arg);
}

int engine_kaphila_get_raw(engine *e, const char *account_sid, const char *path, kaphila_cb cb,
                           void *arg)
{
    const config_account *acct = config_account_by_sid(app_config(e->a), account_sid);
    if (!acct) return -1;
    /* A GET is neither counted by the budget nor held by the cluster's
     * lease: budget_send and eng_kaphila_send pass it straight through.
     * The key is looked up all the same, as budget_send does: the
     * reconciler's first listing, at start-up, is what makes the budget ask
     * /api/me for the key's limit before the first create needs it (a
     * create that finds it unknown waits in the dial queue for the answer). */
    bkey *k = e->bud ? budget_key(e->bud, acct) : NULL;
    return kaphila_get_raw(e->l, &e->kc, k ? k->api_key : acct->kaphila_key, path, cb, arg);
}

int engine_kaphila_key(engine *e, const char *api_key, const char *method, const char *path,
                       json_t *body, kaphila_cb cb, void *arg)
{
    return eng_kaphila_send(e, api_key, method, path, body, cb, arg);
}

void engine_notify(engine *e, const char *account_sid, const char *call_sid, int code,
                   int level, const char *message, const char *url)
{
    eng_notify(e, account_sid, call_sid, code, level, message, url, NULL, NULL, NULL);
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
    if (c->over || !eng_txn_begin(e)) return;
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
    eng_finish_call(e, c, st, dur);
    if (eng_txn_commit(e, c, 0)) eng_retire(e, c);
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
    eng_apply_event(e, c, ev, 0, NULL);
    call_unref(c);
    json_decref(ev);
}

void call_adopt_lost(call *c)
{
    engine *e = c->e;
    c->lost_since_ms = 0;
    if (c->over || !eng_txn_begin(e)) return;
    log_context(NULL, c->row.account_sid, c->row.sid);
    call_notify(c, 20500, 1, "Kaphila placed this call although its /makecall answer was lost;"
                " its first events were missed, so the call is hung up and marked failed", NULL,
                NULL);
    metrics_inc(e->a->metrics, "twigate_reconciled_total", "outcome=\"adopted\"", 1);
    call_ref(c);
    call_hangup(c, "the /makecall answer was lost");
    eng_finish_call(e, c, "failed", -1);
    if (eng_txn_commit(e, c, 0)) eng_retire(e, c);
    call_unref(c);
}

/* The create was answered 201 long before the dial (Twilio's queue), so a
 * dial that came to nothing is a failed call the customer hears about
 * (notification, callbacks), not a row that disappears. */
void call_drop_lost(call *c)
{
    engine *e = c->e;
    log_context(NULL, c->row.account_sid, c->row.sid);
    log_info("engine", "no sign of the call at Kaphila after its lost /makecall answer; failed");
    metrics_inc(e->a->metrics, "twigate_reconciled_total", "outcome=\"dropped\"", 1);
    c->lost_since_ms = 0;
    if (c->over || !eng_txn_begin(e)) return;
    eng_notify(e, c->row.account_sid, c->row.sid, 20503, 0, "Kaphila did not answer /makecall"
               " and has no such call: the call was not placed", NULL, NULL, NULL, NULL);
    eng_finish_call(e, c, "failed", -1);
    if (eng_txn_commit(e, c, 0)) eng_retire(e, c);
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
    if (!e->resync || !eng_batch_flush(e) || !eng_txn_begin(e)) return;
    if (store_write_probe(e->db) != STORE_OK) { eng_batch_failed(e); return; }
    for (size_t b = 0; b < ENGINE_BUCKETS; b++)
        for (call *c = e->calls[b]; c; c = c->hnext)
            if (!c->over && !c->lost_since_ms && !eng_txn_commit(e, c, 0)) return;
    if (!eng_batch_flush(e)) return;   /* still failing: the next sweep tries again */
    /* Answered in a lost batch: the program never started. Start it now
     * (collected first: a start that fails at once retires its call). */
    for (size_t b = 0; b < ENGINE_BUCKETS; b++)
        for (call *c = e->calls[b]; c; c = c->hnext)
            if (!c->over && c->rank == RANK_ANSWERED && !c->x && !c->pending_hangup &&
                !c->resume_state &&   /* waits for its start-up check, then resumes */
                resync_collect_call(&starts, c))
                call_ref(c);
    for (size_t i = 0; i < starts.n; i++) {
        call *c = starts.v[i];
        if (!c->over) {
            eng_start_time_limit(e, c);
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
        if (c) eng_retire(e, c);   /* ended in memory only: the store's word wins */
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


/* Kaphila confirmed a recovered call with a checkpoint: its TimeLimit is
 * re-armed from the answer time and its TwiML goes on (exec_ckpt.c). */
void call_resume(call *c)
{
    char *doc = c->resume_doc, *state = c->resume_state;
    c->resume_doc = c->resume_state = NULL;   /* once */
    if (!state || c->over) goto out;
    eng_start_time_limit(c->e, c);
    if (!c->over) exec_resume(c, doc, state);
out:
    free(doc);
    free(state);
}
