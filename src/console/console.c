/* console.c — the console's routes: assets, login, session and CSRF, the
 * REST handlers mounted under /console/api, and the simulator proxy's
 * front half (ownership check, queueing). The stream and the console thread
 * are console_stream.c; the map is console.h. */
#include "console/console.h"
#include "console_int.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "console_assets.h"
#include "base/errors.h"
#include "base/log.h"
#include "engine/recordings.h"
#include "http/recordings_rest.h"
#include "http/rest.h"
#include "base/sid.h"
#include "base/signature.h"
#include "store/store.h"

#define CSP "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " \
            "img-src 'self' data:; media-src 'self'; frame-ancestors 'none'; "              \
            "base-uri 'none'; form-action 'self'"
#define SEC_HEADERS                                                                    \
    "Content-Security-Policy", CSP, "X-Content-Type-Options", "nosniff",              \
    "X-Frame-Options", "DENY", "Referrer-Policy", "no-referrer"

static const char *const www_auth[] = {"WWW-Authenticate", "Basic realm=\"twigate console\"",
                                       SEC_HEADERS, NULL};
const char *const console_no_store[] = {"Cache-Control", "no-store", SEC_HEADERS, NULL};

/* The account the Basic user names: an AC SID itself, or the account whose
 * API key it is. rest_auth then checks the secret (and Kaphila-key accounts). */
const config_account *console_auth(app *a, http_req *r)
{
    const char *user = NULL, *pass = NULL;
    if (!http_basic_auth(r, &user, &pass)) {
        http_reply_error_h(r, 20003, 401, "Authenticate", www_auth);
        return NULL;
    }
    const config *cfg = app_config(a);
    const char *sid = user;
    for (size_t i = 0; !strncmp(user, "SK", 2) && i < cfg->n_accounts; i++)
        if (cfg->accounts[i].api_key_sid && !strcmp(cfg->accounts[i].api_key_sid, user))
            sid = cfg->accounts[i].sid;
    return rest_auth(a, r, sid);
}

/* hex HMAC-SHA256(key, account SID) */
static bool csrf_token(const console *c, const char *account_sid, char out[65])
{
    unsigned char mac[32];
    size_t n = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, c->csrf_key, sizeof c->csrf_key,
                   (const unsigned char *)account_sid, strlen(account_sid), mac, sizeof mac, &n) ||
        n != sizeof mac)
        return false;
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
    return true;
}

/* The token for account_sid in X-Twigate-CSRF, else a 403 answered here. */
bool console_csrf_ok(app *a, http_req *r, const char *account_sid)
{
    char want[65];
    const char *got = http_header(r, "X-Twigate-CSRF");
    if (got && csrf_token(a->console, account_sid, want) && strlen(got) == 64 &&
        sid_equal_ct(got, want))
        return true;
    log_warn("console", "refused %s %s: missing or wrong CSRF token", http_method(r), http_path(r));
    http_reply_error(r, 403, 403, "Missing or invalid X-Twigate-CSRF token (GET /console/api/session)");
    return false;
}

static const console_asset *asset(const char *name)
{
    for (const console_asset *x = console_assets; x->name; x++)
        if (!strcmp(x->name, name)) return x;
    return NULL;
}

static void send_asset(http_req *r, const console_asset *x)
{
    const char *inm = http_header(r, "If-None-Match");
    const char *h[] = {"ETag", x->etag, "Cache-Control", "no-cache", SEC_HEADERS, NULL};
    if (inm && !strcmp(inm, x->etag)) {
        http_reply(r, 304, NULL, NULL, 0, h);
        return;
    }
    http_reply(r, 200, x->type, (const char *)x->data, x->len, h);
}

static void redirect_root(void *ctx, http_req *r, const http_match *m)
{
    (void)ctx, (void)m;
    const char *h[] = {"Location", "/console/", SEC_HEADERS, NULL};
    http_reply(r, 301, "text/plain", "/console/\n", 10, h);
}

/* The page asks for the login; the other assets are public (the same bytes
 * for everyone, shipped in the binary, no data in them), which lets the
 * login prompt come before anything else and keeps caching simple. */
static void index_page(void *ctx, http_req *r, const http_match *m)
{
    (void)m;
    const console_asset *x = asset("index.html");
    if (!console_auth(ctx, r)) return;
    if (x) send_asset(r, x);
    else http_reply_error(r, 20404, 404, NULL);
}

static void static_asset(void *ctx, http_req *r, const http_match *m)
{
    (void)ctx;
    const console_asset *x = strcmp(m->cap[0], "index.html") ? asset(m->cap[0]) : NULL;
    if (x) send_asset(r, x);
    else http_reply_error(r, 20404, 404, NULL);
}

static void session(void *ctx, http_req *r, const http_match *m)
{
    (void)m;
    app *a = ctx;
    const char *user = NULL, *pass = NULL;
    char token[65];
    const config_account *acct = console_auth(a, r);
    if (!acct) return;
    if (!csrf_token(a->console, acct->sid, token) || !http_basic_auth(r, &user, &pass)) {
        http_reply_error(r, 20500, 500, NULL);
        return;
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "account_sid", acct->sid,
                          "friendly_name", acct->friendly_name ? acct->friendly_name : acct->name,
                          "user", user, "csrf_token", token, "simulator", a->sim != NULL,
                          "api_base", "/console/api/2010-04-01/Accounts/");
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        http_reply_error(r, 20500, 500, NULL);
        return;
    }
    http_reply_owned(r, 200, "application/json", s, strlen(s), console_no_store);
}

/* State-changing REST handlers behind the CSRF check, logged. */
static void guarded(void *ctx, http_req *r, const http_match *m, http_handler fn, const char *what)
{
    const char *user = NULL, *pass = NULL;
    if (!console_csrf_ok(ctx, r, m->cap[0])) return;
    if (!http_basic_auth(r, &user, &pass)) user = "?";
    log_info("console", "%s %s by %s", what, m->n > 1 ? m->cap[1] : m->cap[0], user);
    fn(ctx, r, m);
}

static void call_create(void *ctx, http_req *r, const http_match *m)
{
    guarded(ctx, r, m, rest_calls_create, "test call for");
}

static void call_update(void *ctx, http_req *r, const http_match *m)
{
    guarded(ctx, r, m, rest_call_update, "call update");
}

/* /console/api/sim/{CallSid}[/digits|/hangup]: checked here, sent by the
 * console thread. */
static void sim_proxy(void *ctx, http_req *r, const http_match *m, const char *action)
{
    app *a = ctx;
    const char *user = NULL, *pass = NULL;
    const config_account *acct = console_auth(a, r);
    store_call call = {0};
    store_status st = STORE_ERROR;
    char digits[CONSOLE_MAX_DIGITS + 1] = "";

    if (!acct) return;
    if (action && !console_csrf_ok(a, r, acct->sid)) return;
    if (!a->sim) {
        http_reply_error(r, 21220, 409, "The far end is only available with kaphila.url = sim");
        return;
    }
    if (action && !strcmp(action, "digits")) {
        form f;
        if (!rest_body_form(a, r, &f)) return;
        const char *d = form_get(&f, "Digits");
        bool ok = d && *d && strlen(d) <= CONSOLE_MAX_DIGITS &&
                  strspn(d, "0123456789*#ABCD") == strlen(d);
        if (ok) snprintf(digits, sizeof digits, "%s", d);
        form_fini(&f);
        if (!ok) {
            http_reply_error(r, 400, 400, "Digits must be 1 to 32 of 0-9 * # A-D");
            return;
        }
    }
    if (sid_valid(m->cap[0], "CA")) {
        store_conn *c = store_conn_acquire(a->store);
        if (c) {
            st = store_call_get(c, acct->sid, m->cap[0], &call);
            store_call_fini(&call);
            store_conn_release(c);
        }
    } else {
        st = STORE_NOTFOUND;
    }
    if (st != STORE_OK) {
        if (st == STORE_NOTFOUND) http_reply_error(r, 20404, 404, NULL);
        else http_reply_error(r, 20500, 500, NULL);
        return;
    }
    if (action) {
        if (!http_basic_auth(r, &user, &pass)) user = "?";
        log_info("console", "far end %s%s%s on %s by %s", action, *digits ? " " : "", digits,
                 m->cap[0], user);
    }
    console_job_submit(a->console, r, m->cap[0], action, digits, NULL);
}

static void sim_transcript(void *ctx, http_req *r, const http_match *m) { sim_proxy(ctx, r, m, NULL); }
static void sim_digits(void *ctx, http_req *r, const http_match *m) { sim_proxy(ctx, r, m, "digits"); }
static void sim_hangup(void *ctx, http_req *r, const http_match *m) { sim_proxy(ctx, r, m, "hangup"); }

/* The credits panel: Kaphila's GET /api/me with the account's own key,
 * asked by the console thread (Kaphila may be slow; an HTTP thread never
 * waits for it). */
static void kaphila_me(void *ctx, http_req *r, const http_match *m)
{
    (void)m;
    app *a = ctx;
    const config_account *acct = console_auth(a, r);
    if (!acct) return;
    if (!acct->kaphila_key || !*acct->kaphila_key) {
        http_reply_error(r, 20404, 404, "This account has no Kaphila key");
        return;
    }
    console_job_submit(a->console, r, "", "me", "", acct->kaphila_key);
}

static void stream(void *ctx, http_req *r, const http_match *m)
{
    (void)m;
    app *a = ctx;
    const config_account *acct = console_auth(a, r);
    if (acct) console_stream_open(a->console, r, acct->sid);
}

/* X-Twilio-Signature of each webhook in the first CONSOLE_SIGNED_EVENTS of
 * a call's request log (the page shows that many), recomputed from what the
 * log holds: the URL, the method and the parameters (signature.h). Kaphila
 * requests are not signed: null. Signs only what twigate sent, so it is no
 * signing oracle. */
static void signatures(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = console_auth(a, r);
    store_conn *c = NULL;
    json_t *items = NULL, *out = NULL;
    int64_t last = 0;
    size_t klen = strlen(a->kaphila_url);

    if (!acct) return;
    items = json_array();
    out = json_array();
    if (!items || !out || !(c = store_conn_acquire(a->store)) ||
        store_event_list(c, acct->sid, m->cap[0], 0, 0, CONSOLE_SIGNED_EVENTS, items, &last) !=
            STORE_OK) {
        http_reply_error(r, 20503, 503, NULL);
        goto out;
    }
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *rq = json_object_get(json_array_get(items, i), "request");
        const char *url = json_string_value(json_object_get(rq, "url"));
        const char *method = json_string_value(json_object_get(rq, "method"));
        json_t *params = json_object_get(rq, "parameters");
        char sig[SIGNATURE_SIZE];
        form f;
        bool ok = url && method && !(klen && !strncmp(url, a->kaphila_url, klen)) &&
                  json_object_get(params, "CallSid");
        form_init(&f);
        if (ok && !strcmp(method, "POST")) {
            const char *k;
            json_t *v;
            json_object_foreach(params, k, v)
                if (json_is_string(v) && form_add(&f, k, json_string_value(v)) != FORM_OK) ok = false;
        }
        ok = ok && signature_compute(acct->auth_token, url, strcmp(method, "POST") ? NULL : &f, sig);
        form_fini(&f);
        json_array_append_new(out, ok ? json_string(sig) : json_null());
    }
    http_reply_json(r, 200, json_pack("{s:o}", "signatures", out));
    out = NULL;
out:
    json_decref(out);
    json_decref(items);
    store_conn_release(c);
}

#define API "/console/api/2010-04-01/Accounts/*"
static const http_route routes[] = {
    {"GET",  "/console", redirect_root, "console"},
    {"GET",  "/console/", index_page, "console"},
    {"GET",  "/console/api/session", session, "console_session"},
    {"GET",  "/console/api/stream", stream, "console_stream"},
    {"GET",  "/console/api/calls/*/signatures", signatures, "console_api"},
    {"GET",  "/console/api/kaphila/me", kaphila_me, "console_kaphila"},
    {"GET",  "/console/api/queue", console_queue, "console_api"},
    {"GET",  "/console/api/sim/*", sim_transcript, "console_sim"},
    {"POST", "/console/api/sim/*/digits", sim_digits, "console_sim"},
    {"POST", "/console/api/sim/*/hangup", sim_hangup, "console_sim"},
    {"GET",  API "/Calls.json", rest_calls_list, "console_api"},
    {"POST", API "/Calls.json", call_create, "console_api"},
    {"GET",  API "/Calls/*.json", rest_call_fetch, "console_api"},
    {"POST", API "/Calls/*.json", call_update, "console_api"},
    {"GET",  API "/Calls/*/Events.json", rest_call_events, "console_api"},
    {"GET",  API "/Calls/*/Notifications.json", rest_notifications_list, "console_api"},
    {"GET",  API "/Calls/*/Recordings.json", rec_call_list, "console_api"},
    {"GET",  API "/Notifications.json", rest_notifications_list, "console_api"},
    {"GET",  API "/Recordings/*", rec_media, "console_api"},
    {"GET",  "/console/*", static_asset, "console_asset"},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

const http_route *console_routes(console *c, const http_route *rest)
{
    size_t n = 0;
    while (rest[n].pattern) n++;
    free(c->routes);
    c->routes = calloc(N_ROUTES + n + 1, sizeof *c->routes);
    if (!c->routes) return rest;
    memcpy(c->routes, routes, sizeof routes);
    memcpy(c->routes + N_ROUTES, rest, (n + 1) * sizeof *rest);
    return c->routes;
}

bool console_key_init(console *c)
{
    return RAND_bytes(c->csrf_key, sizeof c->csrf_key) == 1;
}
