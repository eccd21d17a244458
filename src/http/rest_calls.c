/* rest_calls.c — the Calls resource and the call's Events and
 * Notifications sub-resources (contract §3–§5, §7).
 *
 * Map: the create and update parameter tables; create; list (keyset
 * pagination); fetch; update; delete; events; notifications. Reads go
 * straight to the store; anything that touches a live call goes to the
 * engine, which replies to the suspended request. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/callcache.h"
#include "store/calljson.h"
#include "engine/engine.h"
#include "base/errors.h"
#include "base/log.h"
#include "base/params.h"
#include "base/phone.h"
#include "http/rest.h"
#include "base/sid.h"
#include "base/timefmt.h"

/* Kaphila's ringTimeout has no documented cap; Twilio's Timeout is at most 600. */
#define CREATE_MAX_TIMEOUT 600
/* TimeLimit: Twilio allows up to 24 h; default 4 h. */
#define CREATE_MAX_TIME_LIMIT 86400
#define CREATE_DEFAULT_TIME_LIMIT 14400
/* Rows fetched per list page (PageSize is at most 1000; +1 to see if more exist). */
#define LIST_MAX_ROWS 1001

static const param_spec create_spec[] = {
    {"To", "to", P_STR, 0, 256, NULL, 21211},
    {"From", "from", P_STR, 0, 256, NULL, 21212},
    {"Url", "url", P_URL, 0, 0, NULL, 21205},
    {"Twiml", "twiml", P_STR, 0, 1 << 20, NULL, TWERR_BAD_PARAM},
    {"ApplicationSid", "application_sid", P_STR, 0, 64, NULL, 21218},
    {"Method", "method", P_METHOD, 0, 0, NULL, TWERR_BAD_PARAM},
    {"FallbackUrl", "fallback_url", P_URL, 0, 0, NULL, 21205},
    {"FallbackMethod", "fallback_method", P_METHOD, 0, 0, NULL, TWERR_BAD_PARAM},
    {"StatusCallback", "status_callback", P_URL, 0, 0, NULL, 21205},
    {"StatusCallbackEvent", "status_callback_event", P_LIST, 0, 0,
     "initiated|ringing|answered|completed", 21626},
    {"StatusCallbackMethod", "status_callback_method", P_METHOD, 0, 0, NULL, TWERR_BAD_PARAM},
    {"SendDigits", "send_digits", P_STR, 0, 32, NULL, TWERR_BAD_PARAM},
    {"Timeout", "timeout", P_INT, 1, CREATE_MAX_TIMEOUT, NULL, TWERR_BAD_PARAM},
    {"Record", "record", P_BOOL, 0, 0, NULL, TWERR_BAD_PARAM},
    {"RecordingChannels", "recording_channels", P_ENUM, 0, 0, "mono|dual", TWERR_BAD_PARAM},
    {"RecordingStatusCallback", "recording_status_callback", P_URL, 0, 0, NULL, 21205},
    {"RecordingStatusCallbackMethod", "recording_status_callback_method", P_METHOD, 0, 0, NULL,
     TWERR_BAD_PARAM},
    {"RecordingStatusCallbackEvent", "recording_status_callback_event", P_LIST, 0, 0,
     "in-progress|completed|absent", TWERR_BAD_PARAM},
    {"RecordingTrack", "recording_track", P_ENUM, 0, 0, "inbound|outbound|both", TWERR_BAD_PARAM},
    {"Trim", "trim", P_ENUM, 0, 0, "trim-silence|do-not-trim", TWERR_BAD_PARAM},
    {"SipAuthUsername", "sip_auth_username", P_IGNORE, 0, 256, NULL, TWERR_BAD_PARAM},
    {"SipAuthPassword", "sip_auth_password", P_IGNORE, 0, 256, NULL, TWERR_BAD_PARAM},
    {"MachineDetection", "machine_detection", P_ENUM, 0, 0, "Enable|DetectMessageEnd",
     TWERR_BAD_PARAM},
    {"MachineDetectionTimeout", "machine_detection_timeout", P_INT, 3, 60, NULL, TWERR_BAD_PARAM},
    {"MachineDetectionSpeechThreshold", "machine_detection_speech_threshold", P_INT, 1000, 6000,
     NULL, TWERR_BAD_PARAM},
    {"MachineDetectionSpeechEndThreshold", "machine_detection_speech_end_threshold", P_INT, 500,
     5000, NULL, TWERR_BAD_PARAM},
    {"MachineDetectionSilenceTimeout", "machine_detection_silence_timeout", P_INT, 2000, 10000,
     NULL, TWERR_BAD_PARAM},
    {"AsyncAmd", "async_amd", P_BOOL, 0, 0, NULL, TWERR_BAD_PARAM},
    {"AsyncAmdStatusCallback", "async_amd_status_callback", P_URL, 0, 0, NULL, 21205},
    {"AsyncAmdStatusCallbackMethod", "async_amd_status_callback_method", P_METHOD, 0, 0, NULL,
     TWERR_BAD_PARAM},
    {"CallerId", "caller_id", P_STR, 0, 256, NULL, 21212},
    {"Byoc", "byoc", P_IGNORE, 0, 64, NULL, TWERR_BAD_PARAM},
    {"CallReason", "call_reason", P_IGNORE, 0, 256, NULL, TWERR_BAD_PARAM},
    {"CallToken", "call_token", P_IGNORE, 0, 8192, NULL, TWERR_BAD_PARAM},
    {"TimeLimit", "time_limit", P_INT, 1, CREATE_MAX_TIME_LIMIT, NULL, TWERR_BAD_PARAM},
    {"ClientNotificationUrl", "client_notification_url", P_IGNORE, 0, 2048, NULL, TWERR_BAD_PARAM},
    {"RecordingConfigurationId", "recording_configuration_id", P_IGNORE, 0, 256, NULL,
     TWERR_BAD_PARAM},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static const param_spec update_spec[] = {
    {"Url", "url", P_URL, 0, 0, NULL, 21205},
    {"Method", "method", P_METHOD, 0, 0, NULL, TWERR_BAD_PARAM},
    {"Twiml", "twiml", P_STR, 0, 1 << 20, NULL, TWERR_BAD_PARAM},
    {"Status", "status", P_ENUM, 0, 0, "canceled|completed", TWERR_BAD_PARAM},
    {"FallbackUrl", "fallback_url", P_URL, 0, 0, NULL, 21205},
    {"FallbackMethod", "fallback_method", P_METHOD, 0, 0, NULL, TWERR_BAD_PARAM},
    {"StatusCallback", "status_callback", P_URL, 0, 0, NULL, 21205},
    {"StatusCallbackMethod", "status_callback_method", P_METHOD, 0, 0, NULL, TWERR_BAD_PARAM},
    {"TimeLimit", "time_limit", P_INT, 1, CREATE_MAX_TIME_LIMIT, NULL, TWERR_BAD_PARAM},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Accepted parameters twigate cannot carry out on Kaphila: the call goes
 * ahead and a 20001 warning notification says what was ignored. */
static const struct { const char *key, *why; } unsupported[] = {
    {"send_digits", "Kaphila cannot send DTMF digits on an outbound call"},
    {"sip_auth_username", "Kaphila dials phone numbers only (no SIP)"},
    {"sip_auth_password", "Kaphila dials phone numbers only (no SIP)"},
    {"byoc", "Kaphila has no BYOC trunks"},
    {"call_reason", "Kaphila has no branded calling"},
    {"call_token", "Kaphila has no call tokens"},
    {"client_notification_url", "Kaphila has no Twilio Client"},
    {"recording_configuration_id", "Kaphila has no recording configurations"},
    {"machine_detection_speech_threshold", "Kaphila's AMD cannot be tuned"},
    {"machine_detection_speech_end_threshold", "Kaphila's AMD cannot be tuned"},
    {"machine_detection_silence_timeout", "Kaphila's AMD cannot be tuned"},
    {"machine_detection_timeout", "Kaphila's AMD cannot be tuned"},
};

static bool send_digits_ok(const char *s)
{
    return strspn(s, "0123456789ABCD#*wW") == strlen(s);
}

/* A create's refusal: a Twilio error code and its message ("" = the
 * catalogue's title), always answered with 400. */
typedef struct create_err { int code; char msg[512]; } create_err;

static bool create_fail(create_err *err, int code, const char *msg)
{
    err->code = code;
    snprintf(err->msg, sizeof err->msg, "%s", msg ? msg : "");
    return false;
}

/* To, From and CallerId as E.164 numbers Kaphila can dial; To and From go
 * into call. */
static bool create_numbers(const form *f, const json_t *p, store_call *call, create_err *err)
{
    const char *to = form_get(f, "To"), *from = form_get(f, "From");
    char norm[PHONE_MAX];
    json_t *v;

    switch (phone_normalize(to, norm)) {
    case PHONE_E164: snprintf(call->to, sizeof call->to, "%s", norm); break;
    case PHONE_INVALID:
        snprintf(err->msg, sizeof err->msg, "The 'To' number %.200s is not a valid phone number.", to);
        err->code = 21211;
        return false;
    default:
        snprintf(err->msg, sizeof err->msg, "'To' %.200s cannot be reached: Kaphila dials phone"
                 " numbers only (client:, sip: and sim: endpoints are not supported)", to);
        err->code = 21214;
        return false;
    }
    if (phone_normalize(from, norm) != PHONE_E164) {
        snprintf(err->msg, sizeof err->msg, "The 'From' number %.200s is not a valid phone number.",
                 from);
        err->code = 21212;
        return false;
    }
    snprintf(call->from, sizeof call->from, "%s", norm);
    if ((v = json_object_get(p, "caller_id")) && phone_normalize(json_string_value(v), norm) != PHONE_E164) {
        snprintf(err->msg, sizeof err->msg, "CallerId %.200s is not a valid phone number.",
                 json_string_value(v));
        err->code = 21212;
        return false;
    }
    return true;
}

/* What the call will run (Url or Twiml, Url winning), SendDigits, and the
 * defaults of TimeLimit and Timeout; p is the parsed parameters. */
static bool create_program(const config *cfg, json_t *p, create_err *err)
{
    json_t *v;

    if (json_object_get(p, "application_sid")) {
        snprintf(err->msg, sizeof err->msg, "ApplicationSid %.64s is not valid: twigate has no"
                 " TwiML Applications; pass Url or Twiml instead",
                 json_string_value(json_object_get(p, "application_sid")));
        err->code = 21218;
        return false;
    }
    if (!json_object_get(p, "url") && !json_object_get(p, "twiml"))
        return create_fail(err, 21205, NULL);
    if (json_object_get(p, "url")) json_object_del(p, "twiml");   /* Url wins on create */
    if ((v = json_object_get(p, "twiml")) && json_string_length(v) > (size_t)cfg->max_twiml_bytes) {
        snprintf(err->msg, sizeof err->msg, "Twiml is longer than %d bytes", cfg->max_twiml_bytes);
        err->code = TWERR_BAD_PARAM;
        return false;
    }
    if ((v = json_object_get(p, "send_digits")) && !send_digits_ok(json_string_value(v)))
        return create_fail(err, TWERR_BAD_PARAM,
                           "SendDigits may contain only 0-9, A-D, #, * and w/W pauses");
    /* Twilio: with SendDigits, AMD is ignored. */
    if (json_object_get(p, "send_digits")) json_object_del(p, "machine_detection");
    if (!json_object_get(p, "time_limit"))
        json_object_set_new(p, "time_limit", json_integer(CREATE_DEFAULT_TIME_LIMIT));
    if (!json_object_get(p, "timeout")) json_object_set_new(p, "timeout", json_integer(60));
    return true;
}

/* The whole validation of a create's form: p receives the parameters,
 * unknown the names twigate does not know, call the numbers. */
static bool create_validate(const config *cfg, const form *f, json_t *p, json_t *unknown,
                            store_call *call, create_err *err)
{
    const char *to = form_get(f, "To"), *from = form_get(f, "From");
    param_error perr;

    if (!to || !*to) return create_fail(err, 21201, "No 'To' number is specified");
    if (!from || !*from) return create_fail(err, 21213, "No 'From' number is specified");
    if (!params_parse(create_spec, f, p, unknown, &perr))
        return create_fail(err, perr.code, perr.message);
    return create_numbers(f, p, call, err) && create_program(cfg, p, err);
}

/* The 20001 warnings that go with the row (the engine stores both in one
 * commit): each unsupported parameter given, each unknown one. */
static void create_warnings(const json_t *params, const json_t *unknown, json_t *warnings)
{
    char msg[512];

    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
        if (json_object_get(params, unsupported[i].key)) {
            snprintf(msg, sizeof msg, "Parameter %s was ignored: %s", unsupported[i].key,
                     unsupported[i].why);
            json_array_append_new(warnings, json_string(msg));
        }
    for (size_t i = 0; i < json_array_size(unknown); i++) {
        snprintf(msg, sizeof msg, "Unknown parameter %.100s was ignored",
                 json_string_value(json_array_get(unknown, i)));
        json_array_append_new(warnings, json_string(msg));
    }
}

void rest_calls_create(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    form f;
    json_t *p = NULL, *unknown = NULL, *warnings = NULL;
    store_call call = {0};
    create_err err = {0};
    bool have_form = false;

    if (!acct) return;
    if (atomic_load(&a->draining)) {
        http_reply_error(r, 20503, 503, "twigate is shutting down; retry on another instance");
        return;
    }
    if (!rest_body_form(a, r, &f)) return;
    have_form = true;
    p = json_object();
    unknown = json_array();
    warnings = json_array();
    if (!p || !unknown || !warnings) { http_reply_error(r, 20500, 500, NULL); goto out; }
    if (!create_validate(app_config(a), &f, p, unknown, &call, &err)) {
        http_reply_error(r, err.code, 400, err.msg[0] ? err.msg : NULL);
        goto out;
    }

    /* The row. */
    if (!sid_new("CA", call.sid) || !sid_token(call.token)) {
        http_reply_error(r, 20500, 500, NULL);
        goto out;
    }
    snprintf(call.account_sid, sizeof call.account_sid, "%s", acct->sid);
    snprintf(call.status, sizeof call.status, "queued");
    snprintf(call.direction, sizeof call.direction, "outbound-api");
    call.date_created = call.date_updated = timefmt_now_ms();
    call.duration = -1;
    call.params = p;
    p = NULL;
    log_context(http_request_id(r), acct->sid, call.sid);
    create_warnings(call.params, unknown, warnings);

    /* Suspend before handing over, so the engine's reply always finds the
     * connection suspended. */
    http_suspend(r);
    if (!engine_originate(a->engine, rest_engine_reply(r), &call, warnings)) {
        warnings = NULL;   /* taken either way */
        http_reply_error(r, 20503, 503, "Too many calls in progress; try again shortly");
        goto out;
    }
    warnings = NULL;
out:
    store_call_fini(&call);
    json_decref(p);
    json_decref(unknown);
    json_decref(warnings);
    if (have_form) form_fini(&f);
}

void rest_calls_list(void *ctx, http_req *r, const http_match *m)
{
    static const char *const statuses = "|queued|ringing|in-progress|completed|busy|failed|no-answer|canceled|";
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    const form *q = http_query(r);
    store_call_filter f = {0};
    rest_paging pg;
    store_conn *c = NULL;
    store_call *rows = NULL;
    int n = 0;
    int64_t before = 0;
    char to[PHONE_MAX], from[PHONE_MAX], base[128], next[SID_SIZE + 2], status[40];
    json_t *items = NULL;

    if (!acct || !rest_paging_parse(r, &pg)) return;
    f.account_sid = acct->sid;
    f.to = form_get(q, "To");
    f.from = form_get(q, "From");
    if (f.to && phone_normalize(f.to, to) == PHONE_E164) f.to = to;
    if (f.from && phone_normalize(f.from, from) == PHONE_E164) f.from = from;
    f.parent_call_sid = form_get(q, "ParentCallSid");
    f.status = form_get(q, "Status");
    if (f.status && *f.status) {
        /* Any case, as for the enums of params.c: the statuses are all
         * lower case, so that is their canonical spelling. */
        char probe[40];
        snprintf(probe, sizeof probe, "|%.30s|", f.status);
        for (char *p = probe; *p; p++) *p = (char)tolower((unsigned char)*p);
        snprintf(status, sizeof status, "%.*s", (int)strlen(probe) - 2, probe + 1);
        f.status = status;
        if (!strstr(statuses, probe)) {
            http_reply_error(r, TWERR_BAD_PARAM, 400, "Status must be one of queued, ringing,"
                             " in-progress, completed, busy, failed, no-answer, canceled");
            return;
        }
    }
    if (!rest_date_filter(r, "StartTime", &f.start_from, &f.start_to) ||
        !rest_date_filter(r, "EndTime", &f.end_from, &f.end_to))
        return;

    c = store_conn_acquire(a->store);
    rows = calloc(LIST_MAX_ROWS, sizeof *rows);
    if (!c || !rows) { http_reply_error(r, 20503, 503, NULL); goto out; }
    if (pg.token) {
        /* "PA" + the SID of the previous page's last call. */
        if (strncmp(pg.token, "PA", 2) != 0 ||
            store_call_id(c, acct->sid, pg.token + 2, &before) != STORE_OK) {
            http_reply_error(r, TWERR_BAD_PARAM, 400, "PageToken is not valid for this list");
            goto out;
        }
    }
    if (store_call_list(c, &f, before, pg.token ? 0 : (int64_t)pg.page * pg.page_size,
                        pg.page_size + 1, rows, &n) != STORE_OK) {
        http_reply_error(r, 20500, 500, NULL);
        goto out;
    }
    items = json_array();
    for (int i = 0; i < n && i < pg.page_size; i++)
        json_array_append_new(items, calljson_call(&rows[i]));
    snprintf(base, sizeof base, API_PREFIX "/Accounts/%s/Calls.json", acct->sid);
    if (n > pg.page_size) snprintf(next, sizeof next, "PA%s", rows[pg.page_size - 1].sid);
    calljson_page page = {
        .key = "calls", .base_path = base, .filters = q, .page = pg.page,
        .page_size = pg.page_size, .page_token = pg.token,
        .next_token = n > pg.page_size ? next : NULL,
    };
    http_reply_json(r, 200, calljson_list(&page, items));
out:
    for (int i = 0; rows && i < n; i++) store_call_fini(&rows[i]);
    free(rows);
    store_conn_release(c);
}

/* Loads the call named in the path; replies 404 itself when absent. */
static bool load_call(app *a, http_req *r, const char *account_sid, const char *sid,
                      store_call *out)
{
    store_conn *c;
    store_status st = STORE_NOTFOUND;
    char msg[192];
    if (sid_valid(sid, "CA") && (c = store_conn_acquire(a->store))) {
        st = store_call_get(c, account_sid, sid, out);
        store_conn_release(c);
    } else if (sid_valid(sid, "CA")) {
        st = STORE_ERROR;
    }
    if (st == STORE_OK) {
        log_context(http_request_id(r), account_sid, sid);
        return true;
    }
    if (st == STORE_NOTFOUND) {
        snprintf(msg, sizeof msg, "The requested resource /2010-04-01/Accounts/%s/Calls/%.40s.json"
                 " was not found", account_sid, sid);
        http_reply_error(r, 20404, 404, msg);
    } else {
        http_reply_error(r, 20503, 503, NULL);
    }
    return false;
}

/* Room for a rendered Call (~2 KB; the URIs are most of it) with margin; a
 * larger body takes the allocating path. */
#define FETCH_BODY_BUF 4096

/* The hottest route: clients poll a call until it ends and often after.
 * An ended call's body comes from the call cache (callcache.h, no SQLite, no
 * jansson); otherwise the row is read and rendered into a stack buffer, and
 * put in the cache when the call has ended. The ticket is taken by the
 * lookup, before the row is read: that ordering is what keeps a body that a
 * concurrent write made stale out of the cache. */
void rest_call_fetch(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    const char *sid = m->cap[1];
    store_call call = {0};
    callcache_ticket ticket = 0;
    char body[FETCH_BODY_BUF], *cached;
    size_t len;
    if (!acct) return;
    if (sid_valid(sid, "CA") &&
        callcache_get(a->callcache, sid, acct->sid, &cached, &len, &ticket)) {
        log_context(http_request_id(r), acct->sid, sid);
        http_reply_owned(r, 200, "application/json", cached, len, NULL);
        return;
    }
    if (!load_call(a, r, acct->sid, sid, &call)) return;
    len = calljson_call_render(&call, body, sizeof body);
    if (len == 0 || len > sizeof body) {
        http_reply_json(r, 200, calljson_call(&call));
    } else {
        if (!store_status_live(call.status))
            (void)callcache_put(a->callcache, ticket, call.sid, acct->sid, body, len);
        http_reply(r, 200, "application/json", body, len, NULL);
    }
    store_call_fini(&call);
}

void rest_call_update(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config *cfg = app_config(a);
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    store_call call = {0};
    form f;
    json_t *upd = NULL, *v;
    param_error perr;
    bool have_form = false;

    if (!acct || !load_call(a, r, acct->sid, m->cap[1], &call)) return;
    if (!rest_body_form(a, r, &f)) goto out;
    have_form = true;
    upd = json_object();
    if (!params_parse(update_spec, &f, upd, NULL, &perr)) {
        http_reply_error(r, perr.code, 400, perr.message);
        goto out;
    }
    if (json_object_get(upd, "url") && json_object_get(upd, "twiml")) {
        http_reply_error(r, TWERR_BAD_PARAM, 400, "Url and Twiml are mutually exclusive");
        goto out;
    }
    if ((v = json_object_get(upd, "twiml")) && json_string_length(v) > (size_t)cfg->max_twiml_bytes) {
        http_reply_error(r, TWERR_BAD_PARAM, 400, "Twiml is too long");
        goto out;
    }
    if (!store_status_live(call.status)) {
        /* Hanging up a call that already ended changes nothing; anything
         * else needs a live call. */
        if (json_object_size(upd) == 1 && json_object_get(upd, "status")) {
            http_reply_json(r, 200, calljson_call(&call));
        } else {
            http_reply_error(r, 21220, 400, "Call is not in-progress. Cannot redirect or update it.");
        }
        goto out;
    }
    http_suspend(r);
    if (!engine_update(a->engine, rest_engine_reply(r), acct->sid, call.sid, upd)) {
        upd = NULL;
        http_reply_error(r, 20503, 503, "Too many requests in progress; try again shortly");
        goto out;
    }
    upd = NULL;
out:
    json_decref(upd);
    if (have_form) form_fini(&f);
    store_call_fini(&call);
}

void rest_call_delete(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    store_call call = {0};
    if (!acct || !load_call(a, r, acct->sid, m->cap[1], &call)) return;
    if (store_status_live(call.status)) {
        http_reply_error(r, 21220, 400, "Invalid call state: the call is still in progress;"
                         " end it with Status=completed (or canceled) before deleting it");
        goto out;
    }
    /* Only the engine writes calls: it deletes the row and replies. */
    http_suspend(r);
    if (!engine_delete_call(a->engine, rest_engine_reply(r), acct->sid, call.sid))
        http_reply_error(r, 20503, 503, "Too many requests in progress; try again shortly");
out:
    store_call_fini(&call);
}

/* ---- Events: the call's live request/response log ---- */

void rest_call_events(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    store_call call = {0};
    store_conn *c = NULL;
    rest_paging pg;
    int64_t after = 0, last = 0;
    json_t *items = NULL;
    char base[160], next[32];

    if (!acct || !rest_paging_parse(r, &pg) || !load_call(a, r, acct->sid, m->cap[1], &call))
        return;
    if (pg.token && (strncmp(pg.token, "PA", 2) || (after = strtoll(pg.token + 2, NULL, 10)) <= 0)) {
        http_reply_error(r, TWERR_BAD_PARAM, 400, "PageToken is not valid for this list");
        goto out;
    }
    c = store_conn_acquire(a->store);
    items = json_array();
    if (!c || !items ||
        store_event_list(c, acct->sid, call.sid, after, pg.token ? 0 : (int64_t)pg.page * pg.page_size,
                         pg.page_size + 1, items, &last) != STORE_OK) {
        http_reply_error(r, 20503, 503, NULL);
        goto out;
    }
    bool more = json_array_size(items) > (size_t)pg.page_size;
    if (more) {
        json_array_remove(items, (size_t)pg.page_size);
        snprintf(next, sizeof next, "PA%lld", (long long)json_integer_value(json_object_get(
                     json_array_get(items, (size_t)pg.page_size - 1), "id")));
    }
    for (size_t i = 0; i < json_array_size(items); i++)
        json_object_del(json_array_get(items, i), "id");
    snprintf(base, sizeof base, API_PREFIX "/Accounts/%s/Calls/%s/Events.json", acct->sid, call.sid);
    calljson_page page = {
        .key = "events", .base_path = base, .filters = http_query(r), .page = pg.page,
        .page_size = pg.page_size, .page_token = pg.token, .next_token = more ? next : NULL,
    };
    http_reply_json(r, 200, calljson_list(&page, items));
    items = NULL;
out:
    json_decref(items);
    store_conn_release(c);
    store_call_fini(&call);
}

/* ---- Notifications ---- */

static json_t *notification_json(json_t *row, bool full)
{
    char uri[192], code[16], log_s[4];
    const char *acct = json_string_value(json_object_get(row, "account_sid"));
    const char *call = json_string_value(json_object_get(row, "call_sid"));
    const char *sid = json_string_value(json_object_get(row, "sid"));
    int64_t date = json_integer_value(json_object_get(row, "date"));
    json_t *o = json_object();
    if (call && *call)
        snprintf(uri, sizeof uri, API_PREFIX "/Accounts/%s/Calls/%s/Notifications/%s.json", acct, call, sid);
    else
        snprintf(uri, sizeof uri, API_PREFIX "/Accounts/%s/Notifications/%s.json", acct, sid);
    snprintf(code, sizeof code, "%lld", (long long)json_integer_value(json_object_get(row, "error_code")));
    snprintf(log_s, sizeof log_s, "%lld", (long long)json_integer_value(json_object_get(row, "log")));
    char more[96];
    twerr_more_info((int)json_integer_value(json_object_get(row, "error_code")), more, sizeof more);
    json_object_set_new(o, "account_sid", json_string(acct));
    json_object_set_new(o, "api_version", json_string("2010-04-01"));
    json_object_set_new(o, "call_sid", call && *call ? json_string(call) : json_null());
    json_object_set_new(o, "date_created", calljson_time(date));
    json_object_set_new(o, "date_updated", calljson_time(date));
    json_object_set_new(o, "error_code", json_string(code));
    json_object_set_new(o, "log", json_string(log_s));
    json_object_set_new(o, "message_date", calljson_time(date));
    json_object_set_new(o, "message_text", json_incref(json_object_get(row, "message_text")));
    json_object_set_new(o, "more_info", json_string(more));
    json_object_set_new(o, "request_method", json_incref(json_object_get(row, "request_method")));
    json_object_set_new(o, "request_url", json_incref(json_object_get(row, "request_url")));
    json_object_set_new(o, "sid", json_string(sid));
    json_object_set_new(o, "uri", json_string(uri));
    if (full) {
        json_object_set_new(o, "request_variables", json_incref(json_object_get(row, "request_variables")));
        json_object_set_new(o, "response_body", json_incref(json_object_get(row, "response_body")));
        json_object_set_new(o, "response_headers", json_incref(json_object_get(row, "response_headers")));
    }
    return o;
}

void rest_notifications_list(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    const char *call_sid = m->n > 1 ? m->cap[1] : NULL;
    store_call call = {0};
    store_conn *c = NULL;
    rest_paging pg;
    json_t *rows = NULL, *items = NULL;
    int64_t before = 0, last = 0;
    char base[192], next[32];

    if (!acct || !rest_paging_parse(r, &pg)) return;
    if (call_sid && !load_call(a, r, acct->sid, call_sid, &call)) return;
    if (pg.token && (strncmp(pg.token, "PA", 2) || (before = strtoll(pg.token + 2, NULL, 10)) <= 0)) {
        http_reply_error(r, TWERR_BAD_PARAM, 400, "PageToken is not valid for this list");
        goto out;
    }
    c = store_conn_acquire(a->store);
    rows = json_array();
    if (!c || !rows ||
        store_notification_list(c, acct->sid, call_sid, before,
                                pg.token ? 0 : (int64_t)pg.page * pg.page_size, pg.page_size + 1,
                                rows, &last) != STORE_OK) {
        http_reply_error(r, 20503, 503, NULL);
        goto out;
    }
    items = json_array();
    bool more = json_array_size(rows) > (size_t)pg.page_size;
    for (size_t i = 0; i < json_array_size(rows) && i < (size_t)pg.page_size; i++)
        json_array_append_new(items, notification_json(json_array_get(rows, i), false));
    if (more)
        snprintf(next, sizeof next, "PA%lld", (long long)json_integer_value(
                     json_object_get(json_array_get(rows, (size_t)pg.page_size - 1), "id")));
    if (call_sid)
        snprintf(base, sizeof base, API_PREFIX "/Accounts/%s/Calls/%s/Notifications.json", acct->sid, call_sid);
    else
        snprintf(base, sizeof base, API_PREFIX "/Accounts/%s/Notifications.json", acct->sid);
    calljson_page page = {
        .key = "notifications", .base_path = base, .filters = http_query(r), .page = pg.page,
        .page_size = pg.page_size, .page_token = pg.token, .next_token = more ? next : NULL,
    };
    http_reply_json(r, 200, calljson_list(&page, items));
out:
    json_decref(rows);
    store_conn_release(c);
    store_call_fini(&call);
}

void rest_notification_fetch(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    const char *sid = m->cap[m->n - 1];
    store_conn *c = NULL;
    json_t *row = NULL;
    store_status st = STORE_NOTFOUND;
    if (!acct) return;
    if (sid_valid(sid, "NO") && (c = store_conn_acquire(a->store)))
        st = store_notification_get(c, acct->sid, sid, &row);
    if (st == STORE_OK && m->n == 3 &&
        strcmp(json_string_value(json_object_get(row, "call_sid")), m->cap[1]) != 0)
        st = STORE_NOTFOUND;
    if (st == STORE_OK) http_reply_json(r, 200, notification_json(row, true));
    else http_reply_error(r, 20404, 404, "The requested notification was not found");
    json_decref(row);
    store_conn_release(c);
}
