/* rest.c — the route table, authentication, and the small endpoints:
 * Account, health, readiness, metrics, and the Kaphila event receiver.
 * The Calls family lives in rest_calls.c. */
#include "http/rest.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store/calljson.h"
#include "engine/engine.h"
#include "base/errors.h"
#include "http/keyauth.h"
#include "base/log.h"
#include "base/metrics.h"
#include "engine/recordings.h"
#include "http/recordings_rest.h"
#include "base/sid.h"
#include "base/timefmt.h"

#define ACCOUNT_PATH API_PREFIX "/Accounts/*"
/* The access log shows at most this many bytes of query parameter names. */
#define REST_ACCESS_QUERY_MAX 256
/* Kaphila's event payloads are small objects; anything bigger is refused. */
#define KEVENT_MAX_BYTES (64 * 1024)

static const char *const www_auth[] = {"WWW-Authenticate", "Basic realm=\"Twilio API\"", NULL};

/* allow_key: whether a Standard API key (SK…) may act for the account. */
static const config_account *auth(app *a, http_req *r, const char *path_account_sid,
                                  bool allow_key)
{
    const config *cfg = app_config(a);
    const config_account *acct = config_account_by_sid(cfg, path_account_sid);
    const char *user = NULL, *pass = NULL;
    bool ok = false;

    /* A SID the file does not define, or one bound to a Kaphila key: with
     * accounts.kaphila_keys the key is checked (cached /api/me verdicts,
     * keyauth.h); such an account has no API key to refuse. */
    if (cfg->kaphila_keys && a->keyauth && (!acct || acct->kaphila_key_account)) {
        if (!(acct = keyauth_auth(a->keyauth, r, path_account_sid))) return NULL;
        ok = true;
    } else if (acct && acct->kaphila_key_account) {
        acct = NULL;   /* the mode was switched off (SIGHUP): bound keys no longer open */
    }
    if (ok) {
        /* authenticated above */
    } else if (http_basic_auth(r, &user, &pass) && acct) {
        if (sid_equal_ct(user, acct->sid))
            ok = sid_equal_ct(pass, acct->auth_token);
        else if (acct->api_key_sid && sid_equal_ct(user, acct->api_key_sid))
            ok = sid_equal_ct(pass, acct->api_key_secret) && allow_key;
    }
    if (!ok) {
        log_info("rest", "authentication failed for %s", http_path(r));
        http_reply_error_h(r, 20003, 401, "Authenticate", www_auth);
        return NULL;
    }
    log_context(http_request_id(r), acct->sid, NULL);
    /* The same parameter cap as for bodies applies to query strings. */
    if (http_query(r)->n > (size_t)cfg->max_params) {
        http_reply_error(r, 400, 400, "Too many query parameters in the request");
        return NULL;
    }
    return acct;
}

const config_account *rest_auth(app *a, http_req *r, const char *path_account_sid)
{
    return auth(a, r, path_account_sid, true);
}

bool rest_body_form(app *a, http_req *r, form *out)
{
    const config *cfg = app_config(a);
    const buf *b = http_body(r);
    const char *ct = http_header(r, "Content-Type");
    form_status fs;

    form_init(out);
    if (b->len && (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0)) {
        http_reply_error(r, 415, 415,
                         "Request bodies must be application/x-www-form-urlencoded");
        return false;
    }
    fs = form_parse(out, buf_str(b), b->len);
    if (fs == FORM_OK && out->n > (size_t)cfg->max_params) fs = FORM_ERR_TOO_MANY;
    if (fs != FORM_OK) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s",
                 fs == FORM_ERR_TOO_MANY ? "Too many parameters in the request"
                 : fs == FORM_ERR_TOO_LONG ? "A parameter value is too long"
                 : "The request body is not valid form encoding");
        form_fini(out);
        http_reply_error(r, 400, 400, msg);
        return false;
    }
    return true;
}

bool rest_date_filter(http_req *r, const char *name, int64_t *from, int64_t *to)
{
    static const char *const ops[] = {"", "<", ">"};
    const form *q = http_query(r);
    for (int i = 0; i < 3; i++) {
        char key[32];
        const char *v;
        int64_t ms;
        bool date_only;
        snprintf(key, sizeof key, "%s%s", name, ops[i]);
        if (!(v = form_get(q, key)) || !*v) continue;
        if (!timefmt_parse_iso8601(v, &ms, &date_only)) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s must be a date (YYYY-MM-DD) or an ISO 8601 date-time,"
                     " not '%.64s'", key, v);
            http_reply_error(r, TWERR_BAD_PARAM, 400, msg);
            return false;
        }
        if (i == 0) {
            *from = ms ? ms : 1;
            *to = ms + (date_only ? 86400000 : 1000);
        } else if (i == 1) {
            *to = ms;
        } else {
            *from = ms ? ms : 1;
        }
    }
    return true;
}

bool rest_paging_parse(http_req *r, rest_paging *p)
{
    const form *q = http_query(r);
    const char *ps = form_get(q, "PageSize"), *pg = form_get(q, "Page");
    char *end;
    p->page_size = 50;
    p->page = 0;
    p->token = form_get(q, "PageToken");
    if (p->token && !*p->token) p->token = NULL;
    if (ps) {
        long n = strtol(ps, &end, 10);
        if (!*ps || *end || n < 1 || n > 1000) {
            http_reply_error(r, TWERR_BAD_PARAM, 400, "PageSize must be an integer between 1 and 1000");
            return false;
        }
        p->page_size = (int)n;
    }
    if (pg) {
        long n = strtol(pg, &end, 10);
        if (!*pg || *end || n < 0 || n > 100000000L) {
            http_reply_error(r, TWERR_BAD_PARAM, 400, "Page must be a non-negative integer");
            return false;
        }
        p->page = (int)n;
    }
    return true;
}

/* ---- Account ---- */

/* ---- the engine's transport callbacks (engine_reply) ---- */

static void er_bytes(void *req, int status, const char *ctype, const char *body, size_t len)
{
    http_reply(req, status, ctype, body, len, NULL);
}

static void er_owned(void *req, int status, const char *ctype, char *body, size_t len)
{
    http_reply_owned(req, status, ctype, body, len, NULL);
}

static void er_json(void *req, int status, json_t *j) { http_reply_json(req, status, j); }

static void er_error(void *req, int code, int status, const char *message,
                     const char *const *headers)
{
    if (headers) http_reply_error_h(req, code, status, message, headers);
    else http_reply_error(req, code, status, message);
}

static bool er_file(void *req, const char *path, const char *range, const char *ctype)
{
    return rec_serve_media(req, path, range, ctype);
}

static const buf *er_body(const void *req) { return http_body(req); }
static const char *er_request_id(const void *req) { return http_request_id(req); }
static void er_suspend(void *req) { http_suspend(req); }

static const engine_reply_ops rest_reply_ops = {
    .bytes = er_bytes, .owned = er_owned, .json = er_json, .error = er_error,
    .file = er_file, .body = er_body, .request_id = er_request_id, .suspend = er_suspend,
};

engine_reply rest_engine_reply(http_req *r)
{
    return (engine_reply){&rest_reply_ops, r};
}

static void account_fetch(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    char sid[HTTP_CAPTURE_LEN];
    snprintf(sid, sizeof sid, "%s", m->cap[0]);
    /* Only the account's own credentials reach the Account resource: a
     * Standard API key cannot (Twilio: only Main keys reach /Accounts), and
     * this body carries auth_token, the webhook signing key. Twilio's answer
     * to a credential that may not act is 401 / 20003 (contract §7). */
    const config_account *acct = auth(a, r, sid, false);
    if (!acct) return;
    http_reply_json(r, 200, calljson_account(acct, a->started_ms));
}

/* GET …/Balance.json: Kaphila's credits for the account's key, asked of
 * Kaphila (GET /api/me) by the engine, which answers. */
static void balance_fetch(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    if (!acct) return;
    http_suspend(r);
    if (!engine_balance(a->engine, rest_engine_reply(r), acct->sid))
        http_reply_error(r, 20503, 503, "Too many requests in progress; try again shortly");
}

/* ---- health, readiness, metrics ---- */

/* Liveness: the process serves HTTP and its engine is not stuck in one
 * loop turn past limits.engine_stall_ms (main.c logs it). */
static void healthz(void *ctx, http_req *r, const http_match *m)
{
    (void)m;
    app *a = ctx;
    if (engine_stalled_ms(a->engine)) {
        static const char stalled[] = "engine stalled\n";
        http_reply(r, 503, "text/plain", stalled, sizeof stalled - 1, NULL);
        return;
    }
    http_reply(r, 200, "text/plain", "ok\n", 3, NULL);
}

static void readyz(void *ctx, http_req *r, const http_match *m)
{
    (void)m;
    app *a = ctx;
    store_conn *c = store_conn_acquire(a->store);
    bool db_ok = false;
    const char *why = NULL;
    if (c) {
        db_ok = store_check_writable(c) == STORE_OK;
        store_conn_release(c);
    }
    store_fault_stats fs;
    store_faults(a->store, &fs);
    if (atomic_load(&a->draining)) why = "draining\n";
    else if (fs.integrity_failed) why = "database failed its integrity check\n";
    else if (!db_ok || fs.write_failing) why = "database not writable\n";
    else if (!engine_kaphila_ready(a->engine)) why = "kaphila unreachable\n";
    else if (!engine_lease_ok(a->engine)) why = "lease not renewed\n";
    if (why) {
        http_reply(r, 503, "text/plain", why, strlen(why), NULL);
        return;
    }
    http_reply(r, 200, "text/plain", "ready\n", 6, NULL);
}

static void metrics_handler(void *ctx, http_req *r, const http_match *m)
{
    (void)m;
    app *a = ctx;
    const config *cfg = app_config(a);
    size_t len = 0;
    char *text;
    if (cfg->metrics_token && *cfg->metrics_token) {
        /* Scheme and token compared apart, the token over its full length
         * (no fixed buffer to cut a long one short); the scheme is
         * case-insensitive (RFC 9110 §11.1). */
        const char *h = http_header(r, "Authorization");
        if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !sid_equal_ct(h + 7, cfg->metrics_token)) {
            http_reply(r, 401, "text/plain", "unauthorized\n", 13, NULL);
            return;
        }
    }
    metrics_gauge(a->metrics, "twigate_live_calls", NULL, (double)engine_live_calls(a->engine));
    store_conn *c = store_conn_acquire(a->store);
    if (c) {
        int64_t pending = 0, oldest = 0;
        if (store_outbox_stats(c, &pending, &oldest) == STORE_OK) {
            metrics_gauge(a->metrics, "twigate_outbox_pending", NULL, (double)pending);
            metrics_gauge(a->metrics, "twigate_outbox_oldest_seconds", NULL,
                          pending ? (double)(timefmt_now_ms() - oldest) / 1000.0 : 0);
        }
        store_conn_release(c);
    }
    metrics_counter_set(a->metrics, "twigate_sqlite_busy_total", NULL, (double)store_busy_count(a->store));
    store_ckpt_stats ck;
    store_checkpoint_stats(a->store, &ck);
    metrics_counter_set(a->metrics, "twigate_sqlite_checkpoints_total", "trigger=\"volume\"",
                        (double)ck.by_volume);
    metrics_counter_set(a->metrics, "twigate_sqlite_checkpoints_total", "trigger=\"timer\"",
                        (double)ck.by_timer);
    metrics_gauge(a->metrics, "twigate_sqlite_wal_pages", NULL, (double)ck.wal_pages);
    static const char *const fault_kinds[STORE_FAULT_KINDS] = {
        "kind=\"full\"", "kind=\"readonly\"", "kind=\"io\"", "kind=\"corrupt\"",
    };
    store_fault_stats fs;
    store_faults(a->store, &fs);
    for (int i = 0; i < STORE_FAULT_KINDS; i++)
        metrics_counter_set(a->metrics, "twigate_storage_errors_total", fault_kinds[i],
                            (double)fs.count[i]);
    callcache_stats cs;
    callcache_get_stats(a->callcache, &cs);
    metrics_counter_set(a->metrics, "twigate_call_cache_hits_total", NULL, (double)cs.hits);
    metrics_counter_set(a->metrics, "twigate_call_cache_misses_total", NULL, (double)cs.misses);
    metrics_gauge(a->metrics, "twigate_call_cache_entries", NULL, (double)cs.entries);
    uint64_t refused = 0, head_timeouts = 0;
    http_guard_stats(a->http, &refused, &head_timeouts);
    metrics_counter_set(a->metrics, "twigate_http_connections_refused_total", NULL, (double)refused);
    metrics_counter_set(a->metrics, "twigate_http_head_timeouts_total", NULL, (double)head_timeouts);
    text = metrics_render(a->metrics, &len);
    if (!text) {
        http_reply(r, 500, "text/plain", "", 0, NULL);
        return;
    }
    http_reply_owned(r, 200, "text/plain; version=0.0.4", text, len, NULL);
}

void rest_observe(void *ctx, const char *route, int status, int64_t usec)
{
    app *a = ctx;
    char labels[128];
    snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", route, status);
    metrics_inc(a->metrics, "twigate_http_requests_total", labels, 1);
    snprintf(labels, sizeof labels, "route=\"%s\"", route);
    metrics_observe(a->metrics, "twigate_http_request_seconds", labels, (double)usec / 1e6);
}

/* The access log (log.access): one line per request. The path is logged as
 * received, except Kaphila's event path, whose last segment is the call's
 * event token (a credential); of the query only the parameter names are
 * kept, since values can be secrets or personal data. */
void rest_access(void *ctx, const http_req *r, int status, uint64_t bytes, int64_t usec)
{
    char q[REST_ACCESS_QUERY_MAX];
    const form *f = http_query(r);
    const char *path = http_path(r);
    size_t n = 0;

    if (!app_config(ctx)->log_access) return;
    if (!strcmp(http_route_name(r), "kaphila_event")) path = "/kaphila/events/*";
    q[0] = '\0';
    for (size_t i = 0; i < f->n; i++) {
        int w = snprintf(q + n, sizeof q - n, "%c%s=*", i ? '&' : '?', f->pairs[i].key);
        if (w < 0 || (size_t)w >= sizeof q - n) {   /* cut, and say so */
            snprintf(q + (n < sizeof q - 4 ? n : sizeof q - 4), 4, "\xe2\x80\xa6");
            break;
        }
        n += (size_t)w;
    }
    log_context(http_request_id(r), NULL, NULL);
    log_info("access", "%s %s%s %d %llu bytes %lld us", http_method(r) ? http_method(r) : "-",
             path, q, status, (unsigned long long)bytes, (long long)usec);
    log_context_clear();
}

/* ---- Kaphila events ---- */

/* A token as sid_token makes them (base64url); anything else names no call,
 * and cannot overflow the engine's copy. */
static bool token_plausible(const char *t)
{
    size_t n = 0;
    for (; t[n]; n++)
        if (!isalnum((unsigned char)t[n]) && t[n] != '-' && t[n] != '_') return false;
    return n > 0 && n < TOKEN_SIZE;
}

/* POST /kaphila/events/{token}: the token authenticates the sender (Kaphila
 * signs nothing). Only the body's shape is checked here; the engine finds
 * the call, applies the event in its write batch and answers 200 once that
 * batch has committed, so an event Kaphila believes delivered is never
 * lost (engine.h). */
static void kaphila_event(void *ctx, http_req *r, const http_match *m)
{
    static const char *const retry[] = {"Retry-After", "1", NULL};
    app *a = ctx;
    const buf *b = http_body(r);
    json_t *ev = NULL;

    log_context(http_request_id(r), NULL, NULL);
    if (!token_plausible(m->cap[0])) {
        http_reply(r, 404, "application/json", "{\"success\":false,\"error\":\"unknown call\"}", 40, NULL);
        return;
    }
    if (b->len > KEVENT_MAX_BYTES || !(ev = json_loadb(buf_str(b), b->len, 0, NULL)) ||
        !json_is_object(ev) || !json_is_string(json_object_get(ev, "event"))) {
        log_warn("kaphila", "event that is not a JSON object with an event name (%zu bytes)", b->len);
        http_reply(r, 400, "application/json", "{\"success\":false,\"error\":\"bad event\"}", 37, NULL);
        json_decref(ev);
        return;
    }
    /* The last reference is the request's: the tree is freed here, on the
     * thread that parsed it, once the reply is out (httpd.h). */
    http_hold_json(r, json_incref(ev));
    /* Suspend before handing over, so the engine's reply always finds the
     * connection suspended. */
    http_suspend(r);
    if (!engine_kevent(a->engine, rest_engine_reply(r), m->cap[0], ev)) {
        /* Not a silent drop: Kaphila sees the failure and keeps the event. */
        log_error("kaphila", "engine queue full; event refused with 503");
        http_reply(r, 503, "application/json", "{\"success\":false,\"error\":\"busy\"}", 32, retry);
    }
}

void rest_not_found(void *ctx, http_req *r, const http_match *m)
{
    (void)ctx; (void)m;
    const char *path = http_path(r);
    char msg[512];
    if (strncmp(path, API_PREFIX "/", sizeof API_PREFIX) == 0) {
        const char *res = strrchr(path, '/');
        snprintf(msg, sizeof msg,
                 "The requested resource %.300s was not found. twigate serves the Voice API"
                 " (Accounts, Calls, Recordings, Notifications); %.80s is not supported",
                 path, res ? res + 1 : path);
    } else {
        snprintf(msg, sizeof msg, "The requested resource %.300s was not found", path);
    }
    http_reply_error(r, 20404, 404, msg);
}

static const http_route routes[] = {
    {"GET",    ACCOUNT_PATH ".json", account_fetch, "account_fetch"},
    {"GET",    ACCOUNT_PATH "/Balance.json", balance_fetch, "balance"},
    {"GET",    ACCOUNT_PATH "/Calls.json", rest_calls_list, "calls_list"},
    {"POST",   ACCOUNT_PATH "/Calls.json", rest_calls_create, "calls_create"},
    {"GET",    ACCOUNT_PATH "/Calls/*.json", rest_call_fetch, "call_fetch"},
    {"POST",   ACCOUNT_PATH "/Calls/*.json", rest_call_update, "call_update"},
    {"DELETE", ACCOUNT_PATH "/Calls/*.json", rest_call_delete, "call_delete"},
    {"GET",    ACCOUNT_PATH "/Calls/*/Events.json", rest_call_events, "call_events"},
    {"GET",    ACCOUNT_PATH "/Calls/*/Notifications.json", rest_notifications_list, "call_notifications"},
    {"GET",    ACCOUNT_PATH "/Calls/*/Notifications/*.json", rest_notification_fetch, "call_notification"},
    /* Literal Twilio.CURRENT before the wildcard; ".json" before the bare
     * media path ({RE}, {RE}.wav, {RE}.mp3), which would otherwise swallow it. */
    {"GET",    ACCOUNT_PATH "/Calls/*/Recordings.json", rec_call_list, "call_recordings"},
    {"POST",   ACCOUNT_PATH "/Calls/*/Recordings.json", rec_call_create, "call_recording_create"},
    {"GET",    ACCOUNT_PATH "/Calls/*/Recordings/Twilio.CURRENT.json", rec_call_current_fetch, "call_recording_current"},
    {"POST",   ACCOUNT_PATH "/Calls/*/Recordings/Twilio.CURRENT.json", rec_call_current_update, "call_recording_current_update"},
    {"GET",    ACCOUNT_PATH "/Calls/*/Recordings/*.json", rec_call_fetch, "call_recording"},
    {"POST",   ACCOUNT_PATH "/Calls/*/Recordings/*.json", rec_call_update, "call_recording_update"},
    {"DELETE", ACCOUNT_PATH "/Calls/*/Recordings/*.json", rec_call_delete, "call_recording_delete"},
    {"GET",    ACCOUNT_PATH "/Recordings.json", rec_list, "recordings"},
    {"GET",    ACCOUNT_PATH "/Recordings/*.json", rec_fetch, "recording"},
    {"DELETE", ACCOUNT_PATH "/Recordings/*.json", rec_delete, "recording_delete"},
    {"GET",    ACCOUNT_PATH "/Recordings/*", rec_media, "recording_media"},
    {"GET",    ACCOUNT_PATH "/Notifications.json", rest_notifications_list, "notifications"},
    {"GET",    ACCOUNT_PATH "/Notifications/*.json", rest_notification_fetch, "notification"},
    {"POST",   "/kaphila/events/*", kaphila_event, "kaphila_event"},
    {"GET",    "/healthz", healthz, "healthz"},
    {"GET",    "/readyz", readyz, "readyz"},
    {"GET",    "/metrics", metrics_handler, "metrics"},
    /* HEAD: the same answer without its body (libmicrohttpd sends only the
     * head of a response to a HEAD request); load balancers probe so. */
    {"HEAD",   "/healthz", healthz, "healthz"},
    {"HEAD",   "/readyz", readyz, "readyz"},
    {"HEAD",   "/metrics", metrics_handler, "metrics"},
    {NULL, NULL, NULL, NULL},
};

const http_route *rest_routes(void) { return routes; }
