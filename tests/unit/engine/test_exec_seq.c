/* Unit tests for the TwiML executor's verb sequencing (exec*.c) on the
 * in-process simulator, driven without HTTP (tests/unit/support/
 * engine_rig.h): the order and timing of the Kaphila requests a document
 * causes, read from the simulator's transcript of the call (its clock). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../support/engine_rig.h"
#include "store/store.h"

/* Between two polls of a state the test waits for (never an outcome). */
static void nap(void)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* Starts a call running twiml (or fetching url when twiml is NULL) and
 * waits for its 201; the SID goes to sid. */
static void start_call(ut_rig *r, const char *twiml, const char *url, char sid[SID_SIZE])
{
    ut_ereq q;
    store_call call;
    json_t *p = twiml ? json_pack("{s:s}", "twiml", twiml)
                      : json_pack("{s:s, s:s}", "url", url, "method", "POST");
    ut_ereq_init(&q);
    ut_rig_call(&call, "+15005550100", p);
    snprintf(sid, SID_SIZE, "%s", call.sid);
    assert_true(engine_originate(r->a.engine, ut_ereq_reply(&q), &call, NULL));
    store_call_fini(&call);
    assert_true(ut_waiter_wait(&q.done, 1, UT_RIG_WAIT_MS));
    assert_int_equal(q.status, 201);
    ut_ereq_fini(&q);
}

/* The transcript's requests after /makecall, as "path[:text]" lines. */
static void request_list(json_t *t, char *out, size_t outlen)
{
    size_t i, n = 0;
    json_t *rq;
    out[0] = 0;
    json_array_foreach(json_object_get(t, "requests"), i, rq) {
        const char *path = json_string_value(json_object_get(rq, "path"));
        const char *text = json_string_value(json_object_get(json_object_get(rq, "body"), "text"));
        n += (size_t)snprintf(out + n, outlen - n, "%s%s%s;", path ? path : "?", text ? ":" : "",
                              text ? text : "");
        assert_true(n < outlen);
    }
}

/* t_ms of the k-th (0-based) request to path, or of the k-th event named so. */
static int64_t req_t(json_t *t, const char *path, int k)
{
    size_t i;
    json_t *rq;
    json_array_foreach(json_object_get(t, "requests"), i, rq)
        if (!strcmp(json_string_value(json_object_get(rq, "path")), path) && k-- == 0)
            return json_integer_value(json_object_get(rq, "t_ms"));
    fail_msg("no request %s", path);
    return -1;
}

static int64_t ev_t(json_t *t, const char *name, int k)
{
    size_t i;
    json_t *ev;
    json_array_foreach(json_object_get(t, "events"), i, ev)
        if (!strcmp(json_string_value(json_object_get(ev, "event")), name) && k-- == 0)
            return json_integer_value(json_object_get(ev, "t_ms"));
    fail_msg("no event %s", name);
    return -1;
}

/* Say → tts.played → Pause (a timer) → Say → tts.played → Hangup: each
 * verb waits for the one before it; the Pause's second is on Kaphila's
 * clock between the first prompt's end and the second prompt. */
static void test_say_pause_say_hangup(void **state)
{
    (void)state;
    ut_rig r;
    char sid[SID_SIZE], reqs[1024];

    ut_rig_start(&r, NULL);
    start_call(&r, "<Response><Say>First words</Say><Pause length=\"1\"/>"
                   "<Say>Second words</Say><Hangup/></Response>", NULL, sid);
    json_t *t = ut_rig_sim_wait_status(&r, sid, "completed");
    request_list(t, reqs, sizeof reqs);
    assert_string_equal(reqs, "/makecall;/voice:First words;/voice:Second words;/hangup;");
    /* the second prompt only once the first was played, and a second later */
    assert_true(req_t(t, "/voice", 1) >= ev_t(t, "tts.played", 0) + 990);
    /* the hang-up only once the second prompt was played */
    assert_true(req_t(t, "/hangup", 0) >= ev_t(t, "tts.played", 1));
    json_decref(t);

    /* The engine's side agrees: the call ended completed. */
    ut_rig_wait_row(&r, sid, "completed");
    ut_rig_stop(&r);
}

/* Gather: the prompt is spoken, the pressed digit ends it (numDigits=1),
 * the action URL is fetched with Digits, and its document runs next; the
 * verb after the Gather (its no-input branch) never does. The call's first
 * document comes from the voice URL, a webhook like the action. */
static void test_gather_digits_action(void **state)
{
    (void)state;
    ut_rig r;
    char sid[SID_SIZE], reqs[1024], base[64], url[128], doc[512], path[128];

    ut_rig_start(&r, NULL);
    ut_rig_url(&r, base, sizeof base);
    snprintf(doc, sizeof doc,
             "<Response><Gather numDigits=\"1\" timeout=\"30\" action=\"%s/act\">"
             "<Say>Press a key</Say></Gather><Say>No input</Say></Response>", base);
    ut_rig_hook(&r, "/voice", doc);
    ut_rig_hook(&r, "/act", "<Response><Say>Thanks</Say><Hangup/></Response>");
    snprintf(url, sizeof url, "%s/voice", base);
    start_call(&r, NULL, url, sid);

    /* Press 5 once the Gather is listening: its prompt has reached the
     * simulator. A key pressed between the answer and the Gather (while the
     * voice URL is fetched) is outside any Gather and ignored, so pressing
     * at the answer raced the fetch and, when it lost, the call waited the
     * whole 30 s timeout (seen once under load). */
    snprintf(path, sizeof path, "/sim/calls/%s", sid);
    int64_t deadline = ut_now_ms() + UT_RIG_WAIT_MS;
    for (bool prompted = false; !prompted;) {
        json_t *t = ut_rig_sim(&r, "GET", path, NULL, NULL);
        char seen[1024];
        if (t) request_list(t, seen, sizeof seen);
        prompted = t && strstr(seen, "/voice:Press a key;") != NULL;
        json_decref(t);
        assert_true(ut_now_ms() < deadline);
        if (!prompted) nap();
    }
    snprintf(path, sizeof path, "/sim/calls/%s/digits", sid);
    int st = 0;
    json_decref(ut_rig_sim(&r, "POST", path, "Digits=5", &st));
    assert_int_equal(st, 200);
    json_t *t = ut_rig_sim_wait_status(&r, sid, "completed");
    request_list(t, reqs, sizeof reqs);
    assert_string_equal(reqs, "/makecall;/voice:Press a key;/voice:Thanks;/hangup;");
    assert_true(req_t(t, "/voice", 1) >= ev_t(t, "dtmf.received", 0));
    json_decref(t);

    /* The webhooks: the voice URL, then the action with the digit. */
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.n_seen, 2);
    assert_string_equal(r.seen[0].path, "/voice");
    assert_string_equal(r.seen[1].path, "/act");
    assert_non_null(strstr(r.seen[1].body, "Digits=5"));
    assert_non_null(strstr(r.seen[1].body, sid));
    pthread_mutex_unlock(&r.mu);
    ut_rig_stop(&r);
}

/* Hangup as the first verb: the only request after /makecall is /hangup,
 * and no prompt is spoken. */
static void test_hangup_first(void **state)
{
    (void)state;
    ut_rig r;
    char sid[SID_SIZE], reqs[512];

    ut_rig_start(&r, NULL);
    start_call(&r, "<Response><Hangup/><Say>never</Say></Response>", NULL, sid);
    json_t *t = ut_rig_sim_wait_status(&r, sid, "completed");
    request_list(t, reqs, sizeof reqs);
    assert_string_equal(reqs, "/makecall;/hangup;");
    assert_true(req_t(t, "/hangup", 0) >= ev_t(t, "call.answered", 0));
    json_decref(t);
    ut_rig_stop(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_say_pause_say_hangup),
        cmocka_unit_test(test_gather_digits_action),
        cmocka_unit_test(test_hangup_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
