/* engine_rig — see engine_rig.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "engine_rig.h"

#include <curl/curl.h>
#include <libxml/parser.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "base/timefmt.h"
#include "base/sid.h"
#include "conf/config.h"
#include "sim/sim.h"
#include "store/store.h"

#define KEVENT_PREFIX "/kaphila/events/"
#define RIG_MAX_BODY  (256 * 1024)   /* a request body the server keeps */

/* ================================================================ replies */

void ut_ereq_init(ut_ereq *q)
{
    memset(q, 0, sizeof *q);
    buf_init(&q->body, RIG_MAX_BODY);
    ut_waiter_init(&q->done);
}

void ut_ereq_fini(ut_ereq *q)
{
    buf_fini(&q->body);
    free(q->answer);
    ut_waiter_fini(&q->done);
}

static void ereq_record(ut_ereq *q, int status, char *answer)
{
    pthread_mutex_lock(&q->done.mu);
    free(q->answer);
    q->answer = answer;
    q->status = status;
    q->answers++;
    pthread_mutex_unlock(&q->done.mu);
    if (q->on_reply) q->on_reply(q, q->on_reply_arg);
    ut_waiter_add(&q->done, 1);
}

static void rep_bytes(void *req, int status, const char *ctype, const char *body, size_t len)
{
    (void)ctype;
    ereq_record(req, status, body ? strndup(body, len) : strdup(""));
}

static void rep_owned(void *req, int status, const char *ctype, char *body, size_t len)
{
    (void)ctype; (void)len;
    ereq_record(req, status, body ? body : strdup(""));
}

static void rep_json(void *req, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    ereq_record(req, status, s);
}

static void rep_error(void *req, int code, int status, const char *message,
                      const char *const *headers)
{
    (void)headers;
    json_t *j = json_pack("{s:i, s:s}", "code", code, "message", message ? message : "");
    rep_json(req, status, j);
}

static bool rep_file(void *req, const char *path, const char *range, const char *ctype)
{
    (void)req; (void)path; (void)range; (void)ctype;
    return false;
}

static const buf *rep_body(const void *req) { return &((const ut_ereq *)req)->body; }
static const char *rep_request_id(const void *req) { (void)req; return "unit"; }
static void rep_suspend(void *req) { (void)req; }

static const engine_reply_ops rep_ops = {
    .bytes = rep_bytes, .owned = rep_owned, .json = rep_json, .error = rep_error,
    .file = rep_file, .body = rep_body, .request_id = rep_request_id, .suspend = rep_suspend,
};

engine_reply ut_ereq_reply(ut_ereq *q) { return (engine_reply){.ops = &rep_ops, .req = q}; }

/* ================================================================ server */

typedef struct conn_ctx { buf body; } conn_ctx;

static enum MHD_Result respond(struct MHD_Connection *c, int status, const char *ctype,
                               const char *body)
{
    struct MHD_Response *res =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (ctype) MHD_add_response_header(res, "Content-Type", ctype);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, res);
    MHD_destroy_response(res);
    return rc;
}

/* A Kaphila event: handed to the engine like twigate's REST layer does,
 * and this connection's thread waits for the engine's answer. */
static enum MHD_Result kevent(ut_rig *r, struct MHD_Connection *c, const char *token,
                              const buf *body)
{
    json_t *ev = json_loadb(buf_str(body), body->len, 0, NULL);
    if (!json_is_object(ev) || !json_is_string(json_object_get(ev, "event"))) {
        json_decref(ev);
        return respond(c, 400, "application/json", "{\"success\":false}");
    }
    ut_ereq *q = malloc(sizeof *q);
    if (!q) { json_decref(ev); return MHD_NO; }
    ut_ereq_init(q);
    q->on_reply = r->kevent_probe;
    q->on_reply_arg = r->kevent_probe_arg;
    if (buf_append(&q->body, buf_str(body), body->len) != BUF_OK) {
        json_decref(ev);
        ev = NULL;
    }
    /* engine_kevent steals ev, also on false */
    if (!ev || !engine_kevent(r->a.engine, ut_ereq_reply(q), token, ev)) {
        ut_ereq_fini(q);
        free(q);
        return respond(c, 503, "application/json", "{\"success\":false}");
    }
    ut_waiter_add(&r->kev_in, 1);
    if (!ut_waiter_wait(&q->done, 1, UT_RIG_WAIT_MS))
        return respond(c, 503, "application/json", "{\"success\":false}");   /* q leaks: the engine holds it */
    enum MHD_Result rc = respond(c, q->status, "application/json", q->answer ? q->answer : "");
    ut_ereq_fini(q);
    free(q);
    return rc;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)method; (void)version;
    ut_rig *r = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) {
        if (!(cc = calloc(1, sizeof *cc))) return MHD_NO;
        buf_init(&cc->body, RIG_MAX_BODY);
        *con_cls = cc;
        return MHD_YES;
    }
    if (*upload_size) {
        if (cc->body.len + *upload_size <= RIG_MAX_BODY &&
            buf_append(&cc->body, upload, *upload_size) != BUF_OK)
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (!strncmp(url, KEVENT_PREFIX, sizeof KEVENT_PREFIX - 1))
        return kevent(r, c, url + sizeof KEVENT_PREFIX - 1, &cc->body);

    char twiml[sizeof r->hooks[0].twiml] = "";
    pthread_mutex_lock(&r->mu);
    if (r->n_seen < UT_RIG_MAX_SEEN) {
        ut_seen *s = &r->seen[r->n_seen++];
        snprintf(s->path, sizeof s->path, "%s", url);
        snprintf(s->body, sizeof s->body, "%s", buf_str(&cc->body));
    }
    for (int i = 0; i < r->n_hooks; i++)
        if (!strcmp(r->hooks[i].path, url)) memcpy(twiml, r->hooks[i].twiml, sizeof twiml);
    pthread_mutex_unlock(&r->mu);
    ut_waiter_add(&r->seen_w, 1);
    if (!*twiml) return respond(c, 404, "text/plain", "no hook");
    return respond(c, 200, "text/xml", twiml);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)c; (void)toe;
    conn_ctx *cc = *con_cls;
    if (!cc) return;
    buf_fini(&cc->body);
    free(cc);
    *con_cls = NULL;
}

/* ================================================================ set-up */

static void set(config *cfg, const char *key, const char *value)
{
    char err[256];
    if (config_set(cfg, key, value, err, sizeof err) != 0) fail_msg("%s: %s", key, err);
}

void ut_rig_start(ut_rig *r, const char *const *sets)
{
    char err[512], db[320];
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    sim_config sc;
    const char *keys[] = {UT_RIG_KEY};

    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    ut_waiter_init(&r->seen_w);
    ut_waiter_init(&r->kev_in);
    pthread_once(&once, (void (*)(void))xmlInitParser);
    assert_int_equal(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    ut_tmpdir(r->dir, sizeof r->dir, "twigate-rig");
    snprintf(db, sizeof db, "%s/twigate.db", r->dir);

    r->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, handler, r, MHD_OPTION_NOTIFY_COMPLETED, completed, r,
                            MHD_OPTION_END);
    assert_non_null(r->d);
    r->port = MHD_get_daemon_info(r->d, MHD_DAEMON_INFO_BIND_PORT)->port;

    config *cfg = config_create();
    assert_non_null(cfg);
    set(cfg, "account.unit.sid", UT_RIG_ACCOUNT);
    set(cfg, "account.unit.auth_token", UT_RIG_TOKEN);
    set(cfg, "account.unit.kaphila_key", UT_RIG_KEY);
    set(cfg, "db.path", db);
    set(cfg, "kaphila.url", "sim");
    set(cfg, "sim.fast", "true");
    set(cfg, "webhook.allow", "127.0.0.0/8");
    set(cfg, "log.level", "error");
    log_setup(LOG_ERROR, false);   /* main applies log.level; the rig has no main */
    for (int i = 0; sets && sets[i]; i++) {
        char key[128];
        const char *eq = strchr(sets[i], '=');
        assert_non_null(eq);
        snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
        set(cfg, key, eq + 1);
    }
    if (config_finish(cfg, err, sizeof err) || config_bind_port(cfg, r->port, err, sizeof err))
        fail_msg("config: %s", err);
    atomic_store(&r->a.cfg, cfg);
    r->a.started_ms = timefmt_now_ms();
    r->a.metrics = metrics_create();
    assert_non_null(r->a.metrics);
    r->a.store = store_open(db, err, sizeof err);
    if (!r->a.store) fail_msg("store: %s", err);

    sim_config_defaults(&sc);
    sc.api_keys = keys;
    sc.n_api_keys = 1;
    sc.fast = true;
    sc.port = 0;
    sc.rate_limit = cfg->sim_rate_limit;   /* sim.* as main gives them (a test's sets) */
    sc.rate_window_ms = cfg->sim_rate_window_ms;
    sc.credits = cfg->sim_credits;
    r->a.sim = sim_create(&sc, err, sizeof err);
    if (!r->a.sim) fail_msg("sim: %s", err);
    snprintf(r->a.kaphila_url, sizeof r->a.kaphila_url, "http://127.0.0.1:%d", sim_port(r->a.sim));
    snprintf(r->a.public_url, sizeof r->a.public_url, "http://127.0.0.1:%d", r->port);

    r->a.engine = engine_create(&r->a, err, sizeof err);
    if (!r->a.engine) fail_msg("engine: %s", err);
    assert_int_equal(engine_start(r->a.engine), 0);
}

void ut_rig_stop(ut_rig *r)
{
    /* The simulator first: no more events for the engine to take. */
    sim_destroy(r->a.sim);
    engine_stop(r->a.engine, 0);
    engine_destroy(r->a.engine);
    MHD_stop_daemon(r->d);
    store_close(r->a.store);
    metrics_destroy(r->a.metrics);
    config_destroy((config *)app_config(&r->a));
    ut_rmtree(r->dir);
    ut_waiter_fini(&r->seen_w);
    ut_waiter_fini(&r->kev_in);
    pthread_mutex_destroy(&r->mu);
    curl_global_cleanup();
}

void ut_rig_restart_engine(ut_rig *r, void (*while_down)(ut_rig *r))
{
    char err[512];
    engine_stop(r->a.engine, 0);
    engine_destroy(r->a.engine);
    r->a.engine = NULL;
    if (while_down) while_down(r);
    r->a.engine = engine_create(&r->a, err, sizeof err);
    if (!r->a.engine) fail_msg("engine: %s", err);
    assert_int_equal(engine_start(r->a.engine), 0);
}

void ut_rig_db_path(const ut_rig *r, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/twigate.db", r->dir);
}

void ut_rig_hook(ut_rig *r, const char *path, const char *twiml)
{
    pthread_mutex_lock(&r->mu);
    assert_true(r->n_hooks < UT_RIG_MAX_HOOKS);
    ut_hook *h = &r->hooks[r->n_hooks++];
    snprintf(h->path, sizeof h->path, "%s", path);
    snprintf(h->twiml, sizeof h->twiml, "%s", twiml);
    pthread_mutex_unlock(&r->mu);
}

void ut_rig_url(const ut_rig *r, char *out, size_t outlen)
{
    snprintf(out, outlen, "http://127.0.0.1:%d", r->port);
}

void ut_rig_call(store_call *call, const char *to, json_t *params)
{
    memset(call, 0, sizeof *call);
    assert_true(sid_new("CA", call->sid) && sid_token(call->token));
    snprintf(call->account_sid, sizeof call->account_sid, "%s", UT_RIG_ACCOUNT);
    snprintf(call->to, sizeof call->to, "%s", to);
    snprintf(call->from, sizeof call->from, "+15005550006");
    snprintf(call->status, sizeof call->status, "queued");
    snprintf(call->direction, sizeof call->direction, "outbound-api");
    call->date_created = call->date_updated = timefmt_now_ms();
    call->duration = -1;
    if (!json_object_get(params, "time_limit"))
        json_object_set_new(params, "time_limit", json_integer(14400));
    if (!json_object_get(params, "timeout")) json_object_set_new(params, "timeout", json_integer(60));
    call->params = params;
}

static void nap(void)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

void ut_rig_wait_row(ut_rig *r, const char *call_sid, const char *st)
{
    int64_t deadline = ut_now_ms() + UT_RIG_WAIT_MS;
    store_conn *c = store_conn_acquire(r->a.store);
    assert_non_null(c);
    for (;;) {
        store_call row;
        bool done = false;
        if (store_call_get_by_sid(c, call_sid, &row) == STORE_OK) {
            done = !strcmp(row.status, st);
            store_call_fini(&row);
        }
        if (done) break;
        if (ut_now_ms() > deadline) fail_msg("call %s never reached %s in the store", call_sid, st);
        nap();
    }
    store_conn_release(c);
}

/* ================================================================ sim control */

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    return buf_append(arg, p, size * n) == BUF_OK ? size * n : 0;
}

json_t *ut_rig_sim(ut_rig *r, const char *method, const char *path, const char *body, int *status)
{
    char url[512];
    buf out;
    long code = 0;
    json_t *j = NULL;
    CURL *h = curl_easy_init();
    assert_non_null(h);
    buf_init(&out, RIG_MAX_BODY * 4);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", sim_port(r->a.sim), path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    if (curl_easy_perform(h) == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        j = json_loadb(buf_str(&out), out.len, 0, NULL);
    }
    if (status) *status = (int)code;
    curl_easy_cleanup(h);
    buf_fini(&out);
    return j;
}

json_t *ut_rig_sim_wait_status(ut_rig *r, const char *call_sid, const char *st)
{
    char path[128];
    int64_t deadline = ut_now_ms() + UT_RIG_WAIT_MS;
    snprintf(path, sizeof path, "/sim/calls/%s", call_sid);
    for (;;) {
        json_t *t = ut_rig_sim(r, "GET", path, NULL, NULL);
        const char *s = json_string_value(json_object_get(t, "status"));
        if (s && !strcmp(s, st)) return t;
        json_decref(t);
        if (ut_now_ms() > deadline) fail_msg("call %s never reached %s in the simulator", call_sid, st);
        nap();
    }
}
