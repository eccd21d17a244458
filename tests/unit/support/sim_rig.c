/* sim_rig — see sim_rig.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "sim_rig.h"

#include <curl/curl.h>
#include <dirent.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- receiver ----------------------------------------------------------- */

typedef struct rx_conn {
    char  *data;
    size_t len;
} rx_conn;

static enum MHD_Result rx_handler(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)url; (void)method; (void)version;
    ut_receiver *rx = cls;
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
    if (body && rx->n < UT_RX_MAX_EVENTS) {
        ut_rx_event *e = &rx->ev[rx->n++];
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
int ut_rx_wait(ut_receiver *rx, const char *call_id, const char *name, size_t from, int timeout_ms)
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
void ut_rx_names(ut_receiver *rx, const char *call_id, char *out, size_t n)
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

json_t *ut_rx_body(ut_receiver *rx, int i)
{
    pthread_mutex_lock(&rx->mu);
    json_t *b = rx->ev[i].body;
    pthread_mutex_unlock(&rx->mu);
    return b;
}

/* ---- fixture ------------------------------------------------------------ */

ut_sim_fixture *ut_sim;

int ut_sim_setup(void **state)
{
    ut_sim_fixture *f = calloc(1, sizeof *f);
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
    static const char *const keys[] = {UT_SIM_KEY1, UT_SIM_KEY2};
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
    ut_sim = f;
    *state = f;
    return 0;
}

int ut_sim_teardown(void **state)
{
    ut_sim_fixture *f = *state;
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

/* ---- client ------------------------------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    ut_resp *r = ud;
    r->body = realloc(r->body, r->len + sz * n + 1);
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = 0;
    return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    ut_resp *r = ud;
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
ut_resp ut_http(const char *base, const char *method, const char *path, const char *key,
                 const char *body, const char *extra_header)
{
    ut_resp r = {0};
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
json_t *ut_api(const char *method, const char *path, const char *key, const char *body,
                   long *status)
{
    ut_resp r = ut_http(ut_sim->base, method, path, key, body, NULL);
    *status = r.status;
    json_t *j = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
    free(r.body);
    assert_non_null(j);
    return j;
}

const char *ut_jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Starts a call to number with events to the receiver; returns its callId
 * (heap). sid may be NULL. */
char *ut_make_call(const char *number, bool amd, const char *sid)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"number\":\"%s\",\"webhookUrl\":\"http://127.0.0.1:%d/ev?CallSid=%s&t=x\","
             "\"callerId\":\"15550001111\",\"useAmd\":%s}",
             number, ut_sim->rx.port, sid ? sid : "", amd ? "true" : "false");
    long st;
    json_t *j = ut_api("POST", "/makecall", UT_SIM_KEY1, body, &st);
    assert_int_equal(st, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_string_equal(ut_jstr(j, "status"), "ringing");
    char *id = strdup(ut_jstr(j, "callId"));
    json_decref(j);
    return id;
}

char *ut_answered_call(void)
{
    char *id = ut_make_call("15557770000", false, NULL);
    assert_true(ut_rx_wait(&ut_sim->rx, id, "recording.started", 0, UT_SIM_WAIT_MS) >= 0);
    return id;
}

void ut_post_expect(const char *path, const char *body, long want)
{
    long st;
    json_t *j = ut_api("POST", path, UT_SIM_KEY1, body, &st);
    if (st != want)
        fprintf(stderr, "%s %s → %ld %s\n", path, body, st, json_dumps(j, 0));
    assert_int_equal(st, want);
    json_decref(j);
}

/* The recording of a call of `seconds` as the docs describe it, computed
 * here independently of the sim: 8 kHz 16-bit mono PCM, a 400 Hz triangle
 * wave of peak 8000 (20 samples per period). Returns its size. */
size_t ut_expected_wav(int seconds, unsigned char *out)
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
int ut_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}