/* Unit tests for what the Kaphila simulator records and counts: transcripts
 * and recordings (in memory, and as files with recordings_dir), rate limits
 * and their reset, and the per-key counters and limits of /sim/keys. The sim
 * runs in-process in support/sim_rig.h's fixture, as in test_sim.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sim/sim.h"
#include "../support/sim_rig.h"

static void test_transcript_and_recording(void **state)
{
    (void)state;
    char *id = ut_answered_call();
    char body[256];
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"text\":\"hello\"}", id);
    ut_post_expect("/voice", body, 200);
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"file\":\"beep\",\"playTo\":\"channel\"}", id);
    ut_post_expect("/play", body, 200);
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"text\":\"pick\"}", id);
    ut_post_expect("/gather", body, 200);
    char path[256];
    snprintf(path, sizeof path, "/recordings/%s/stop", id);
    ut_post_expect(path, NULL, 200);
    assert_true(ut_rx_wait(&ut_sim->rx, id, "recording.stopped", 0, UT_SIM_WAIT_MS) >= 0);
    int rc = ut_rx_wait(&ut_sim->rx, id, "recording.completed", 0, UT_SIM_WAIT_MS);
    assert_true(rc >= 0);
    char url[128];
    snprintf(url, sizeof url, "/recordings/%s/download", id);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, rc), "recordingUrl"), url);
    ut_post_expect(path, NULL, 404);   /* no longer active */
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    ut_post_expect("/hangup", body, 200);

    /* transcript: every Kaphila request for the call, in order */
    long st;
    snprintf(path, sizeof path, "/sim/calls/%s", id);
    json_t *t = ut_api("GET", path, NULL, NULL, &st);
    assert_int_equal(st, 200);
    json_t *reqs = json_object_get(t, "requests");
    static const char *const want[] = {"/makecall", "/voice", "/play", "/gather", "stop",
                                       "stop", "/hangup"};
    static const long want_status[] = {200, 200, 200, 200, 200, 404, 200};
    assert_int_equal(json_array_size(reqs), 7);
    json_int_t last = -1;
    for (size_t i = 0; i < 7; i++) {
        json_t *r = json_array_get(reqs, i);
        const char *p = ut_jstr(r, "path");
        assert_non_null(strstr(p, want[i]));
        assert_int_equal(json_integer_value(json_object_get(r, "status")), want_status[i]);
        json_int_t tm = json_integer_value(json_object_get(r, "t_ms"));
        assert_true(tm >= last);
        last = tm;
    }
    assert_string_equal(ut_jstr(json_object_get(json_array_get(reqs, 2), "body"), "playTo"),
                        "channel");
    assert_true(json_array_size(json_object_get(t, "events")) >= 5);
    json_decref(t);

    /* download: the 1-second tone (a fast call lasts less), byte for byte;
     * Range gives 206 */
    static unsigned char wav[UT_WAV_MAX];
    size_t n = ut_expected_wav(1, wav);
    ut_resp r = ut_http(ut_sim->base, "GET", url, UT_SIM_KEY1, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "audio/wav");
    assert_int_equal(r.len, n);
    assert_memory_equal(r.body, wav, n);
    free(r.body);
    r = ut_http(ut_sim->base, "GET", url, UT_SIM_KEY1, NULL, "Range: bytes=40-99");
    assert_int_equal(r.status, 206);
    char cr[64];
    snprintf(cr, sizeof cr, "bytes 40-99/%zu", n);
    assert_string_equal(r.content_range, cr);
    assert_int_equal(r.len, 60);
    assert_memory_equal(r.body, wav + 40, 60);
    free(r.body);
    r = ut_http(ut_sim->base, "GET", url, UT_SIM_KEY1, NULL, "Range: bytes=999999-");
    assert_int_equal(r.status, 416);
    snprintf(cr, sizeof cr, "bytes */%zu", n);
    assert_string_equal(r.content_range, cr);
    free(r.body);
    snprintf(path, sizeof path, "/recordings/file/rec-%s.wav/download", id);
    r = ut_http(ut_sim->base, "GET", path, UT_SIM_KEY1, NULL, "Range: bytes=-10");
    assert_int_equal(r.status, 206);
    assert_int_equal(r.len, 10);
    assert_memory_equal(r.body, wav + n - 10, 10);
    free(r.body);
    r = ut_http(ut_sim->base, "GET", "/recordings/file/notes.txt/download", UT_SIM_KEY1, NULL, NULL);
    assert_int_equal(r.status, 400);
    free(r.body);
    /* a call is not visible to another key */
    snprintf(path, sizeof path, "/calls/%s", id);
    r = ut_http(ut_sim->base, "GET", path, UT_SIM_KEY2, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
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
        ut_resp r = ut_http(base, "POST", "/makecall", "rk", "{\"number\":\"15550300000\"}", NULL);
        assert_int_equal(r.status, 200);
        free(r.body);
    }
    ut_resp r = ut_http(base, "POST", "/makecall", "rk", "{\"number\":\"15550300000\"}", NULL);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(r.body, "Rate limit exceeded"));
    free(r.body);
    /* reads are not rate limited */
    r = ut_http(base, "GET", "/calls", "rk", NULL, NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    /* reset forgets calls and counters */
    r = ut_http(base, "POST", "/sim/reset", NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    r = ut_http(base, "GET", "/sim/calls", NULL, NULL, NULL);
    assert_string_equal(r.body, "{\"success\":true,\"calls\":[]}");
    free(r.body);
    r = ut_http(base, "POST", "/makecall", "rk", "{\"number\":\"15550300000\"}", NULL);
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
    ut_resp r = ut_http(base, "POST", "/hangup", "kk", hang, NULL);
    assert_int_equal(r.status, 404);   /* admitted and counted, then unknown */
    free(r.body);
    for (int i = 0; i < 3; i++) {
        r = ut_http(base, "POST", "/hangup", "kk", hang, NULL);
        assert_int_equal(r.status, 429);
        free(r.body);
    }
    r = ut_http(base, "GET", "/sim/keys/kk", NULL, NULL, NULL);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *k = json_object_get(j, "key");
    assert_int_equal(json_integer_value(json_object_get(k, "rateLimited")), 3);
    assert_int_equal(json_integer_value(json_object_get(k, "limitedAccepted")), 1);
    assert_int_equal(json_integer_value(json_object_get(k, "inWindow")), 1);
    assert_true(json_real_value(json_object_get(k, "credits")) == 3.0);
    json_decref(j);
    free(r.body);
    r = ut_http(base, "POST", "/sim/keys/key_1", NULL, "{\"rateLimit\":3}", NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    for (int i = 0; i < 2; i++) {
        r = ut_http(base, "POST", "/hangup", "kk", hang, NULL);
        assert_int_equal(r.status, 404);
        free(r.body);
    }
    r = ut_http(base, "POST", "/hangup", "kk", hang, NULL);
    assert_int_equal(r.status, 429);
    free(r.body);
    /* Lowered to 2 with 3 in the window: still shut, 2 kept. */
    r = ut_http(base, "POST", "/sim/keys/1", NULL, "{\"rateLimit\":2}", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"inWindow\":2"));
    free(r.body);
    r = ut_http(base, "POST", "/hangup", "kk", hang, NULL);
    assert_int_equal(r.status, 429);
    free(r.body);
    r = ut_http(base, "POST", "/sim/keys/2", NULL, "{\"rateLimit\":2}", NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    r = ut_http(base, "POST", "/sim/keys/kk", NULL, "{\"rateWindowMs\":0}", NULL);
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
    static unsigned char want[UT_WAV_MAX];
    char path[256], body[128], name[64];
    long st;
    char *id = ut_answered_call();
    snprintf(path, sizeof path, "/recordings/%s/download", id);
    ut_resp r = ut_http(ut_sim->base, "GET", path, UT_SIM_KEY1, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, ut_expected_wav(0, want));
    assert_memory_equal(r.body, want, 44);
    free(r.body);
    json_t *j = ut_api("GET", "/recordings", UT_SIM_KEY1, NULL, &st);
    assert_int_equal(st, 200);
    json_t *act = json_object_get(j, "active"), *files = json_object_get(j, "files");
    bool seen = false;
    for (size_t i = 0; i < json_array_size(act); i++)
        seen = seen || strcmp(ut_jstr(json_array_get(act, i), "callId"), id) == 0;
    assert_true(seen);
    snprintf(name, sizeof name, "rec-%s.wav", id);
    assert_string_equal(ut_jstr(json_array_get(files, 0), "filename"), name);   /* newest first */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(files, 0), "size")), 44);
    json_decref(j);

    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    ut_post_expect("/hangup", body, 200);
    assert_true(ut_rx_wait(&ut_sim->rx, id, "recording.completed", 0, UT_SIM_WAIT_MS) >= 0);
    size_t n = ut_expected_wav(1, want);
    j = ut_api("GET", "/recordings", UT_SIM_KEY1, NULL, &st);
    files = json_object_get(j, "files");
    assert_string_equal(ut_jstr(json_array_get(files, 0), "filename"), name);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(files, 0), "size")), n);
    json_decref(j);

    /* the recording outlives the sim's memory of the call */
    j = ut_api("POST", "/sim/reset", NULL, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);
    snprintf(path, sizeof path, "/calls/%s", id);
    r = ut_http(ut_sim->base, "GET", path, UT_SIM_KEY1, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    snprintf(path, sizeof path, "/recordings/file/%s/download", name);
    r = ut_http(ut_sim->base, "GET", path, UT_SIM_KEY1, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, n);
    assert_memory_equal(r.body, want, n);
    free(r.body);
    r = ut_http(ut_sim->base, "GET", "/recordings/file/rec-1.999999.wav/download", UT_SIM_KEY1, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    r = ut_http(ut_sim->base, "GET", "/recordings/file/other.wav/download", UT_SIM_KEY1, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    assert_int_equal(ut_dir_entries(ut_sim->tmpdir), 0);
    free(id);
}

/* Polls GET path on base until it answers want_status and, when set, the
 * JSON field `active` equals want_active. */
static void wait_status(const char *base, const char *path, long want_status, int want_active)
{
    int64_t until = ut_now_ms() + UT_SIM_WAIT_MS;
    for (;;) {
        ut_resp r = ut_http(base, "GET", path, UT_SIM_KEY1, NULL, NULL);
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
    static const char *const keys[] = {UT_SIM_KEY1};
    static unsigned char want[UT_WAV_MAX], got[UT_WAV_MAX];
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
    ut_resp r = ut_http(base, "POST", "/makecall", UT_SIM_KEY1, "{\"number\":\"15550400000\"}", NULL);
    assert_int_equal(r.status, 200);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    char *id = strdup(ut_jstr(j, "callId"));
    json_decref(j);
    free(r.body);
    snprintf(path, sizeof path, "/recordings/%s", id);
    wait_status(base, path, 200, 1);
    snprintf(file, sizeof file, "%s/rec-%s.wav", dir, id);
    struct stat sb;
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(sb.st_size, ut_expected_wav(0, want));

    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    r = ut_http(base, "POST", "/hangup", UT_SIM_KEY1, body, NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    wait_status(base, path, 200, 0);
    size_t n = ut_expected_wav(1, want);
    FILE *fp = fopen(file, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(got, 1, sizeof got, fp), n);
    fclose(fp);
    assert_memory_equal(got, want, n);
    snprintf(path, sizeof path, "/recordings/%s/download", id);
    r = ut_http(base, "GET", path, UT_SIM_KEY1, NULL, "Range: bytes=100-");
    assert_int_equal(r.status, 206);
    assert_int_equal(r.len, n - 100);
    assert_memory_equal(r.body, want + 100, n - 100);
    free(r.body);
    r = ut_http(base, "GET", "/recordings", UT_SIM_KEY1, NULL, NULL);
    assert_non_null(strstr(r.body, "\"size\":16044"));
    free(r.body);
    /* Kaphila has no file any more */
    assert_int_equal(unlink(file), 0);
    r = ut_http(base, "GET", path, UT_SIM_KEY1, NULL, NULL);
    assert_int_equal(r.status, 404);
    free(r.body);
    sim_destroy(s);
    assert_int_equal(ut_dir_entries(dir), 0);
    rmdir(dir);
    free(id);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transcript_and_recording),
        cmocka_unit_test(test_recordings_in_memory),
        cmocka_unit_test(test_recordings_dir),
        cmocka_unit_test(test_rate_limit_and_reset),
        cmocka_unit_test(test_key_counters_and_limits),
    };
    int rc = cmocka_run_group_tests(tests, ut_sim_setup, ut_sim_teardown);
    curl_global_cleanup();
    return rc;
}
