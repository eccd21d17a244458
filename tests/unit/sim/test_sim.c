/* Unit tests for the Kaphila simulator's API and calls: auth and health, a
 * call's events in order, outcomes by number suffix, voice timing and the
 * command queue, Gather, failure injection, latency that blocks nobody, the
 * padded listing, and event order with a slow receiver. The sim runs
 * in-process (fast mode, port 0) in support/sim_rig.h's fixture, whose
 * libmicrohttpd server receives its events; libcurl drives its API and
 * control API. What the sim records and counts is test_sim_records.c's. */
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

/* ================================================================ tests */

static void test_auth_and_health(void **state)
{
    (void)state;
    long st;
    json_t *j = ut_api("POST", "/makecall", NULL, "{\"number\":\"1\"}", &st);
    assert_int_equal(st, 401);
    assert_true(json_is_false(json_object_get(j, "success")));
    assert_non_null(ut_jstr(j, "error"));
    json_decref(j);
    j = ut_api("GET", "/calls", "wrong-key", NULL, &st);
    assert_int_equal(st, 401);
    json_decref(j);
    j = ut_api("GET", "/health", NULL, NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(ut_jstr(j, "status"), "healthy");
    assert_true(json_is_true(json_object_get(json_object_get(j, "features"), "recording")));
    json_decref(j);
    j = ut_api("GET", "/api/me", UT_SIM_KEY1, NULL, &st);
    assert_int_equal(st, 200);
    assert_true(json_is_object(json_object_get(j, "apiKey")));
    json_decref(j);
    /* bad JSON and missing fields */
    j = ut_api("POST", "/makecall", UT_SIM_KEY1, "{nope", &st);
    assert_int_equal(st, 400);
    json_decref(j);
    j = ut_api("POST", "/makecall", UT_SIM_KEY1, "{\"number\":\"+1555\"}", &st);
    assert_int_equal(st, 400);
    json_decref(j);
    j = ut_api("POST", "/voice", UT_SIM_KEY1, "{\"callId\":\"1.1\",\"text\":\"x\"}", &st);
    assert_int_equal(st, 404);
    json_decref(j);
}

static void test_call_lifecycle_in_order(void **state)
{
    (void)state;
    const char *sid = "CA0123456789abcdef0123456789abcdef";
    char *id = ut_make_call("15551234567", true, sid);
    int i = ut_rx_wait(&ut_sim->rx, id, "recording.started", 0, UT_SIM_WAIT_MS);
    assert_true(i >= 0);
    int a = ut_rx_wait(&ut_sim->rx, id, "call.answered", 0, 0);
    json_t *ans = ut_rx_body(&ut_sim->rx, a);
    json_t *amd = json_object_get(ans, "amd");
    assert_string_equal(ut_jstr(amd, "status"), "HUMAN");
    assert_string_equal(ut_jstr(ans, "from"), "15550001111");
    assert_string_equal(ut_jstr(ans, "to"), "15551234567");
    /* ISO 8601 UTC with milliseconds */
    const char *ts = ut_jstr(ans, "timestamp");
    assert_int_equal(strlen(ts), 24);
    assert_true(ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');
    assert_string_equal(ut_sim->rx.ev[a].ua, "Kaphila-API-API/2.0");

    /* GET /calls/:id while live; control API finds it by CallSid */
    long st;
    json_t *j = ut_api("GET", "/sim/calls/" "CA0123456789abcdef0123456789abcdef", NULL, NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(ut_jstr(j, "callId"), id);
    assert_string_equal(ut_jstr(j, "callSid"), sid);
    json_decref(j);

    char body[128];
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    ut_post_expect("/hangup", body, 200);
    int e = ut_rx_wait(&ut_sim->rx, id, "call.ended", 0, UT_SIM_WAIT_MS);
    assert_true(e >= 0);
    json_t *ended = ut_rx_body(&ut_sim->rx, e);
    assert_string_equal(ut_jstr(ended, "status"), "completed");
    assert_string_equal(ut_jstr(ended, "endReason"), "api_hangup");
    assert_string_equal(ut_jstr(ended, "hangupCause"), "16");
    assert_true(json_is_true(json_object_get(ended, "wasAnswered")));
    assert_true(json_is_integer(json_object_get(ended, "callDuration")));
    assert_true(json_is_false(json_object_get(json_object_get(ended, "recording"), "active")));
    assert_true(ut_rx_wait(&ut_sim->rx, id, "recording.completed", 0, UT_SIM_WAIT_MS) > e);

    char names[512];
    ut_rx_names(&ut_sim->rx, id, names, sizeof names);
    assert_string_equal(names, "call.initiated,call.answered,recording.started,call.ended,"
                               "recording.completed");
    /* a second hangup: the call already ended */
    ut_post_expect("/hangup", body, 404);
    free(id);
}

static void check_outcome(const char *number, const char *status, const char *cause)
{
    char *id = ut_make_call(number, false, NULL);
    int e = ut_rx_wait(&ut_sim->rx, id, "call.ended", 0, UT_SIM_WAIT_MS);
    assert_true(e >= 0);
    json_t *b = ut_rx_body(&ut_sim->rx, e);
    assert_string_equal(ut_jstr(b, "status"), status);
    assert_string_equal(ut_jstr(b, "hangupCause"), cause);
    assert_true(json_is_false(json_object_get(b, "wasAnswered")));
    assert_int_equal(ut_rx_wait(&ut_sim->rx, id, "call.answered", 0, 0), -1);
    assert_true(ut_rx_wait(&ut_sim->rx, id, "call.initiated", 0, 0) < e);
    free(id);
}

static void test_outcomes_by_suffix(void **state)
{
    (void)state;
    check_outcome("15550000001", "busy", "17");
    check_outcome("15550000002", "no-answer", "19");
    check_outcome("15550000003", "failed", "1");
    char *id = ut_make_call("15550000004", true, NULL);
    int a = ut_rx_wait(&ut_sim->rx, id, "call.answered", 0, UT_SIM_WAIT_MS);
    assert_true(a >= 0);
    assert_string_equal(ut_jstr(json_object_get(ut_rx_body(&ut_sim->rx, a), "amd"), "status"), "MACHINE");
    /* no AMD requested: no amd object */
    char *id2 = ut_make_call("15550000005", false, NULL);
    a = ut_rx_wait(&ut_sim->rx, id2, "call.answered", 0, UT_SIM_WAIT_MS);
    assert_true(a >= 0);
    assert_null(json_object_get(ut_rx_body(&ut_sim->rx, a), "amd"));
    /* the far end hangs up */
    long st;
    char path[128];
    snprintf(path, sizeof path, "/sim/calls/%s/hangup", id);
    json_decref(ut_api("POST", path, NULL, NULL, &st));
    assert_int_equal(st, 200);
    int e = ut_rx_wait(&ut_sim->rx, id, "call.ended", 0, UT_SIM_WAIT_MS);
    assert_true(e >= 0);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, e), "endReason"), "normal_hangup");
    assert_true(ut_rx_wait(&ut_sim->rx, id, "recording.completed", (size_t)e, UT_SIM_WAIT_MS) > e);
    snprintf(path, sizeof path, "{\"callId\":\"%s\"}", id2);
    ut_post_expect("/hangup", path, 200);
    free(id);
    free(id2);
}

static void test_voice_timing_and_queue(void **state)
{
    (void)state;
    /* voice before answer: 400 "Call not answered" */
    char *ringing = ut_make_call("15558880000", false, NULL);
    char body[256];
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"text\":\"hi\"}", ringing);
    long st;
    json_t *j = ut_api("POST", "/voice", UT_SIM_KEY1, body, &st);
    assert_int_equal(st, 400);
    assert_string_equal(ut_jstr(j, "error"), "Call not answered");
    json_decref(j);
    /* hung up while ringing: canceled */
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", ringing);
    ut_post_expect("/hangup", body, 200);
    int e = ut_rx_wait(&ut_sim->rx, ringing, "call.ended", 0, UT_SIM_WAIT_MS);
    assert_true(e >= 0);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, e), "status"), "canceled");
    assert_true(json_is_false(json_object_get(ut_rx_body(&ut_sim->rx, e), "wasAnswered")));

    char *id = ut_answered_call();
    /* 40 chars × 60 ms = 2400 ms, /20 in fast mode = 120 ms */
    const char *text = "0123456789012345678901234567890123456789";
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"text\":\"%s\"}", id, text);
    int64_t t0 = ut_now_ms();
    j = ut_api("POST", "/voice", UT_SIM_KEY1, body, &st);
    assert_int_equal(st, 200);
    assert_string_equal(ut_jstr(j, "message"), "TTS played successfully");
    assert_string_equal(ut_jstr(j, "method"), "bridge");
    char pb1[32];
    snprintf(pb1, sizeof pb1, "%s", ut_jstr(j, "playbackId"));
    json_decref(j);
    /* a /play queued behind it: 3000 ms / 20 = 150 ms more */
    snprintf(body, sizeof body, "{\"callId\":\"%s\",\"file\":\"custom/welcome\"}", id);
    ut_post_expect("/play", body, 200);

    int p1 = ut_rx_wait(&ut_sim->rx, id, "tts.played", 0, UT_SIM_WAIT_MS);
    assert_true(p1 >= 0);
    int64_t d1 = ut_sim->rx.ev[p1].at - t0;
    assert_true(d1 >= 110 && d1 < 600);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, p1), "playbackId"), pb1);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, p1), "text"), text);
    int p2 = ut_rx_wait(&ut_sim->rx, id, "tts.played", (size_t)p1 + 1, UT_SIM_WAIT_MS);
    assert_true(p2 > p1);
    int64_t d2 = ut_sim->rx.ev[p2].at - t0;
    assert_true(d2 >= 260);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, p2), "file"), "custom/welcome");

    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    ut_post_expect("/hangup", body, 200);
    free(id);
    free(ringing);
}

static void press(const char *id, const char *digits_form)
{
    char path[128];
    snprintf(path, sizeof path, "/sim/calls/%s/digits", id);
    ut_resp r = ut_http(ut_sim->base, "POST", path, NULL, digits_form,
                  "Content-Type: application/x-www-form-urlencoded");
    assert_int_equal(r.status, 200);
    free(r.body);
}

static void test_gather_complete(void **state)
{
    (void)state;
    char *id = ut_answered_call();
    char body[256];
    snprintf(body, sizeof body,
             "{\"callId\":\"%s\",\"text\":\"Enter code\",\"numDigits\":3,\"timeout\":5000}", id);
    long st;
    json_t *j = ut_api("POST", "/gather", UT_SIM_KEY1, body, &st);
    assert_int_equal(st, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "expectedDigits")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "timeoutMs")), 5000);
    json_decref(j);
    assert_true(ut_rx_wait(&ut_sim->rx, id, "gather.started", 0, UT_SIM_WAIT_MS) >= 0);
    assert_true(ut_rx_wait(&ut_sim->rx, id, "tts.played", 0, UT_SIM_WAIT_MS) >= 0);
    press(id, "Digits=123");
    int c = ut_rx_wait(&ut_sim->rx, id, "gather.complete", 0, UT_SIM_WAIT_MS);
    assert_true(c >= 0);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, c), "digits"), "123");
    /* a key with no gather active still reports dtmf.received */
    press(id, "Digits=%23");
    int d = ut_rx_wait(&ut_sim->rx, id, "dtmf.received", (size_t)c + 1, UT_SIM_WAIT_MS);
    assert_true(d > c);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, d), "digit"), "#");

    char names[1024];
    ut_rx_names(&ut_sim->rx, id, names, sizeof names);
    assert_string_equal(names,
                        "call.initiated,call.answered,recording.started,gather.started,tts.played,"
                        "dtmf.received,gather.progress,dtmf.received,gather.progress,"
                        "dtmf.received,gather.complete,dtmf.received");
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    ut_post_expect("/hangup", body, 200);
    free(id);
}

static void test_gather_timeout(void **state)
{
    (void)state;
    char *id = ut_answered_call();
    char body[256];
    /* 2000 ms / 20 = 100 ms after the prompt ends */
    snprintf(body, sizeof body,
             "{\"callId\":\"%s\",\"text\":\"Say\",\"numDigits\":4,\"timeout\":2000}", id);
    ut_post_expect("/gather", body, 200);
    assert_true(ut_rx_wait(&ut_sim->rx, id, "tts.played", 0, UT_SIM_WAIT_MS) >= 0);
    press(id, "{\"Digits\":\"7\"}");
    int t = ut_rx_wait(&ut_sim->rx, id, "gather.timeout", 0, UT_SIM_WAIT_MS);
    assert_true(t >= 0);
    assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, t), "digits"), "7");
    assert_int_equal(ut_rx_wait(&ut_sim->rx, id, "gather.complete", 0, 0), -1);
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    ut_post_expect("/hangup", body, 200);
    free(id);
}

static void test_failure_injection(void **state)
{
    (void)state;
    long st;
    json_t *j = ut_api("POST", "/sim/fail", NULL, "{\"status\":402,\"endpoint\":\"/makecall\"}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
    j = ut_api("POST", "/makecall", UT_SIM_KEY1, "{\"number\":\"15550100000\"}", &st);
    assert_int_equal(st, 402);
    assert_string_equal(ut_jstr(j, "error"), "Insufficient credits");
    json_decref(j);
    /* count defaults to 1: the next one succeeds */
    char *id = ut_make_call("15550100000", false, NULL);

    /* only UT_SIM_KEY2, only twice */
    j = ut_api("POST", "/sim/fail", NULL, "{\"status\":429,\"count\":2,\"key\":\"" UT_SIM_KEY2 "\"}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
    j = ut_api("GET", "/calls", UT_SIM_KEY1, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);
    for (int i = 0; i < 2; i++) {
        j = ut_api("GET", "/calls", UT_SIM_KEY2, NULL, &st);
        assert_int_equal(st, 429);
        assert_string_equal(ut_jstr(j, "error"), "Rate limit exceeded");
        json_decref(j);
    }
    j = ut_api("GET", "/calls", UT_SIM_KEY2, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);

    /* until cleared */
    j = ut_api("POST", "/sim/fail", NULL, "{\"status\":503,\"count\":-1}", &st);
    json_decref(j);
    for (int i = 0; i < 3; i++) {
        j = ut_api("POST", "/makecall", UT_SIM_KEY1, "{\"number\":\"15550100000\"}", &st);
        assert_int_equal(st, 503);
        assert_string_equal(ut_jstr(j, "error"), "No trunks assigned to this API key");
        json_decref(j);
    }
    j = ut_api("DELETE", "/sim/fail", NULL, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);
    j = ut_api("POST", "/sim/fail", NULL, "{\"status\":500}", &st);
    json_decref(j);
    j = ut_api("POST", "/makecall", UT_SIM_KEY1, "{\"number\":\"15550100000\"}", &st);
    assert_int_equal(st, 500);
    assert_string_equal(ut_jstr(j, "code"), "ORIGINATION_FAILED");
    json_decref(j);
    j = ut_api("POST", "/sim/fail", NULL, "{\"status\":418}", &st);
    assert_int_equal(st, 400);
    json_decref(j);

    char body[128];
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    ut_post_expect("/hangup", body, 200);
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
    ut_resp r = ut_http(ut_sim->base, "GET", "/calls", UT_SIM_KEY2, NULL, NULL);
    sa->took = ut_now_ms() - t0;
    sa->status = r.status;
    free(r.body);
    return NULL;
}

static void test_latency_does_not_block(void **state)
{
    (void)state;
    long st;
    json_t *j = ut_api("POST", "/sim/latency", NULL, "{\"ms\":600,\"key\":\"" UT_SIM_KEY2 "\"}", &st);
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
        j = ut_api("GET", "/calls", UT_SIM_KEY1, NULL, &st);
        assert_int_equal(st, 200);
        json_decref(j);
        assert_true(ut_now_ms() - t0 < 200);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(sa[i].status, 200);
        assert_true(sa[i].took >= 590);
    }
    j = ut_api("POST", "/sim/latency", NULL, "{\"ms\":0}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
}

/* /sim/listing pads GET /calls with ended calls, refuses what is out of
 * range (changing nothing), and reset clears it. */
static void test_listing_padding(void **state)
{
    (void)state;
    long st;
    json_t *j = ut_api("POST", "/sim/listing", NULL, "{\"ended\":3}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
    const char *bad[] = {"{\"ended\":-1}", "{\"ended\":100001}", "{\"ended\":\"9\"}", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = ut_api("POST", "/sim/listing", NULL, bad[i], &st);
        assert_int_equal(st, 400);
        json_decref(j);
    }
    j = ut_api("GET", "/calls", UT_SIM_KEY1, NULL, &st);
    assert_int_equal(st, 200);
    json_t *calls = json_object_get(j, "calls");
    size_t ended = 0, i;
    json_t *it;
    json_array_foreach(calls, i, it)
        if (!strncmp(ut_jstr(it, "callId"), "1700000000.", 11)) {
            assert_string_equal(ut_jstr(it, "status"), "completed");
            ended++;
        }
    assert_int_equal(ended, 3);
    json_decref(j);
    j = ut_api("POST", "/sim/reset", NULL, "{}", &st);
    assert_int_equal(st, 200);
    json_decref(j);
    j = ut_api("GET", "/calls", UT_SIM_KEY1, NULL, &st);
    assert_int_equal(json_array_size(json_object_get(j, "calls")), 0);
    json_decref(j);
}

/* A slow receiver still gets one call's events strictly in order. */
static void test_events_ordered_with_slow_receiver(void **state)
{
    (void)state;
    ut_sim->rx.delay_ms = 15;
    char *id = ut_answered_call();
    press(id, "Digits=0123456789");
    int last = -1;
    for (int k = 0; k < 10; k++) {
        int i = ut_rx_wait(&ut_sim->rx, id, "dtmf.received", (size_t)(last + 1), UT_SIM_WAIT_MS);
        assert_true(i > last);
        char want[2] = {(char)('0' + k), 0};
        assert_string_equal(ut_jstr(ut_rx_body(&ut_sim->rx, i), "digit"), want);
        last = i;
    }
    ut_sim->rx.delay_ms = 0;
    char body[128];
    snprintf(body, sizeof body, "{\"callId\":\"%s\"}", id);
    ut_post_expect("/hangup", body, 200);
    assert_true(ut_rx_wait(&ut_sim->rx, id, "call.ended", 0, UT_SIM_WAIT_MS) >= 0);
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
        cmocka_unit_test(test_listing_padding),
        cmocka_unit_test(test_events_ordered_with_slow_receiver),
    };
    int rc = cmocka_run_group_tests(tests, ut_sim_setup, ut_sim_teardown);
    curl_global_cleanup();
    return rc;
}
