/* engine.c — the call engine on its own loop thread: its core.
 *
 * Map of the engine's core (shared internals: engine_core_int.h):
 *   engine.c (this file)
 *     1. the call table (hash by CallSid) and call lifetime (refs);
 *     2. transactions: every state change commits the call row, the outbox
 *        rows it causes and the Kaphila event it consumes together; the
 *        deliveries start only after the commit;
 *     8. start-up recovery, message dispatch and shutdown;
 *   engine_outbox.c    3. status callbacks (contract §8.3) and the AMD
 *                      callback; 4. the outbox: one ordered queue per call,
 *                      delivered with webhook.c;
 *   engine_events.c    5. Kaphila events → the Twilio status ladder (never
 *                      backwards); 6. messages from HTTP threads: originate,
 *                      update, event;
 *   engine_services.c  7. services for the executor (engine_int.h).
 *
 * Status ladder (rank): queued 0 < initiated 1 < ringing 2 < in-progress 3
 * < terminal 4. An event only ever raises the rank, so duplicated or late
 * Kaphila events cannot move a call backwards or repeat a callback. */
#include "engine_core_int.h"
#include "budget_int.h"

/* ---------------------------------------------------------------- 1 */

call *call_find(engine *e, const char *sid)
{
    for (call *c = e->calls[eng_bucket(sid)]; c; c = c->hnext)
        if (!strcmp(c->row.sid, sid)) return c;
    return NULL;
}

/* Live calls by their event token: Kaphila's events name the call only by
 * it, and a live call is found without a database read. */
call *call_find_token(engine *e, const char *token)
{
    for (call *c = e->by_token[eng_bucket(token)]; c; c = c->tnext)
        if (!strcmp(c->row.token, token)) return c;
    return NULL;
}

void call_unlink(engine *e, call *c)
{
    dialq_remove(c);   /* out of its key's queue, its reserve released */
    call **pp = &e->calls[eng_bucket(c->row.sid)];
    while (*pp && *pp != c) pp = &(*pp)->hnext;
    if (*pp) {
        *pp = c->hnext;
        atomic_fetch_sub(&e->live, 1);
    }
    c->hnext = NULL;
    pp = &e->by_token[eng_bucket(c->row.token)];
    while (*pp && *pp != c) pp = &(*pp)->tnext;
    if (*pp) *pp = c->tnext;
    c->tnext = NULL;
}

call *call_new(engine *e, store_call *row)
{
    call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->e = e;
    c->row = *row;                 /* takes row->params */
    row->params = NULL;
    c->refs = 1;                   /* the table's reference */
    c->rank = (int)json_integer_value(json_object_get(c->row.params, "rank"));
    c->last_event_ms = loop_now_ms(e->l);
    size_t b = eng_bucket(c->row.sid);
    c->hnext = e->calls[b];
    e->calls[b] = c;
    b = eng_bucket(c->row.token);
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
    free(c->resume_doc);
    free(c->resume_state);
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

/* ---------------------------------------------------------------- 2 */

/* Group commit: the engine keeps one write transaction open for a whole
 * loop iteration — every state change, event-log line, notification and
 * outbox row of that iteration joins it — and commits it in engine_idle,
 * before the loop sleeps. Deliveries wait for that commit (an outbox row is
 * never sent before it is durable), and anything that answers a REST client
 * commits first (eng_batch_flush) so the client never reads older state. One
 * commit per iteration instead of three per event.
 *
 * Kaphila's events ride the same batch: the engine applies a posted event
 * in it and answers Kaphila's POST only after the commit (the acks), so an
 * event Kaphila believes delivered is durable as its effects, with no raw
 * copy of the event written first. Should the batch be lost (a failed
 * write or commit), the raw events of its acks are stored for replay at
 * the next start instead (ack_rescue), as every event once was. REST
 * replies wait for the commit the same way (eng_reply_call), so a burst of
 * creates shares one commit instead of forcing one each. */
bool eng_txn_begin(engine *e)
{
    if (e->batch) return true;
    if (store_begin(e->db) != STORE_OK) return false;
    e->batch = true;
    return true;
}


static void drop_kicked(engine *e)
{
    while (e->kick_head) {
        ob_item *it = e->kick_head;
        e->kick_head = it->next;
        eng_ob_item_free(it);
    }
    e->kick_tail = NULL;
}

static const char kev_ok[] = "{\"success\":true}";
const char eng_kev_unavailable[] = "{\"success\":false,\"error\":\"event not stored; retry\"}";

/* Holds r's answer until the batch commits (json: a REST body, taken).
 * false = out of memory; the caller still owns json. */
bool eng_ack_add(engine *e, engine_reply r, const char *call_sid, int status, char *json)
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
        else engine_reply_bytes(a->r, 503, "application/json", eng_kev_unavailable,
                                sizeof eng_kev_unavailable - 1);
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

/* Writes the checkpoints of the calls the executor moved in this batch
 * (exec_ckpt.c), as they are now: one row per call however many verbs it
 * ran. A call that ended meanwhile has had its row deleted instead. */
static bool ckpts_write(engine *e)
{
    bool ok = true;
    size_t n = e->n_ckpts;
    call **v = e->ckpts;
    e->ckpts = NULL;
    e->n_ckpts = e->cap_ckpts = 0;
    for (size_t i = 0; i < n; i++) {
        call *c = v[i];
        c->ckpt_dirty = false;
        if (ok && !c->over && !exec_ckpt_write(c, e->db)) ok = false;
        call_unref(c);
    }
    free(v);
    return ok;
}

void call_ckpt_mark(call *c)
{
    engine *e = c->e;
    if (c->ckpt_dirty || c->over || e->stopping || !eng_txn_begin(e)) return;
    if (e->n_ckpts == e->cap_ckpts) {
        size_t ncap = e->cap_ckpts ? e->cap_ckpts * 2 : 64;
        call **nv = realloc(e->ckpts, ncap * sizeof *nv);
        if (!nv) return;   /* the next mark tries again; a resume repeats a step */
        e->ckpts = nv;
        e->cap_ckpts = ncap;
    }
    c->ckpt_dirty = true;
    call_ref(c);
    e->ckpts[e->n_ckpts++] = c;
}

/* The open batch is lost: nothing of it may be delivered or acknowledged. */
void eng_batch_failed(engine *e)
{
    for (size_t i = 0; i < e->n_ckpts; i++) {
        e->ckpts[i]->ckpt_dirty = false;
        call_unref(e->ckpts[i]);
    }
    e->n_ckpts = 0;
    e->batch = false;
    e->resync = true;   /* engine_resync, once the store takes writes again */
    store_rollback(e->db);
    drop_kicked(e);
    ack_rescue(e);
    eng_origs_fail(e);
}

bool eng_batch_flush(engine *e)
{
    if (!e->batch) {
        acks_reply(e, true);   /* events that wrote nothing */
        return true;
    }
    if (!ckpts_write(e)) {
        log_error("engine", "a checkpoint could not be written; the batch is rolled back");
        eng_batch_failed(e);
        return false;
    }
    if (store_commit(e->db) != STORE_OK) {
        log_error("engine", "a batch of state changes could not be committed");
        eng_batch_failed(e);
        return false;
    }
    e->batch = false;
    acks_reply(e, true);
    eng_deliver_kicked(e);
    eng_origs_start(e);
    return true;
}

static void engine_idle(loop *l, void *arg)
{
    (void)l;
    (void)eng_batch_flush(arg);
}

/* Every engine timer (Pause, TimeLimit, retries, probes) is due at a time a
 * Twilio user can see; how late they fire is the loop's health figure. */
static void engine_timer_late(loop *l, int64_t late_ms, void *arg)
{
    (void)l;
    engine *e = arg;
    metrics_observe(e->a->metrics, "twigate_timer_lateness_seconds", NULL, (double)late_ms / 1000.0);
}

/* Persists c (when given) and marks kid consumed, in the open batch: kid > 0
 * a stored raw event (kevents), kid < 0 the inbox row -kid (store/cluster.h). */
bool eng_txn_commit(engine *e, call *c, int64_t kid)
{
    if (c) {
        json_object_set_new(c->row.params, "rank", json_integer(c->rank));
        if (store_call_update(e->db, &c->row) != STORE_OK) goto fail;
    }
    if (kid > 0 && store_kevent_done(e->db, kid) != STORE_OK) goto fail;
    if (kid < 0 && store_inbox_done(e->db, -kid) != STORE_OK) goto fail;
    return true;
fail:
    log_error("engine", "a state change could not be written; the batch is rolled back");
    eng_batch_failed(e);
    return false;
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

int64_t engine_stalled_ms(engine *e)
{
    int64_t busy = e && e->l ? loop_busy_ms(e->l) : 0;
    return busy > app_config(e->a)->engine_stall_ms ? busy : 0;
}

void eng_recover_call(store_call *row, void *arg)
{
    engine *e = arg;
    store_call copy = *row;
    row->params = json_incref(row->params);   /* the caller frees its own */
    call *c = call_new(e, &copy);
    if (!c) return;
    c->last_event_ms = 0;   /* nothing heard since the restart: checked at once */
    log_context(NULL, c->row.account_sid, c->row.sid);
    if (c->row.kaphila_id[0] && e->bud) {
        /* Dialled: its commands and hang-up spend its key's budget, and it
         * counts toward the key's reserve until its /hangup goes, as before
         * the restart (without its key they went out uncounted). */
        c->bk = budget_key(e->bud, call_account(c));
        if (c->bk) {
            budget_live(c->bk, 1);
            c->bud_live = true;
        }
    }
    if (!c->row.kaphila_id[0] && json_object_get(c->row.params, "dq")) {
        /* Waiting in Twilio's queue, never dialled: back in it, in order. */
        dialq_recover(e, c);
    } else if (!c->row.kaphila_id[0]) {
        /* Crashed between the decision to dial and Kaphila's answer: we
         * cannot know whether it was dialled. */
        c->pending_fail = true;
    } else if (c->rank >= RANK_ANSWERED) {
        /* Resumed from its checkpoint once Kaphila says it is still up
         * (reconcile.c); without one (its first fetch never committed, or a
         * row from an older twigate) it is ended rather than replaying the
         * customer's application from the top. */
        c->pending_hangup = true;
        store_status r = store_call_ckpt_get(e->db, c->row.sid, &c->resume_doc, &c->resume_state);
        if (r == STORE_OK)
            c->pending_hangup = false;
        else if (r != STORE_NOTFOUND)
            log_warn("engine", "the call's checkpoint could not be read");
    }
}

void eng_recover_kevent(int64_t id, const char *call_sid, const char *body, void *arg)
{
    engine *e = arg;
    json_t *ev = json_loads(body, 0, NULL);
    emsg m = {.k = M_KEVENT, .kid = id, .j = ev};
    snprintf(m.sid, sizeof m.sid, "%s", call_sid);
    if (!ev || !json_is_object(ev) || !json_is_string(json_object_get(ev, "event"))) {
        if (store_kevent_done(e->db, id) != STORE_OK) log_warn("engine", "bad stored event %lld", (long long)id);
    } else {
        eng_handle_kevent(e, &m);
    }
    json_decref(ev);
}

void eng_recover_outbox(store_outbox *o, void *arg)
{
    engine *e = arg;
    ob_item *it = calloc(1, sizeof *it);
    if (!it) return;
    it->o = *o;
    o->url = o->method = o->params = NULL;   /* moved */
    eng_outbox_enqueue(e, it);
}

/* A recovered call whose fate is unknowable is settled after the replay of
 * its events, which may have ended it already: one whose /makecall answer
 * was never stored is failed, one answered without a checkpoint hung up. */
void eng_settle_recovered(engine *e, call *c)
{
    log_context(NULL, c->row.account_sid, c->row.sid);
    if (c->pending_fail && !c->over && eng_txn_begin(e)) {
        eng_notify(e, c->row.account_sid, c->row.sid, 20500, 0,
               "twigate stopped before Kaphila confirmed this call; marked failed",
               NULL, NULL, NULL, NULL);
        eng_finish_call(e, c, "failed", -1);
        if (eng_txn_commit(e, c, 0)) eng_retire(e, c);
    } else if (c->pending_hangup && !c->over) {
        call_notify(c, 20500, 1, "twigate restarted during this call; the TwiML"
                    " program cannot be resumed, so the call is ended", NULL, NULL);
        call_hangup(c, "restart");
    }
}

static void recover(engine *e)
{
    if (store_call_each_live(e->db, eng_recover_call, e) != STORE_OK)
        log_error("engine", "could not load live calls");
    if (store_kevent_each_pending(e->db, eng_recover_kevent, e) != STORE_OK)
        log_error("engine", "could not replay stored Kaphila events");
    for (size_t b = 0; b < ENGINE_BUCKETS; b++) {
        call *c = e->calls[b];
        while (c) {
            call *next = c->hnext;
            eng_settle_recovered(e, c);
            c = next;
        }
    }
    if (store_outbox_each_pending(e->db, eng_recover_outbox, e) != STORE_OK)
        log_error("engine", "could not load the outbox");
    rec_recover(e);
    log_info("engine", "recovered %zu live calls", atomic_load(&e->live));
    budget_publish(e->bud);
    budget_kick(e->bud);      /* the queues dial once their keys' limits are known */
    reconcile_start(e);
    eng_cluster_start(e);     /* shared database only: leases, adoption, the inbox */
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
    if (!eng_txn_begin(e) || store_call_delete(e->db, m->account_sid, m->sid) != STORE_OK ||
        !eng_batch_flush(e)) {
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
        if (engine_reply_some(m->r) && m->k == M_KEVENT) eng_kev_reply(m->r, 503, eng_kev_unavailable);
        else if (engine_reply_some(m->r)) engine_reply_error(m->r, 20503, 503, NULL);
        goto out;
    }
    /* Recovery before anything else: requests and Kaphila events accepted
     * while the engine was not started yet (the HTTP server opens first;
     * a shared database's join may wait out a lease) are queued ahead of
     * M_RECOVER, and would otherwise find the calls they name not loaded. */
    if (!e->recovered) {
        e->recovered = true;
        recover(e);
        probe_tick(l, e);
    }
    switch (m->k) {
    case M_ORIGINATE: eng_handle_originate(e, m); break;
    case M_UPDATE:    eng_handle_update(e, m); m->j = NULL; break;
    case M_DELETE:    handle_delete(e, m); break;
    case M_KEVENT:    if (engine_reply_some(m->r)) eng_handle_kevent_post(e, m); else eng_handle_kevent(e, m); break;
    case M_RECOVER:   break;   /* done above, whichever message came first */
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
    e->bud = budget_create(e);
    if (!e->bud) {
        snprintf(err, errlen, "out of memory");
        bio_destroy(e->bio);
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
    budget_abort(e->bud);  /* waiting Kaphila requests: their callbacks run now */
    eng_cluster_abort(e);  /* and those held for a lease renewal */
    bio_destroy(e->bio);  /* an engine that never started: its queued passes are cancelled */
    e->bio = NULL;
    loop_destroy(e->l);   /* in-flight transfers are cancelled: their callbacks run now */
    netpolicy_unref(e->policy);
    e->policy = NULL;
    if (e->db) (void)eng_batch_flush(e);   /* what those callbacks wrote */
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
                eng_ob_item_free(it);
            }
            free(q);
        }
    }
    acks_reply(e, false);   /* nothing left to commit them: Kaphila keeps them */
    eng_cluster_destroy(e);   /* the lease ends now: the others adopt what is left */
    budget_destroy(e->bud);
    free(e->acks);
    free(e->origs);
    free(e->ckpts);
    store_conn_release(e->db);
    free(e);
}

