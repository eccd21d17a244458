/* engine_events.c — Kaphila events → the Twilio status ladder (never
 * backwards), and the messages from HTTP threads that start or change a
 * call: originate (→ /makecall) and update. Engine thread only
 * (engine_core_int.h). */
#include "engine_core_int.h"
#include "budget_int.h"

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
        eng_status_callback(e, c, "initiated", CB_INITIATED);
    }
    if (c->rank < RANK_RINGING && to >= RANK_RINGING) {
        set_status(c, "ringing");
        /* start_time: when Kaphila reports the call placed (the 201 of a
         * create still shows null, as on Twilio). */
        if (!c->row.start_time) c->row.start_time = timefmt_now_ms();
        eng_status_callback(e, c, "ringing", CB_RINGING);
    }
    if (c->rank < RANK_ANSWERED && to >= RANK_ANSWERED) {
        set_status(c, "in-progress");
        c->row.answered_at = timefmt_now_ms();
        eng_status_callback(e, c, "answered", CB_ANSWERED);
    }
    c->rank = to;
}


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
void eng_finish_call(engine *e, call *c, const char *status, int duration)
{
    if (c->rank >= RANK_OVER) return;
    if (c->time_limit) { loop_timer_cancel(e->l, c->time_limit); c->time_limit = NULL; call_unref(c); }
    set_status(c, status);
    c->row.end_time = c->row.date_updated;
    if (!c->row.start_time) c->row.start_time = c->row.end_time;
    c->row.duration = duration;
    c->rank = RANK_OVER;
    c->over = true;
    /* In the batch that ends it: a restart never resumes an ended call. */
    if ((c->x || c->resume_state) && store_call_ckpt_delete(e->db, c->row.sid) != STORE_OK)
        log_warn("engine", "the call's checkpoint could not be deleted");
    eng_status_callback(e, c, "completed", CB_COMPLETED);
    log_call_ended(status, duration, e->ending);
}

/* After the commit of a terminal step: stop the executor and forget the call. */
void eng_retire(engine *e, call *c)
{
    reconcile_forget(c);
    if (c->x) exec_call_ended(c);
    call_unlink(e, c);
    call_unref(c);
}

static void on_answered(engine *e, call *c, const kevent *k)
{
    const char *md = eng_param_str(c, "machine_detection");
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
    eng_amd_callback(e, c);
}

void eng_start_time_limit(engine *e, call *c)
{
    json_int_t tl = json_integer_value(json_object_get(c->row.params, "time_limit"));
    if (tl <= 0 || c->time_limit) return;
    /* Due at the answer time plus the limit, a wall-clock time: a call
     * resumed after a restart keeps it (one past fires at once). */
    int64_t ms = (int64_t)tl * 1000;
    if (c->row.answered_at) {
        ms = c->row.answered_at + ms - timefmt_now_ms();
        if (ms < 0) ms = 0;
        if (ms > (int64_t)tl * 1000) ms = (int64_t)tl * 1000;
    }
    call_ref(c);
    c->time_limit = loop_timer_add(e->l, ms, eng_time_limit_fired, c);
    if (!c->time_limit) call_unref(c);
}

/* Kaphila events twigate does not act on are kept, raw, for the record. */
static void keep_raw(engine *e, const char *call_sid, const buf *raw)
{
    if (raw && store_kevent_insert(e->db, call_sid, buf_str(raw), raw->len, true, NULL) != STORE_OK)
        log_warn("engine", "could not keep an unknown Kaphila event");
}

/* raw: the posted body (NULL for a stored event replayed at start-up). */
void eng_apply_event(engine *e, call *c, json_t *ev, int64_t kid, const buf *raw)
{
    kevent k;
    bool answered_now = false, ended_now = false, learned = false;
    int rank0 = c->rank;

    if (!kevent_parse(ev, &k) || !eng_txn_begin(e)) return;
    c->last_event_ms = loop_now_ms(e->l);   /* the reconciler's quiet clock */
    if (c->lost_since_ms) {
        /* /makecall's answer was lost, yet Kaphila dialled: reconcile.c. */
        if (!c->row.kaphila_id[0] && json_is_string(json_object_get(ev, "callId")))
            snprintf(c->row.kaphila_id, sizeof c->row.kaphila_id, "%s",
                     json_string_value(json_object_get(ev, "callId")));
        if (c->row.kaphila_id[0] && eng_txn_commit(e, NULL, kid)) call_adopt_lost(c);
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
            eng_finish_call(e, c, st, dur);
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
    if (!eng_txn_commit(e, c->rank != rank0 || learned ? c : NULL, kid)) return;

    if (answered_now) {
        eng_start_time_limit(e, c);
        rec_call_answered(c);
        exec_start(c);
    } else if (ended_now) {
        eng_retire(e, c);
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
    if (kid < 0 && store_inbox_done(e->db, -kid) != STORE_OK)
        log_warn("engine", "could not delete inbox row %lld", (long long)-kid);
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
void eng_handle_kevent(engine *e, emsg *m)
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
    eng_apply_event(e, c, m->j, m->kid, NULL);
    call_unref(c);
}

void eng_kev_reply(engine_reply r, int status, const char *body)
{
    engine_reply_bytes(r, status, "application/json", body, strlen(body));
}

/* An event posted by Kaphila: a live call from memory, an ended one (the
 * recording.* events come after call.ended) from the store. */
void eng_handle_kevent_post(engine *e, emsg *m)
{
    call *c = call_find_token(e, m->token);
    store_call row = {0};
    const buf *raw = engine_reply_body(m->r);
    char label[96];

    if (!c) {
        store_status st = store_call_get_by_token(e->db, m->token, &row);
        if (st == STORE_NOTFOUND) {
            eng_kev_reply(m->r, 404, "{\"success\":false,\"error\":\"unknown call\"}");
            return;
        }
        if (st != STORE_OK) {
            eng_kev_reply(m->r, 503, eng_kev_unavailable);
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
    if (!eng_txn_begin(e) || !eng_ack_add(e, m->r, sid, 200, NULL)) {
        eng_kev_reply(m->r, 503, eng_kev_unavailable);
        store_call_fini(&row);
        return;
    }
    m->r = (engine_reply){0};   /* answered by the batch's commit (or its rescue) */
    if (!c && store_status_live(row.status) &&
        eng_cluster_forward(e, sid, "kevent", buf_str(raw), raw->len) != 0) {
        /* Another instance's live call: stored for its owner (or the batch
         * failed, which answered Kaphila). */
    } else if (!c) {
        event_for_gone_call(e, sid, &row, m->j, 0, raw);
    } else {
        call_ref(c);
        eng_apply_event(e, c, m->j, 0, raw);
        call_unref(c);
    }
    store_call_fini(&row);
}

/* ---------------------------------------------------------------- 6 */

typedef struct orig_ctx { engine *e; call *c; } orig_ctx;

/* The Call JSON as of now, sent once what it shows is committed. */
void eng_reply_call(engine_reply r, int status, const call *c)
{
    engine *e = c->e;
    char body[4096], *s = NULL;
    size_t n = calljson_call_render(&c->row, body, sizeof body);
    if (n > 0 && n < sizeof body && (s = malloc(n + 1))) {
        memcpy(s, body, n);
        s[n] = '\0';
    } else if (n >= sizeof body) {   /* never for a row twigate wrote; kept exact anyway */
        json_t *j = calljson_call(&c->row);
        s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
    }
    if (!s) {
        engine_reply_error(r, 20500, 500, NULL);
        return;
    }
    if (e->batch && eng_ack_add(e, r, c->row.sid, status, s)) return;
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

/* A dial that failed for good (the create was answered 201 long ago): the
 * call becomes `failed` with the notification and the status callbacks
 * Twilio would send. Inside the engine's batch. */
static void dial_failed(engine *e, call *c, int code, const char *msg)
{
    char url[600];
    snprintf(url, sizeof url, "%s/makecall", e->kc.base_url);
    if (c->over || !eng_txn_begin(e)) return;
    eng_notify(e, c->row.account_sid, c->row.sid, code, 0, msg, url, "POST", NULL, NULL);
    call_log(c, "dial-failed", json_pack("{s:i,s:s}", "error_code", code, "message", msg));
    eng_finish_call(e, c, "failed", -1);
    if (eng_txn_commit(e, c, 0)) eng_retire(e, c);
}

static void on_makecall(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    call *c = arg;
    engine *e = c->e;
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
        if (!c->over && eng_txn_begin(e)) {
            advance(e, c, RANK_INITIATED);
            (void)eng_txn_commit(e, c, 0);
        }
        call_unref(c);
        return;
    }

    int code, status;
    char msg[400], labels[96];
    kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
    snprintf(labels, sizeof labels, "endpoint=\"/makecall\",outcome=\"%s\"", kaphila_outcome(res));
    metrics_inc(e->a->metrics, "twigate_kaphila_requests_total", labels, 1);
    if (answer_lost(res) && !c->over && !e->stopping) {
        /* Kaphila may have dialled: the call and its token stay until its
         * events or GET /calls settle it (reconcile.c). */
        log_warn("engine", "origination answer lost (%s); waiting for the call's events", msg);
        c->lost_since_ms = loop_now_ms(l);
        call_unref(c);   /* the origination list's; the table keeps the call */
        return;
    }
    if (e->stopping && res->curl_rc == CURLE_ABORTED_BY_CALLBACK) {
        call_unref(c);   /* stopping: the next start's recovery settles it */
        return;
    }
    /* Nothing was dialled. A 402 also pauses the key's queue until Kaphila
     * shows credits again, so the queue is not failed call by call. */
    log_warn("engine", "origination failed: %s", msg);
    if (res->http_status == 402 && c->bk) budget_pause(c->bk);
    dial_failed(e, c, code, msg);
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
    if (c->over) {   /* canceled between the decision to dial and the commit */
        dialq_remove(c);
        call_unref(c);
        return;
    }
    if (acct && !e->stopping) {
        phone_kaphila(c->row.to, number);
        /* The token authenticates Kaphila's events; CallSid is for humans and
         * the simulator's control API, never trusted. */
        snprintf(hook, sizeof hook, "%s/kaphila/events/%s?CallSid=%s", e->a->public_url,
                 c->row.token, c->row.sid);
        body = json_pack("{s:s,s:s,s:s,s:b,s:I}", "number", number, "webhookUrl", hook, "callerId",
                         eng_param_str(c, "caller_id") ? eng_param_str(c, "caller_id") : c->row.from,
                         "useAmd", eng_param_str(c, "machine_detection") != NULL, "ringTimeout",
                         json_integer_value(json_object_get(c->row.params, "timeout")));
        /* The account's voice for the whole call (Kaphila has no per-<Say>
         * voice); absent = Kaphila's default. */
        if (body && acct->kaphila_voice && *acct->kaphila_voice)
            json_object_set_new(body, "voiceName", json_string(acct->kaphila_voice));
    }
    if (!body || dialq_send(e, c, body, on_makecall, c) != 0) {
        kaphila_result res = {.endpoint = "/makecall", .curl_rc = CURLE_FAILED_INIT};
        on_makecall(e->l, c, &res);
    }
    json_decref(body);
}

/* The batch that stored these calls has committed: answer their creates
 * (201 queued), then dial those that may go now, in the order they were
 * created; the others wait in their key's queue (engine_dialq.c). The list is
 * taken first because a failed /makecall flushes the batch again, which
 * comes back here. */
void eng_origs_start(engine *e)
{
    call **list = e->origs;
    size_t n = e->n_origs;
    if (!n) return;
    e->origs = NULL;
    e->n_origs = e->cap_origs = 0;
    for (size_t i = 0; i < n; i++) {
        call *c = list[i];
        if (engine_reply_some(c->create_req)) {
            engine_reply r = c->create_req;
            c->create_req = (engine_reply){0};
            log_context(NULL, c->row.account_sid, c->row.sid);
            log_info("engine", "call created (queued)");
            eng_reply_call(r, 201, c);
        }
        if (c->dq == DQ_UNCOMMITTED) {
            dialq_committed(e, c);
            call_unref(c);   /* the list's: the queue lives in the call table */
        } else {
            start_makecall(e, c);
        }
    }
    free(list);
}

/* The batch that stored these calls was rolled back: the new ones never
 * existed; those taken out of a queue go back into it. */
void eng_origs_fail(engine *e)
{
    call **list = e->origs;
    size_t n = e->n_origs;
    e->origs = NULL;
    e->n_origs = e->cap_origs = 0;
    for (size_t i = 0; i < n; i++) {
        call *c = list[i];
        if (!engine_reply_some(c->create_req) && c->dq == DQ_DIALLING) {
            dialq_unstart(c);
            call_unref(c);
            continue;
        }
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

bool eng_origs_add(engine *e, call *c)
{
    if (!origs_reserve(e)) return false;
    call_ref(c);
    e->origs[e->n_origs++] = c;
    return true;
}

/* A REST create: the row joins the open batch (a burst of creates shares one
 * commit, and only the engine writes calls, so its page cache stays warm),
 * and /makecall goes out once that batch has committed (eng_origs_start):
 * Kaphila never dials a call whose row could still be lost. warnings: the
 * 20001 notifications the request earned (strings), recorded with it. */
void eng_handle_originate(engine *e, emsg *m)
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
    /* Twilio's queue is capped by time: when the calls already waiting on
     * this key would keep the new one longer than limits.max_queue_time_s
     * at the rate its budget (and cps) allows, 22005. */
    bkey *k = e->bud ? budget_key(e->bud, acct) : NULL;
    if (k && k->dq_n && dialq_wait_estimate(k) > (int64_t)cfg->max_queue_time_s * 1000) {
        metrics_inc(e->a->metrics, "twigate_queue_full_total", NULL, 1);
        engine_reply_error(m->r, 22005, 429, "Call Queue Full: the queue of calls waiting to be"
                           " dialled on this account's Kaphila key would wait longer than"
                           " limits.max_queue_time_s");
        store_call_fini(&m->call);
        return;
    }
    if (!eng_txn_begin(e) || !origs_reserve(e) || !(c = call_new(e, &m->call))) {
        engine_reply_error(m->r, 20503, 503, NULL);
        store_call_fini(&m->call);
        return;
    }
    (void)dialq_admit(e, k, c);   /* queued or not, the row is written now */
    if (store_call_insert(e->db, &c->row) != STORE_OK) {
        log_error("engine", "a new call could not be written; the batch is rolled back");
        engine_reply_error(m->r, 20500, 500, NULL);
        call_unlink(e, c);
        call_unref(c);
        eng_batch_failed(e);
        return;
    }
    size_t i;
    json_t *w;
    json_array_foreach(m->j, i, w)
        eng_notify(e, c->row.account_sid, c->row.sid, 20001, 1, json_string_value(w), NULL, NULL, NULL,
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
    if (!c->over && eng_txn_begin(e)) {
        bool answered = c->rank >= RANK_ANSWERED;
        eng_finish_call(e, c, answered ? "completed" : "canceled",
                    answered ? (int)((timefmt_now_ms() - c->row.answered_at) / 1000) : -1);
        if (eng_txn_commit(e, c, 0)) {
            eng_reply_call(u->r, 200, c);
            eng_retire(e, c);
            goto out;
        }
    }
    eng_reply_call(u->r, 200, c);
out:
    json_decref(u->upd);
    call_unref(c);
    free(u);
}

static bool upd_redirects(const json_t *upd)
{
    return json_object_get(upd, "url") || json_object_get(upd, "twiml");
}

/* An update for a call the engine no longer holds (it ended between the
 * REST read and now): answered from the store. */
/* A live call this instance does not hold belongs to another instance
 * sharing the database: the update goes to its owner through the inbox
 * (engine_cluster.c), and the answer, sent once that is committed, shows
 * the call as stored now (the owner applies the update within
 * cluster.poll_ms). False when the database is not shared. */
static bool forward_update(engine *e, emsg *m, const store_call *row)
{
    json_t *fw = json_pack("{s:s, s:O}", "account_sid", m->account_sid, "update", m->j);
    char *text = fw ? json_dumps(fw, JSON_COMPACT) : NULL;
    json_t *cj = calljson_call(row);
    char *reply = cj ? json_dumps(cj, JSON_COMPACT) : NULL;
    int fwd = text && reply ? eng_cluster_forward(e, row->sid, "update", text, strlen(text)) : 0;
    json_decref(fw);
    json_decref(cj);
    free(text);
    if (fwd <= 0) {
        free(reply);
        if (fwd < 0) engine_reply_error(m->r, 20503, 503, NULL);
        return fwd < 0;
    }
    if (!eng_ack_add(e, m->r, row->sid, 200, reply)) {
        free(reply);
        engine_reply_error(m->r, 20503, 503, NULL);
    }
    return true;
}

static void update_gone_call(engine *e, emsg *m)
{
    store_call row = {0};

    if (store_call_get(e->db, m->account_sid, m->sid, &row) == STORE_OK) {
        bool redirect = upd_redirects(m->j);
        if (redirect && strcmp(row.status, "in-progress") != 0)
            engine_reply_error(m->r, 21220, 400, "Call is not in-progress. Cannot redirect.");
        else if (store_status_live(row.status) && forward_update(e, m, &row))
            ;   /* another instance's call: answered once stored for it */
        else if (redirect)
            engine_reply_error(m->r, 21220, 400, "Call is not in-progress. Cannot redirect.");
        else
            engine_reply_json(m->r, 200, calljson_call(&row));
        store_call_fini(&row);
    } else {
        engine_reply_error(m->r, 20404, 404, NULL);
    }
}

/* The parameters that take effect for what follows (callbacks, fallback,
 * TimeLimit, restarted on the time already talked), stored. */
static void update_params(engine *e, call *c, json_t *upd)
{
    const char *key;
    json_t *v;

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
        eng_start_time_limit(e, c);
        json_object_set_new(c->row.params, "time_limit", json_integer(tl));
    }
    c->row.date_updated = timefmt_now_ms();
    if (store_call_update(e->db, &c->row) != STORE_OK)
        log_warn("engine", "update not persisted");
}

/* Status=completed, or canceled before the answer: a /hangup (or none
 * when not dialled yet), answered by on_update_hangup. Takes upd. */
static void update_end(engine *e, emsg *m, call *c, json_t *upd, const char *st)
{
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
    if (c->bud_live) {   /* its hang-up is going: no reserve held for it any more */
        budget_live(c->bk, -1);
        c->bud_live = false;
    }
    if (!body || budget_send(e, c->bk, acct, BUDGET_HANGUP, "POST", "/hangup", body,
                             on_update_hangup, u) != 0) {
        kaphila_result res = {.endpoint = "/hangup", .curl_rc = CURLE_FAILED_INIT};
        on_update_hangup(e->l, u, &res);
    }
    json_decref(body);
}

/* Url or Twiml on an answered call: the executor runs the new program. */
static void update_redirect(emsg *m, call *c, const json_t *upd)
{
    const char *url = json_string_value(json_object_get(upd, "url"));
    const char *method = json_string_value(json_object_get(upd, "method"));
    if (url) {
        json_object_set_new(c->row.params, "url", json_string(url));
        json_object_set_new(c->row.params, "method", json_string(method ? method : "POST"));
    }
    eng_reply_call(m->r, 200, c);
    exec_replace(c, url, method ? method : "POST",
                 json_string_value(json_object_get(upd, "twiml")));
}

void eng_handle_update(engine *e, emsg *m)
{
    call *c = call_find(e, m->sid);
    json_t *upd = m->j;

    log_context(NULL, m->account_sid, m->sid);
    if (!c || strcmp(c->row.account_sid, m->account_sid) != 0) {
        update_gone_call(e, m);
        json_decref(upd);
        return;
    }
    if (upd_redirects(upd) && c->rank != RANK_ANSWERED) {
        engine_reply_error(m->r, 21220, 400, "Call is not in-progress. Cannot redirect.");
        json_decref(upd);
        return;
    }
    update_params(e, c, upd);

    const char *st = json_string_value(json_object_get(upd, "status"));
    if (st && (!strcmp(st, "completed") || (!strcmp(st, "canceled") && c->rank < RANK_ANSWERED))) {
        update_end(e, m, c, upd, st);   /* takes upd */
        return;
    }
    if (upd_redirects(upd)) update_redirect(m, c, upd);
    else eng_reply_call(m->r, 200, c);
    json_decref(upd);
}

