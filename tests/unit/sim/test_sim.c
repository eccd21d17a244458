/* Unit tests for the Kaphila simulator: the sim runs in-process (fast mode,
 * port 0), a libmicrohttpd server in this file receives its events, and
 * libcurl drives its API and control API. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sim/sim.h"
#include "../support/support.h"

#define KEY1 "ak_live_test_one"
#define KEY2 "ak_live_test_two"
#define WAIT_MS 3000
#define MAX_EVENTS 4096

/* ================================================================ receiver */

typedef struct rx_event {
    char    call_id[40];
    char    name[40];
    char    ua[64];
    json_t *body;
    int64_t at;
} rx_event;

typedef struct receiver {
    struct MHD_Daemon *d;
    int                port;
    pthread_mutex_t    mu;
    pthread_cond_t     cv;
    rx_event           ev[MAX_EVENTS];
    size_t             n;
    int                delay_ms;   /* slows each answer, to test ordering */
} receiver;

typedef struct rx_conn {
    char  *data;
    size_t len;
} rx_conn;

static enum MHD_Result rx_handler(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)url; (void)method; (void)version;
    receiver *rx = cls;
    rx_conn *rc = *con_cls;
    if (!rc) {
        *con_cls = calloc(1, sizeof(rx_conn));
        return MHD_YES;
    }
    if (*upload_size) {
        rc->data = realloc(rc->data, rc->len + *upload_size + 1);
        memcpy(rc->data + rc->len, upload, *upload_size);
        rc->len += *upload_size;
        rc->data[rc->len] = 0;
        *upload_size = 0;
        return MHD_YES;
    }
    json_t *body = json_loadb(rc->data ? rc->data : "", rc->len, 0, NULL);
    const char *ua = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "User-Agent");
    if (rx->delay_ms)
        usleep((useconds_t)rx->delay_ms * 1000);
    pthread_mutex_lock(&rx->mu);
    if (body && rx->n < MAX_EVENTS) {
        rx_event *e = &rx->ev[rx->n++];
        const char *cid = json_string_value(json_object_get(body, "callId"));
        const char *name = json_string_value(json_object_get(body, "event"));
        snprintf(e->call_id, sizeof e->call_id, "%s", cid ? cid : "");
        snprintf(e->name, sizeof e->name, "%s", name ? name : "");
        snprintf(e->ua, sizeof e->ua, "%s", ua ? ua : "");
        e->body = body;
        e->at = ut_now_ms();
        body = NULL;
    }
    pthread_cond_broadcast(&rx->cv);
    pthread_mutex_unlock(&rx->mu);
    json_decref(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(2, (void *)"ok",
                                                             MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static void rx_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)c; (void)toe;
    rx_conn *rc = *con_cls;
    if (rc) {
        free(rc->data);
        free(rc);
    }
    *con_cls = NULL;
}

/* Index of the first event (from index from) of call_id named name, waiting
 * up to timeout_ms; -1 when it never came. */
static int rx_wait(receiver *rx, const char *call_id, const char *name, size_t from, int timeout_ms)
{
    int64_t deadline = ut_now_ms() + timeout_ms;
    pthread_mutex_lock(&rx->mu);
    for (;;) {
        for (size_t i = from; i < rx->n; i++) {
            if (strcmp(rx->ev[i].call_id, call_id) == 0 && strcmp(rx->ev[i].name, name) == 0) {
                pthread_mutex_unlock(&rx->mu);
                return (int)i;
            }
        }
        int64_t left = deadline - ut_now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(left > 20 ? 20 : left) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&rx->cv, &rx->mu, &ts);
    }
    pthread_mutex_unlock(&rx->mu);
    return -1;
}

/* Names of call_id's events so far, comma-joined, into out. */
static void rx_names(receiver *rx, const char *call_id, char *out, size_t n)
{
    out[0] = 0;
    size_t len = 0;
    pthread_mutex_lock(&rx->mu);
    for (size_t i = 0; i < rx->n; i++) {
        if (strcmp(rx->ev[i].call_id, call_id) != 0)
            continue;
        len += (size_t)snprintf(out + len, n - len, "%s%s", len ? "," : "", rx->ev[i].name);
        if (len >= n)
            break;
    }
    pthread_mutex_unlock(&rx->mu);
}

static json_t *rx_body(receiver *rx, int i)
{
    pthread_mutex_lock(&rx->mu);
    json_t *b = rx->ev[i].body;
    pthread_mutex_unlock(&rx->mu);
    return b;
}

/* ================================================================ fixture */

typedef struct fixture {
    sim     *s;
    receiver rx;
    char     base[64];
    char     tmpdir[128];   /* TMPDIR while the sim runs: it must stay empty */
} fixture;

static fixture *F;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->rx.mu, NULL);
    pthread_cond_init(&f->rx.cv, NULL);
    f->rx.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                               0, NULL, NULL, rx_handler, &f->rx,
                               MHD_OPTION_NOTIFY_COMPLETED, rx_done, NULL, MHD_OPTION_END);
    if (!f->rx.d)
        return -1;
    f->rx.port = MHD_get_daemon_info(f->rx.d, MHD_DAEMON_INFO_BIND_PORT)->port;

    /* Without recordings_dir the sim keeps recordings in memory: nothing
     * may appear in TMPDIR (or anywhere). */
    ut_tmpdir(f->tmpdir, sizeof f->tmpdir, "test-sim");
    if (setenv("TMPDIR", f->tmpdir, 1) != 0)
        return -1;
    static const char *const keys[] = {KEY1, KEY2};
    sim_config cfg;
    sim_config_defaults(&cfg);
    cfg.fast = true;
    cfg.api_keys = keys;
    cfg.n_api_keys = 2;
    char err[256];
    f->s = sim_create(&cfg, err, sizeof err);
    if (!f->s) {
        fprintf(stderr, "sim_create: %s\n", err);
        return -1;
    }
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", sim_port(f->s));
    F = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sim_destroy(f->s);
    MHD_stop_daemon(f->rx.d);
    for (size_t i = 0; i < f->rx.n; i++)
        json_decref(f->rx.ev[i].body);
    ut_rmtree(f->tmpdir);
    pthread_mutex_destroy(&f->rx.mu);
    pthread_cond_destroy(&f->rx.cv);
    free(f);
    return 0;
}

/* ================================================================ client */

typedef struct resp {
    long   status;
    char  *body;
    size_t len;
    char   content_range[256];
    char   content_type[256];
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    r->body = realloc(r->body, r->len + sz * n + 1);
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = 0;
    return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    size_t len = sz * n;
    char line[256];
    size_t c = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, p, c);
    line[c] = 0;
    line[strcspn(line, "\r\n")] = 0;
    if (strncasecmp(line, "Content-Range: ", 15) == 0)
        snprintf(r->content_range, sizeof r->content_range, "%s", line + 15);
    if (strncasecmp(line, "Content-Type: ", 14) == 0)
        snprintf(r->content_type, sizeof r->content_type, "%s", line + 14);
    return len;
}

/* One blocking request to base+path. Extra header may be NULL. */
static resp http(const char *base, const char *method, const char *path, const char *key,
                 const char *body, const char *extra_header)
{
    resp r = {0};
    char url[512], auth[128];
    snprintf(url, sizeof url, "%s%s", base, path);
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, auth);
    }
    if (extra_header)
        h = curl_slist_append(h, extra_header);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(e);
    assert_int_equal(rc, CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return r;
}

/* JSON request against the fixture's sim; returns the parsed answer. */
static json_t *api(const char *method, const char *path, const char *key, const char *body,
                   long *status)
{
    resp r = http(F->base, method, path, key, body, NULL);
    *status = r.status;
    json_t *j = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
    free(r.body);
    assert_non_null(j);
    return j;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Starts a call to number with events to the receiver; returns its callId
 * (heap). sid may be NULL. */
static char *make_call(const char *number, bool amd, const char *sid)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"number\":\"%s\",\"webhookUrl\":\"http://127.0.0.1:%d/ev?CallSid=%s&t=x\","
             "\"callerId\":\"15550001111\",\"useAmd\":%s}",
             number, F->rx.port, sid ? sid : "", amd ? "true" : "false");
    long st;
    json_t *j = api("POST", "/makecall", KEY1, body, &st);
    assert_int_equal(st, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_string_equal(jstr(j, "status"), "ringing");
    char *id = strdup(jstr(j, "callId"));
    json_decref(j);
    return id;
}

static char *answered_call(void)
{
    char *id = make_call("15557770000", false, NULL);
    assert_true(rx_wait(&F->rx, id, "recording.started", 0, WAIT_MS) >= 0);
    return id;
}

static void post_expect(const char *path, const char *body, long want)
{
    long st;
    json_t *j = api("POST", path, KEY1, body, &st);
    if (st != want)
        fprintf(stderr, "%s %s → %ld %s\n", path, body, st, json_dumps(j, 0));
    assert_int_equal(st, want);
    json_decref(j);
}

/* The recording of a call of `seconds` as the docs describe it, computed
 * here independently of the sim: 8 kHz 16-bit mono PCM, a 400 Hz triangle
 * wave of peak 8000 (20 samples per period). Returns its size. */
#define WAV_MAX (44 + 60 * 16000)
static size_t expected_wav(int seconds, unsigned char *out)
{
    uint32_t data = (uint32_t)seconds * 16000;
    static const unsigned char fmt[16] = {1, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x80, 0x3e, 0, 0, 2, 0,
                                          16, 0};
    uint32_t riff = 36 + data;
    memcpy(out, "RIFF", 4);
    for (int i = 0; i < 4; i++)
        out[4 + i] = (unsigned char)(riff >> (8 * i));
    memcpy(out + 8, "WAVEfmt \x10\0\0\0", 12);
    memcpy(out + 20, fmt, 16);
    memcpy(out + 36, "data", 4);
    for (int i = 0; i < 4; i++)
        out[40 + i] = (unsigned char)(data >> (8 * i));
    for (uint32_t k = 0; k < data / 2; k++) {
        int ph = (int)(k % 20), v = ph < 10 ? ph : 20 - ph;
        int16_t sample = (int16_t)((v * 2 - 10) * 800);
        out[44 + 2 * k] = (unsigned char)((uint16_t)sample & 0xff);
        out[45 + 2 * k] = (unsigned char)((uint16_t)sample >> 8);
    }
    return 44 + data;
}

/* Entries in dir, "." and ".." aside. */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* ================================================================ tests */

static void test_auth_and_health(void **state)
{
    (void)state;
    long st;
    json_t *j = api("POST", "/makecall", NULL, "{\"number\":\"1\"}", &st);
    assert_int_equal(st, 401);
    assert_true(json_is_false(json_object_get(j, "success")));
    assert_non_null(jstr(j, "error"));
    json_decref(j);
    j = api("GET", "/calls", "wrong-key", NULL, &st);
    assert_int_equal(st, 401);
    json_decref(j);
    j = api("GET", "/health", NULL, NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(j, "status"), "healthy");
    assert_true(json_is_true(json_object_get(json_object_get(j, "features"), "recording")));
    json_decref(j);
    j = api("GET", "/api/me", KEY1, NULL, &st);
    assert_int_equal(st, 200);
    assert_true(json_is_object(json_object_get(j, "apiKey")));
    json_decref(j);
    /* bad JSON and missing fields */
    j = api("POST", "/makecall", KEY1, "{nope", &st);
    assert_int_equal(st, 400);
    json_decref(j);
    j = api("POST", "/makecall", KEY1, "{\"number\":\"+1555\"}", &st);
    assert_int_equal(st, 400);
    json_decref(j);
    j = api("POST", "/voice", KEY1, "{\"callId\":\"1.1\",\"text\":\"x\"}", &st);
    assert_int_equal(st, 404);
    json_decref(j);
}

static void test_call_lifecycle_in_order(void **state)
{
    (void)state;
    const char *sid = "CA0123456789abcdef0123456789abcdef";
    char *id = make_call("15551234567", true, sid);
    int i = rx_wait(&F->rx, id, "recording.started", 0, WAIT_MS);
    assert_true(i >= 0);
    int a = rx_wait(&F->rx, id, "call.answered", 0, 0);
    json_t *ans = rx_body(&F->rx, a);
    json_t *amd = json_object_get(ans, "amd");
    assert_string_equal(jstr(amd, "status"), "HUMAN");
    assert_string_equal(jstr(ans, "from"), "15550001111");
    assert_string_equal(jstr(ans, "to"), "15551234567");
    /* ISO 8601 UTC with milliseconds */
    const char *ts = jstr(ans, "timestamp");
    assert_int_equal(strlen(ts), 24);
    assert_true(ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');
    assert_string_equal(F->rx.ev[a].ua, "Kaphila-API-API/2.0");

    /* GET /calls/:id while live; control API finds it by CallSid */
    long st;
    json_t *j = api("GET", "/sim/calls/" "CA0123456789abcdef0123456789abcdef", NULL, NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(j, "callId"), id);
    assert_string_equal(jstr(j, "callSid"), sid);
    json_decref(j);

    char body[128];
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    post_expect("/hangup", body, 200);
    int e = rx_wait(&F->rx, id, "call.ended", 0, WAIT_MS);
    assert_true(e >= 0);
    json_t *ended = rx_body(&F->rx, e);
    assert_string_equal(jstr(ended, "status"), "completed");
    assert_string_equal(jstr(ended, "endReason"), "api_hangup");
    assert_string_equal(jstr(ended, "hangupCause"), "16");
    assert_true(json_is_true(json_object_get(ended, "wasAnswered")));
    assert_true(json_is_integer(json_object_get(ended, "callDuration")));
    assert_true(json_is_false(json_object_get(json_object_get(ended, "recording"), "active")));
    assert_true(rx_wait(&F->rx, id, "recording.completed", 0, WAIT_MS) > e);

    char names[512];
    rx_names(&F->rx, id, names, sizeof names);
    assert_string_equal(names, "call.initiated,call.answered,recording.started,call.ended,"
                               "recording.completed");
    /* a second hangup: the call already ended */
    post_expect("/hangup", body, 404);
    free(id);
}

static void check_outcome(const char *number, const char *status, const char *cause)
{
    char *id = make_call(number, false, NULL);
    int e = rx_wait(&F->rx, id, "call.ended", 0, WAIT_MS);
    assert_true(e >= 0);
    json_t *b = rx_body(&F->rx, e);
    assert_string_equal(jstr(b, "status"), status);
    assert_string_equal(jstr(b, "hangupCause"), cause);
    assert_true(json_is_false(json_object_get(b, "wasAnswered")));
    assert_int_equal(rx_wait(&F->rx, id, "call.answered", 0, 0), -1);
    assert_true(rx_wait(&F->rx, id, "call.initiated", 0, 0) < e);
    free(id);
}

static void test_outcomes_by_suffix(void **state)
{
    (void)state;
    check_outcome("15550000001", "busy", "17");
    check_outcome("15550000002", "no-answer", "19");
    check_outcome("15550000003", "failed", "1");
    char *id = make_call("15550000004", true, NULL);
    int a = rx_wait(&F->rx, id, "call.answered", 0, WAIT_MS);
    assert_true(a >= 0);
    assert_string_equal(jstr(json_object_get(rx_body(&F->rx, a), "amd"), "status"), "MACHINE");
    /* no AMD requested: no amd object */
    char *id2 = make_call("15550000005", false, NULL);
    a = rx_wait(&F->rx, id2, "call.answered", 0, WAIT_MS);
    assert_true(a >= 0);
    assert_null(json_object_get(rx_body(&F->rx, a), "amd"));
    /* the far end hangs up */
    long st;
    char path[128];
    snprintf(path, sizeof path, "/sim/calls/%s/hangup", id);
    json_decref(api("POST", path, NULL, NULL, &st));
    assert_int_equal(st, 200);
    int e = rx_wait(&F->rx, id, "call.ended", 0, WAIT_MS);
    assert_true(e >= 0);
    assert_string_equal(jstr(rx_body(&F->rx, e), "endReason"), "normal_hangup");
    assert_true(rx_wait(&F->rx, id, "recording.completed", (size_t)e, WAIT_MS) > e);
    snprintf(path, sizeof path, "{\"callId\":\"%s\"}", id2);
    post_expect("/hangup", path, 200);
    free(id);
    free(id2);
}

static void test_voice_timing_and_queue(void **state)
{
    (void)state;
    /* voice before answer: 400 "Call not answered" */
    char *ringing = make_call("15558880000", false, NULL);
    char body[256];
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"text\":\"hi\"}", ringing);
    long st;
    json_t *j = api("POST", "/voice", KEY1, body, &st);
    assert_int_equal(st, 400);
    assert_string_equal(jstr(j, "error"), "Call not answered");
    json_decref(j);
    /* hung up while ringing: canceled */
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", ringing);
    post_expect("/hangup", body, 200);
    int e = rx_wait(&F->rx, ringing, "call.ended", 0, WAIT_MS);
    assert_true(e >= 0);
    assert_string_equal(jstr(rx_body(&F->rx, e), "status"), "canceled");
    assert_true(json_is_false(json_object_get(rx_body(&F->rx, e), "wasAnswered")));

    char *id = answered_call();
    /* 40 chars × 60 ms = 2400 ms, /20 in fast mode = 120 ms */
    const char *text = "0123456789012345678901234567890123456789";
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"text\":\"%s\"}", id, text);
    int64_t t0 = ut_now_ms();
    j = api("POST", "/voice", KEY1, body, &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(j, "message"), "TTS played successfully");
    assert_string_equal(jstr(j, "method"), "bridge");
    char pb1[32];
    snprintf(pb1, sizeof pb1, "%s", jstr(j, "playbackId"));
    json_decref(j);
    /* a /play queued behind it: 3000 ms / 20 = 150 ms more */
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"file\":\"custom/welcome\"}", id);
    post_expect("/play", body, 200);

    int p1 = rx_wait(&F->rx, id, "tts.played", 0, WAIT_MS);
    assert_true(p1 >= 0);
    int64_t d1 = F->rx.ev[p1].at - t0;
    assert_true(d1 >= 110 && d1 < 600);
    assert_string_equal(jstr(rx_body(&F->rx, p1), "playbackId"), pb1);
    assert_string_equal(jstr(rx_body(&F->rx, p1), "text"), text);
    int p2 = rx_wait(&F->rx, id, "tts.played", (size_t)p1 + 1, WAIT_MS);
    assert_true(p2 > p1);
    int64_t d2 = F->rx.ev[p2].at - t0;
    assert_true(d2 >= 260);
    assert_string_equal(jstr(rx_body(&F->rx, p2), "file"), "custom/welcome");

    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    post_expect("/hangup", body, 200);
    free(id);
    free(ringing);
}

static void press(const char *id, const char *digits_form)
{
    char path[128];
    snprintf(path, sizeof path, "/sim/calls/%s/digits", id);
    resp r = http(F->base, "POST", path, NULL, digits_form,
                  "Content-Type: application/x-www-form-urlencoded");
    assert_int_equal(r.status, 200);
    free(r.body);
}

static void test_gather_complete(void **state)
{
    (void)state;
    char *id = answered_call();
    char body[256];
    snprintf(body, sizeof body,
             "{\"callId\":\"%s\",\"text\":\"Enter code\",\"numDigits\":3,\"timeout\":5000}", id);
    long st;
    json_t *j = api("POST", "/gather", KEY1, body, &st);
    assert_int_equal(st, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "expectedDigits")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "timeoutMs")), 5000);
    json_decref(j);
    assert_true(rx_wait(&F->rx, id, "gather.started", 0, WAIT_MS) >= 0);
    assert_true(rx_wait(&F->rx, id, "tts.played", 0, WAIT_MS) >= 0);
    press(id, "Digits=123");
    int c = rx_wait(&F->rx, id, "gather.complete", 0, WAIT_MS);
    assert_true(c >= 0);
    assert_string_equal(jstr(rx_body(&F->rx, c), "digits"), "123");
    /* a key with no gather active still reports dtmf.received */
    press(id, "Digits=%23");
    int d = rx_wait(&F->rx, id, "dtmf.received", (size_t)c + 1, WAIT_MS);
    assert_true(d > c);
    assert_string_equal(jstr(rx_body(&F->rx, d), "digit"), "#");

    char names[1024];
    rx_names(&F->rx, id, names, sizeof names);
    assert_string_equal(names,
                        "call.initiated,call.answered,recording.started,gather.started,tts.played,"
                        "dtmf.received,gather.progress,dtmf.received,gather.progress,"
                        "dtmf.received,gather.complete,dtmf.received");
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    post_expect("/hangup", body, 200);
    free(id);
}

static void test_gather_timeout(void **state)
{
    (void)state;
    char *id = answered_call();
    char body[256];
    /* 2000 ms / 20 = 100 ms after the prompt ends */
    snprintf(body, sizeof body,
             "{\"callId\":\"%s\",\"text\":\"Say\",\"numDigits\":4,\"timeout\":2000}", id);
    post_expect("/gather", body, 200);
    assert_true(rx_wait(&F->rx, id, "tts.played", 0, WAIT_MS) >= 0);
    press(id, "{\"Digits\":\"7\"}");
    int t = rx_wait(&F->rx, id, "gather.timeout", 0, WAIT_MS);
    assert_true(t >= 0);
    assert_string_equal(jstr(rx_body(&F->rx, t), "digits"), "7");
    assert_int_equal(rx_wait(&F->rx, id, "gather.complete", 0, 0), -1);
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    post_expect("/hangup", body, 200);
    free(id);
}

static void test_failure_injection(void **state)
{
    (void)state;
    long st;
    json_t *j = api("POST", "/sim/fail", NULL, "{\"status\":402,\"endpoint\":\"/makecall\"}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
    j = api("POST", "/makecall", KEY1, "{\"number\":\"15550100000\"}", &st);
    assert_int_equal(st, 402);
    assert_string_equal(jstr(j, "error"), "Insufficient credits");
    json_decref(j);
    /* count defaults to 1: the next one succeeds */
    char *id = make_call("15550100000", false, NULL);

    /* only KEY2, only twice */
    j = api("POST", "/sim/fail", NULL, "{\"status\":429,\"count\":2,\"key\":\"" KEY2 "\"}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
    j = api("GET", "/calls", KEY1, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);
    for (int i = 0; i < 2; i++) {
        j = api("GET", "/calls", KEY2, NULL, &st);
        assert_int_equal(st, 429);
        assert_string_equal(jstr(j, "error"), "Rate limit exceeded");
        json_decref(j);
    }
    j = api("GET", "/calls", KEY2, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);

    /* until cleared */
    j = api("POST", "/sim/fail", NULL, "{\"status\":503,\"count\":-1}", &st);
    json_decref(j);
    for (int i = 0; i < 3; i++) {
        j = api("POST", "/makecall", KEY1, "{\"number\":\"15550100000\"}", &st);
        assert_int_equal(st, 503);
        assert_string_equal(jstr(j, "error"), "No trunks assigned to this API key");
        json_decref(j);
    }
    j = api("DELETE", "/sim/fail", NULL, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);
    j = api("POST", "/sim/fail", NULL, "{\"status\":500}", &st);
    json_decref(j);
    j = api("POST", "/makecall", KEY1, "{\"number\":\"15550100000\"}", &st);
    assert_int_equal(st, 500);
    assert_string_equal(jstr(j, "code"), "ORIGINATION_FAILED");
    json_decref(j);
    j = api("POST", "/sim/fail", NULL, "{\"status\":418}", &st);
    assert_int_equal(st, 400);
    json_decref(j);

    char body[128];
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    post_expect("/hangup", body, 200);
    free(id);
}

typedef struct slow_arg {
    long    status;
    int64_t took;
} slow_arg;

static void *slow_request(void *a)
{
    slow_arg *sa = a;
    int64_t t0 = ut_now_ms();
    resp r = http(F->base, "GET", "/calls", KEY2, NULL, NULL);
    sa->took = ut_now_ms() - t0;
    sa->status = r.status;
    free(r.body);
    return NULL;
}

static void test_latency_does_not_block(void **state)
{
    (void)state;
    long st;
    json_t *j = api("POST", "/sim/latency", NULL, "{\"ms\":600,\"key\":\"" KEY2 "\"}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
    pthread_t t[3];
    slow_arg sa[3] = {{0}};
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, slow_request, &sa[i]);
    usleep(100 * 1000);
    /* while three slow requests wait, others are answered at once */
    for (int i = 0; i < 3; i++) {
        int64_t t0 = ut_now_ms();
        j = api("GET", "/calls", KEY1, NULL, &st);
        assert_int_equal(st, 200);
        json_decref(j);
        assert_true(ut_now_ms() - t0 < 200);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(sa[i].status, 200);
        assert_true(sa[i].took >= 590);
    }
    j = api("POST", "/sim/latency", NULL, "{\"ms\":0}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
}

static void test_transcript_and_recording(void **state)
{
    (void)state;
    char *id = answered_call();
    char body[256];
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"text\":\"hello\"}", id);
    post_expect("/voice", body, 200);
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"file\":\"beep\",\"playTo\":\"channel\"}", id);
    post_expect("/play", body, 200);
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"text\":\"pick\"}", id);
    post_expect("/gather", body, 200);
    char path[256];
    snprintf(path, sizeof path, "/recordings/%s/stop", id);
    post_expect(path, NULL, 200);
    assert_true(rx_wait(&F->rx, id, "recording.stopped", 0, WAIT_MS) >= 0);
    int rc = rx_wait(&F->rx, id, "recording.completed", 0, WAIT_MS);
    assert_true(rc >= 0);
    char url[128];
    snprintf(url, sizeof url, "/recordings/%s/download", id);
    assert_string_equal(jstr(rx_body(&F->rx, rc), "recordingUrl"), url);
    post_expect(path, NULL, 404);   /* no longer active */
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    post_expect("/hangup", body, 200);

    /* transcript: every Kaphila request for the call, in order */
    long st;
    snprintf(path, sizeof path, "/sim/calls/%s", id);
    json_t *t = api("GET", path, NULL, NULL, &st);
    assert_int_equal(st, 200);
    json_t *reqs = json_object_get(t, "requests");
    static const char *const want[] = {"/makecall", "/voice", "/play", "/gather", "stop",
                                       "stop", "/hangup"};
    static const long want_status[] = {200, 200, 200, 200, 200, 404, 200};
    assert_int_equal(json_array_size(reqs), 7);
    json_int_t last = -1;
    for (size_t i = 0; i < 7; i++) {
        json_t *r = json_array_get(reqs, i);
        const char *p = jstr(r, "path");
        assert_non_null(strstr(p, want[i]));
        assert_int_equal(json_integer_value(json_object_get(r, "status")), want_status[i]);
        json_int_t tm = json_integer_value(json_object_get(r, "t_ms"));
        assert_true(tm >= last);
        last = tm;
    }
    assert_string_equal(jstr(json_object_get(json_array_get(reqs, 2), "body"), "playTo"),
                        "channel");
    assert_true(json_array_size(json_object_get(t, "events")) >= 5);
    json_decref(t);

    /* download: the 1-second tone (a fast call lasts less), byte for byte;
     * Range gives 206 */
    static unsigned char wav[WAV_MAX];
    size_t n = expected_wav(1, wav);
    resp r = http(F->base, "GET", url, KEY1, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "audio/wav");
    assert_int_equal(r.len, n);
    assert_memory_equal(r.body, wav, n);
    free(r.body);
    r = http(F->base, "GET", url, KEY1, NULL, "Range: bytes=40-99");
    assert_int_equal(r.status, 206);
    char cr[64];
    snprintf(cr, sizeof cr, "bytes 40-99/%zu", n);
    assert_string_equal(r.content_range, cr);
    assert_int_equal(r.len, 60);
    assert_memory_equal(r.body, wav + 40, 60);
    free(r.body);
    r = http(F->base, "GET", url, KEY1, NULL, "Range: bytes=999999-");
    assert_int_equal(r.status, 416);
    snprintf(cr, sizeof cr, "bytes */%zu", n);
    assert_string_equal(r.content_range, cr);
    free(r.body);
    snprintf(path, sizeof path, "/recordings/file/rec-%s.wav/download", id);
    r = http(F->base, "GET", path, KEY1, NULL, "Range: bytes=-10");
    assert_int_equal(r.status, 206);
    assert_int_equal(r.len, 10);
    assert_memory_equal(r.body, wav + n - 10, 10);
    free(r.body);
    r = http(F->base, "GET", "/recordings/file/notes.txt/download", KEY1, NULL, NULL);
    assert_int_equal(r.status, 400);
    free(r.body);
    /* a call is not visible to another key */
    snprintf(path, sizeof path, "/calls/%s", id);
    r = http(F->base, "GET", path, KEY2, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    free(id);
}

/* A slow receiver still gets one call's events strictly in order. */
static void test_events_ordered_with_slow_receiver(void **state)
{
    (void)state;
    F->rx.delay_ms = 15;
    char *id = answered_call();
    press(id, "Digits=0123456789");
    int last = -1;
    for (int k = 0; k < 10; k++) {
        int i = rx_wait(&F->rx, id, "dtmf.received", (size_t)(last + 1), WAIT_MS);
        assert_true(i > last);
        char want[2] = {(char)('0' + k), 0};
        assert_string_equal(jstr(rx_body(&F->rx, i), "digit"), want);
        last = i;
    }
    F->rx.delay_ms = 0;
    char body[128];
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    post_expect("/hangup", body, 200);
    assert_true(rx_wait(&F->rx, id, "call.ended", 0, WAIT_MS) >= 0);
    free(id);
}

static void test_rate_limit_and_reset(void **state)
{
    (void)state;
    static const char *const keys[] = {"rk"};
    sim_config cfg;
    sim_config_defaults(&cfg);
    cfg.fast = true;
    cfg.api_keys = keys;
    cfg.n_api_keys = 1;
    cfg.rate_limit = 2;
    char err[256];
    sim *s = sim_create(&cfg, err, sizeof err);
    assert_non_null(s);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", sim_port(s));
    for (int i = 0; i < 2; i++) {
        resp r = http(base, "POST", "/makecall", "rk", "{\"number\":\"15550300000\"}", NULL);
        assert_int_equal(r.status, 200);
        free(r.body);
    }
    resp r = http(base, "POST", "/makecall", "rk", "{\"number\":\"15550300000\"}", NULL);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(r.body, "Rate limit exceeded"));
    free(r.body);
    /* reads are not rate limited */
    r = http(base, "GET", "/calls", "rk", NULL, NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    /* reset forgets calls and counters */
    r = http(base, "POST", "/sim/reset", NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    r = http(base, "GET", "/sim/calls", NULL, NULL, NULL);
    assert_string_equal(r.body, "{\"success\":true,\"calls\":[]}");
    free(r.body);
    r = http(base, "POST", "/makecall", "rk", "{\"number\":\"15550300000\"}", NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    /* destroy with a live call and its timers pending */
    sim_destroy(s);
}

/* /sim/keys: the window's refusals are counted and not admitted, a raised
 * limit admits at once, a lowered one keeps the newest receipts, and the
 * key can be named by id, keyId or itself (docs/simulator.md). */
static void test_key_counters_and_limits(void **state)
{
    (void)state;
    static const char *const keys[] = {"kk"};
    sim_config cfg;
    sim_config_defaults(&cfg);
    cfg.fast = true;
    cfg.api_keys = keys;
    cfg.n_api_keys = 1;
    cfg.rate_limit = 1;
    cfg.rate_window_ms = 60000;
    cfg.credits = 3;
    char err[256];
    sim *s = sim_create(&cfg, err, sizeof err);
    assert_non_null(s);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", sim_port(s));
    const char *hang = "{\"callId\":\"1.1\"}";
    resp r = http(base, "POST", "/hangup", "kk", hang, NULL);
    assert_int_equal(r.status, 404);   /* admitted and counted, then unknown */
    free(r.body);
    for (int i = 0; i < 3; i++) {
        r = http(base, "POST", "/hangup", "kk", hang, NULL);
        assert_int_equal(r.status, 429);
        free(r.body);
    }
    r = http(base, "GET", "/sim/keys/kk", NULL, NULL, NULL);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *k = json_object_get(j, "key");
    assert_int_equal(json_integer_value(json_object_get(k, "rateLimited")), 3);
    assert_int_equal(json_integer_value(json_object_get(k, "limitedAccepted")), 1);
    assert_int_equal(json_integer_value(json_object_get(k, "inWindow")), 1);
    assert_true(json_real_value(json_object_get(k, "credits")) == 3.0);
    json_decref(j);
    free(r.body);
    r = http(base, "POST", "/sim/keys/key_1", NULL, "{\"rateLimit\":3}", NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    for (int i = 0; i < 2; i++) {
        r = http(base, "POST", "/hangup", "kk", hang, NULL);
        assert_int_equal(r.status, 404);
        free(r.body);
    }
    r = http(base, "POST", "/hangup", "kk", hang, NULL);
    assert_int_equal(r.status, 429);
    free(r.body);
    /* Lowered to 2 with 3 in the window: still shut, 2 kept. */
    r = http(base, "POST", "/sim/keys/1", NULL, "{\"rateLimit\":2}", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"inWindow\":2"));
    free(r.body);
    r = http(base, "POST", "/hangup", "kk", hang, NULL);
    assert_int_equal(r.status, 429);
    free(r.body);
    r = http(base, "POST", "/sim/keys/2", NULL, "{\"rateLimit\":2}", NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    r = http(base, "POST", "/sim/keys/kk", NULL, "{\"rateWindowMs\":0}", NULL);
    assert_int_equal(r.status, 400);
    free(r.body);
    sim_destroy(s);
}

/* Recordings live in memory: downloadable while the call records (just a
 * header) and after, by callId and by file name, after /sim/reset too, and
 * never a file anywhere. */
static void test_recordings_in_memory(void **state)
{
    (void)state;
    static unsigned char want[WAV_MAX];
    char path[256], body[128], name[64];
    long st;
    char *id = answered_call();
    snprintf(path, sizeof path, "/recordings/%s/download", id);
    resp r = http(F->base, "GET", path, KEY1, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, expected_wav(0, want));
    assert_memory_equal(r.body, want, 44);
    free(r.body);
    json_t *j = api("GET", "/recordings", KEY1, NULL, &st);
    assert_int_equal(st, 200);
    json_t *act = json_object_get(j, "active"), *files = json_object_get(j, "files");
    bool seen = false;
    for (size_t i = 0; i < json_array_size(act); i++)
        seen = seen || strcmp(jstr(json_array_get(act, i), "callId"), id) == 0;
    assert_true(seen);
    snprintf(name, sizeof name, "rec-%s.wav", id);
    assert_string_equal(jstr(json_array_get(files, 0), "filename"), name);   /* newest first */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(files, 0), "size")), 44);
    json_decref(j);

    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    post_expect("/hangup", body, 200);
    assert_true(rx_wait(&F->rx, id, "recording.completed", 0, WAIT_MS) >= 0);
    size_t n = expected_wav(1, want);
    j = api("GET", "/recordings", KEY1, NULL, &st);
    files = json_object_get(j, "files");
    assert_string_equal(jstr(json_array_get(files, 0), "filename"), name);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(files, 0), "size")), n);
    json_decref(j);

    /* the recording outlives the sim's memory of the call */
    j = api("POST", "/sim/reset", NULL, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);
    snprintf(path, sizeof path, "/calls/%s", id);
    r = http(F->base, "GET", path, KEY1, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    snprintf(path, sizeof path, "/recordings/file/%s/download", name);
    r = http(F->base, "GET", path, KEY1, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, n);
    assert_memory_equal(r.body, want, n);
    free(r.body);
    r = http(F->base, "GET", "/recordings/file/rec-1.999999.wav/download", KEY1, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    r = http(F->base, "GET", "/recordings/file/other.wav/download", KEY1, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    assert_int_equal(dir_entries(F->tmpdir), 0);
    free(id);
}

/* Polls GET path on base until it answers want_status and, when set, the
 * JSON field `active` equals want_active. */
static void wait_status(const char *base, const char *path, long want_status, int want_active)
{
    int64_t until = ut_now_ms() + WAIT_MS;
    for (;;) {
        resp r = http(base, "GET", path, KEY1, NULL, NULL);
        json_t *j = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
        bool ok = r.status == want_status &&
                  (want_active < 0 || json_is_true(json_object_get(j, "active")) == want_active);
        json_decref(j);
        free(r.body);
        if (ok)
            return;
        assert_true(ut_now_ms() < until);
        usleep(5000);
    }
}

/* With recordings_dir the recordings are files there too: empty from the
 * answer, written in full at the end, served from the disk (a file taken
 * away is a 404), listed from the directory. */
static void test_recordings_dir(void **state)
{
    (void)state;
    static const char *const keys[] = {KEY1};
    static unsigned char want[WAV_MAX], got[WAV_MAX];
    char dir[128], base[64], path[256], file[256], body[128];
    ut_tmpdir(dir, sizeof dir, "test-sim-rec");
    sim_config cfg;
    sim_config_defaults(&cfg);
    cfg.fast = true;
    cfg.api_keys = keys;
    cfg.n_api_keys = 1;
    cfg.recordings_dir = dir;
    char err[256];
    sim *s = sim_create(&cfg, err, sizeof err);
    assert_non_null(s);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", sim_port(s));
    resp r = http(base, "POST", "/makecall", KEY1, "{\"number\":\"15550400000\"}", NULL);
    assert_int_equal(r.status, 200);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    char *id = strdup(jstr(j, "callId"));
    json_decref(j);
    free(r.body);
    snprintf(path, sizeof path, "/recordings/%s", id);
    wait_status(base, path, 200, 1);
    snprintf(file, sizeof file, "%s/rec-%s.wav", dir, id);
    struct stat sb;
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(sb.st_size, expected_wav(0, want));

    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    r = http(base, "POST", "/hangup", KEY1, body, NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    wait_status(base, path, 200, 0);
    size_t n = expected_wav(1, want);
    FILE *fp = fopen(file, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(got, 1, sizeof got, fp), n);
    fclose(fp);
    assert_memory_equal(got, want, n);
    snprintf(path, sizeof path, "/recordings/%s/download", id);
    r = http(base, "GET", path, KEY1, NULL, "Range: bytes=100-");
    assert_int_equal(r.status, 206);
    assert_int_equal(r.len, n - 100);
    assert_memory_equal(r.body, want + 100, n - 100);
    free(r.body);
    r = http(base, "GET", "/recordings", KEY1, NULL, NULL);
    assert_non_null(strstr(r.body, "\"size\":16044"));
    free(r.body);
    /* Kaphila has no file any more */
    assert_int_equal(unlink(file), 0);
    r = http(base, "GET", path, KEY1, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    sim_destroy(s);
    assert_int_equal(dir_entries(dir), 0);
    rmdir(dir);
    free(id);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_and_health),
        cmocka_unit_test(test_call_lifecycle_in_order),
        cmocka_unit_test(test_outcomes_by_suffix),
        cmocka_unit_test(test_voice_timing_and_queue),
        cmocka_unit_test(test_gather_complete),
        cmocka_unit_test(test_gather_timeout),
        cmocka_unit_test(test_failure_injection),
        cmocka_unit_test(test_latency_does_not_block),
        cmocka_unit_test(test_transcript_and_recording),
        cmocka_unit_test(test_events_ordered_with_slow_receiver),
        cmocka_unit_test(test_recordings_in_memory),
        cmocka_unit_test(test_recordings_dir),
        cmocka_unit_test(test_rate_limit_and_reset),
        cmocka_unit_test(test_key_counters_and_limits),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
