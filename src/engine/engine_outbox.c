/* engine_outbox.c — status callbacks (contract §8.3) and the AMD callback,
 * and the outbox: one ordered queue per call, delivered with webhook.c once
 * the batch that wrote its rows has committed; the event log and
 * notifications. Engine thread only (engine_core_int.h). */
#include "engine_core_int.h"

/* ---------------------------------------------------------------- 3 */

static const char *geo_fields[] = {
    "FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip",
    "ToCountry", "CallerCity", "CallerState", "CallerZip", "CallerCountry", "CalledCity",
    "CalledState", "CalledZip", "CalledCountry",
};

static bool amd_ran(const call *c)
{
    return eng_param_str(c, "machine_detection") && c->row.answered_by[0];
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
void eng_outbox_add(engine *e, call *c, const char *kind, const char *url, const char *method,
                    form *params)
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
    it->params = *params;   /* moved: obq_pump signs these, not a parse of o.params */
    form_init(params);
    if (e->kick_tail) e->kick_tail->next = it;
    else e->kick_head = it;
    e->kick_tail = it;
    buf_fini(&enc);
    return;
fail:
    log_error("engine", "could not write a %s callback to the outbox", kind);
    if (it) eng_ob_item_free(it);
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
void eng_status_callback(engine *e, call *c, const char *event, int bit)
{
    const char *url = eng_param_str(c, "status_callback");
    int done = eng_cb_done(c);
    form f;
    char seq[16], ts[TIMEFMT_RFC2822_LEN], n[24];
    if (done & bit) return;
    json_object_set_new(c->row.params, "cb_done", json_integer(done | bit));
    if (!url || !event_requested(c, event)) return;

    form_init(&f);
    call_voice_params(c, &f);
    bool ok = true;
    /* CallStatus names the event, not the REST status, for these two. */
    if (bit == CB_INITIATED || bit == CB_RINGING)
        for (size_t i = 0; i < f.n && ok; i++)
            if (!strcmp(f.pairs[i].key, "CallStatus"))
                ok = form_set_value(&f, i, event) == FORM_OK;
    snprintf(seq, sizeof seq, "%d", c->row.cb_seq);
    timefmt_rfc2822(timefmt_now_ms(), ts);
    ok = ok && form_add(&f, "CallbackSource", "call-progress-events") == FORM_OK &&
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
    if (ok) eng_outbox_add(e, c, "status", url, eng_param_str(c, "status_callback_method"), &f);
    c->row.cb_seq++;
    form_fini(&f);
}

void eng_amd_callback(engine *e, call *c)
{
    const char *url = eng_param_str(c, "async_amd_status_callback");
    form f;
    char ms[24];
    if (!url || !json_is_true(json_object_get(c->row.params, "async_amd"))) return;
    form_init(&f);
    snprintf(ms, sizeof ms, "%lld", (long long)json_integer_value(json_object_get(c->row.params, "amd_ms")));
    if (form_add(&f, "CallSid", c->row.sid) == FORM_OK &&
        form_add(&f, "AccountSid", c->row.account_sid) == FORM_OK &&
        form_add(&f, "AnsweredBy", c->row.answered_by) == FORM_OK &&
        form_add(&f, "MachineDetectionDuration", ms) == FORM_OK)
        eng_outbox_add(e, c, "amd", url, eng_param_str(c, "async_amd_status_callback_method"), &f);
    form_fini(&f);
}

/* ---------------------------------------------------------------- 4 */

static obq *obq_get(engine *e, const char *call_sid, bool create)
{
    size_t b = eng_bucket(call_sid);
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
    obq **pp = &e->queues[eng_bucket(q->call_sid)];
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
    (void)eng_txn_begin(e);
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

void eng_log_exchange(engine *e, const char *account_sid, const char *call_sid,
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

void eng_notify(engine *e, const char *account_sid, const char *call_sid, int code, int level,
                const char *message, const char *url, const char *method, const char *vars,
                const webhook_result *res)
{
    store_notification n = {0};
    buf msg;
    char labels[64];
    json_t *body = NULL;
    bool lossy = false;
    buf_init(&msg, 4096);
    (void)eng_txn_begin(e);
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
    /* Stored as UTF-8 (lossily, like the event log): the column is read
     * back into JSON, and jansson refuses a string with one bad byte, which
     * dropped the whole response_body of a Latin-1 answer. */
    if (res) body = lossy_string(buf_str(&res->body), res->body.len, res->body.len, &lossy);
    if (body) n.response_body = json_string_value(body);
    if (store_notification_insert(e->db, &n) != STORE_OK)
        log_warn("engine", "could not record notification %d", code);
    json_decref(body);
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
netpolicy *engine_policy(engine *e)
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
    eng_ob_item_free(it);
}

void eng_ob_item_free(ob_item *it)
{
    store_outbox_fini(&it->o);
    form_fini(&it->params);
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
        eng_notify(e, it->o.account_sid, it->o.call_sid, res->error_code, 0, res->error_msg,
               res->url, it->o.method, it->o.params, res);
    (void)eng_txn_begin(e);
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
        /* A row queued in this run still has its pairs; a recovered one is
         * parsed back from its encoding (the same pairs). */
        if (!acct || (!it->params.n && form_parse(&params, it->o.params, strlen(it->o.params)) != FORM_OK) ||
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
            .url = it->o.url, .method = it->o.method, .params = it->params.n ? &it->params : &params,
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

void eng_outbox_enqueue(engine *e, ob_item *it)
{
    obq *q = obq_get(e, it->o.call_sid, true);
    if (!q || q->n >= ENGINE_MAX_OUTBOX_PER_CALL) {
        log_error("engine", "outbox queue for %s is full; row %lld waits for the next start",
                  it->o.call_sid, (long long)it->o.id);
        eng_ob_item_free(it);
        return;
    }
    it->next = NULL;
    if (q->tail) q->tail->next = it;
    else q->head = it;
    q->tail = it;
    q->n++;
    obq_pump(e, q);
}

void eng_deliver_kicked(engine *e)
{
    ob_item *it = e->kick_head;
    e->kick_head = e->kick_tail = NULL;
    while (it) {
        ob_item *next = it->next;
        eng_outbox_enqueue(e, it);
        it = next;
    }
}

