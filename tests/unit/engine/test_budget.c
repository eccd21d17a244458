/* Unit tests for Kaphila's per-key request budget (budget.c) and the call
 * queue on it (engine_dialq.c), on the in-process simulator as a strict
 * Kaphila (sim.rate_limit in a sliding sim.rate_window_ms), driven without
 * HTTP (tests/unit/support/engine_rig.h). What is checked: the window math
 * (no 429 ever, and no faster than the window allows), the order of dials,
 * a 429 retried rather than failing the call, and the snapshot
 * (engine_budget_snapshot) other threads read. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../support/engine_rig.h"
#include "store/store.h"

#define SAY_HANGUP "<Response><Say>Hi</Say><Hangup/></Response>"

/* Creates a call running twiml and waits for its 201 (queued: it is
 * answered before the dial). */
static void start_call(ut_rig *r, const char *twiml, char sid[SID_SIZE])
{
    ut_ereq q;
    store_call call;
    ut_ereq_init(&q);
    ut_rig_call(&call, "+15005550100", json_pack("{s:s}", "twiml", twiml));
    snprintf(sid, SID_SIZE, "%s", call.sid);
    assert_true(engine_originate(r->a.engine, ut_ereq_reply(&q), &call, NULL));
    store_call_fini(&call);
    assert_true(ut_waiter_wait(&q.done, 1, UT_RIG_WAIT_MS));
    assert_int_equal(q.status, 201);
    assert_non_null(strstr(q.answer, "\"status\":\"queued\""));
    ut_ereq_fini(&q);
}

/* "2026-12-07T05:34:22.123Z" → ms since the epoch. */
static int64_t iso_ms(const char *iso)
{
    struct tm tm = {0};
    assert_non_null(iso);
    const char *rest = strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(rest);
    int ms = *rest == '.' ? atoi(rest + 1) : 0;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

static json_t *sim_key(ut_rig *r)
{
    int st = 0;
    json_t *k = ut_rig_sim(r, "GET", "/sim/keys/" UT_RIG_KEY, NULL, &st);
    assert_int_equal(st, 200);
    return k;
}

static json_int_t key_int(json_t *k, const char *a, const char *b)
{
    json_t *v = json_object_get(json_object_get(k, "key"), a);
    if (b) v = json_object_get(v, b);
    assert_true(json_is_number(v));
    return (json_int_t)json_number_value(v);
}

/* 5 calls of 3 counted requests each on a key allowed 6 per 1.5 s: the 15
 * requests need three windows' worth, so the last cannot go before two
 * windows have passed; none is refused, and the calls are dialled in the
 * order they were created. */
static void test_window_is_kept_and_order_too(void **state)
{
    (void)state;
    ut_rig r;
    enum { N = 5 };
    char sids[N][SID_SIZE];
    /* The simulator as strict as Kaphila from its start; twigate learns the
     * limit from GET /api/me before its first counted request. (Set through
     * /sim/keys after the start, the limit raced the reconciler's first
     * listing, whose /api/me could read the simulator's default, unlimited,
     * and twigate would not ask again for kaphila.me_interval_ms: 429s.) */
    const char *sets[] = {"kaphila.rate_window_ms=1500", "sim.rate_limit=6",
                          "sim.rate_window_ms=1500", NULL};
    int st = 0;

    ut_rig_start(&r, sets);
    int64_t t0 = ut_now_ms();
    for (int i = 0; i < N; i++) start_call(&r, SAY_HANGUP, sids[i]);
    for (int i = 0; i < N; i++) json_decref(ut_rig_sim_wait_status(&r, sids[i], "completed"));
    int64_t took = ut_now_ms() - t0;
    assert_true(took >= 2 * 1500);

    json_t *k = sim_key(&r);
    assert_int_equal(key_int(k, "rateLimited", NULL), 0);
    assert_int_equal(key_int(k, "requests", "makecall"), N);
    assert_int_equal(key_int(k, "requests", "hangup"), N);
    json_decref(k);

    /* Dial order: each call's /makecall reached the simulator no earlier
     * than the one created before it, up to those sent in the same instant
     * (separate connections may arrive either way round: 50 ms of slack, or
     * what the machine's own scheduling lateness measures now, if more: a
     * loaded machine swapped two by more than 50 ms once). */
    int64_t prev = 0;
    for (int j = 0; j < N; j++) {
        char path[256];
        snprintf(path, sizeof path, "/sim/calls/%s", sids[j]);
        json_t *t = ut_rig_sim(&r, "GET", path, NULL, &st);
        assert_int_equal(st, 200);
        int64_t at = iso_ms(json_string_value(json_object_get(t, "createdAt")));
        json_decref(t);
        int64_t slack = UT_ON_TIME_MS > 50 ? UT_ON_TIME_MS : 50;
        assert_true(at >= prev - slack);
        prev = at;
    }

    /* The snapshot: the limit learned from /api/me, nothing waiting, the
     * key named by a label that is not the key. */
    engine_budget_key snap[4];
    size_t n = engine_budget_snapshot(r.a.engine, snap, 4);
    assert_int_equal(n, 1);
    assert_int_equal(snap[0].limit, 6);
    assert_int_equal(snap[0].window_ms, 1500);
    assert_int_equal(snap[0].queued_calls, 0);
    assert_int_equal(snap[0].received_429, 0);
    assert_true(snap[0].used <= 6);
    assert_int_equal(strlen(snap[0].label), 8);
    for (int j = 0; j < 8; j++) assert_true(isxdigit((unsigned char)snap[0].label[j]));
    assert_null(strstr(UT_RIG_KEY, snap[0].label));
    ut_rig_stop(&r);
}

/* The call-control paths of a finished call's transcript, "a;b;c;". */
static void transcript_paths(json_t *t, char *out, size_t size)
{
    size_t i, len = 0;
    json_t *rq;
    out[0] = '\0';
    json_array_foreach(json_object_get(t, "requests"), i, rq)
        len += (size_t)snprintf(out + len, len < size ? size - len : 0, "%s;",
                                json_string_value(json_object_get(rq, "path")));
}

/* Starts the rig with the simulator refusing the next `count` /voice
 * requests with 429 (another client on the key), runs a Say-then-Hangup
 * call to its end and checks it said its text before hanging up, the
 * 429s injected. The rig is left running for more checks. */
static void said_despite_429s(ut_rig *r, int count)
{
    char sid[SID_SIZE], fail[96], paths[256];
    int st = 0;
    ut_rig_start(r, NULL);
    snprintf(fail, sizeof fail, "{\"status\":429,\"count\":%d,\"endpoint\":\"/voice\"}", count);
    json_decref(ut_rig_sim(r, "POST", "/sim/fail", fail, &st));
    assert_true(st == 200 || st == 204);
    start_call(r, SAY_HANGUP, sid);
    json_t *t = ut_rig_sim_wait_status(r, sid, "completed");
    transcript_paths(t, paths, sizeof paths);
    assert_string_equal(paths, "/makecall;/voice;/hangup;");
    json_decref(t);
    ut_rig_wait_row(r, sid, "completed");
    json_t *k = sim_key(r);
    assert_int_equal(key_int(k, "injected", "429"), count);
    json_decref(k);
}

/* A 429 the budget did not expect (another client on the key) puts the
 * command back: the call is not hung up, its text is spoken, the 429 is
 * counted. */
static void test_unexpected_429_is_retried(void **state)
{
    (void)state;
    ut_rig r;
    said_despite_429s(&r, 1);
    engine_budget_key snap[4];
    assert_int_equal(engine_budget_snapshot(r.a.engine, snap, 4), 1);
    assert_int_equal(snap[0].received_429, 1);
    ut_rig_stop(&r);
}

/* 6 calls created at once (in one turn of the engine's loop, before any
 * is dialled) on a key allowed 6 requests per 3 s: each dial must leave
 * room for the call's <Say> and hang-up, so at most 2 go out per window.
 * Dialling all 6 at once left their /voice requests waiting a window —
 * longer than the <Say>'s fallback — and every call hung up without its
 * speech (the budget section of the bench: 0 of 60 said). */
static void test_a_burst_of_creates_leaves_room_for_their_commands(void **state)
{
    (void)state;
    ut_rig r;
    enum { N = 6, WIN = 3000 };
    char sids[N][SID_SIZE];
    ut_ereq q[N];
    const char *sets[] = {"kaphila.rate_window_ms=3000", "sim.rate_limit=6",
                          "sim.rate_window_ms=3000", NULL};
    ut_rig_start(&r, sets);
    for (int i = 0; i < N; i++) {
        store_call call;
        ut_ereq_init(&q[i]);
        ut_rig_call(&call, "+15005550100", json_pack("{s:s}", "twiml", SAY_HANGUP));
        snprintf(sids[i], SID_SIZE, "%s", call.sid);
        assert_true(engine_originate(r.a.engine, ut_ereq_reply(&q[i]), &call, NULL));
        store_call_fini(&call);
    }
    for (int i = 0; i < N; i++) {
        assert_true(ut_waiter_wait(&q[i].done, 1, UT_RIG_WAIT_MS));
        assert_int_equal(q[i].status, 201);
        ut_ereq_fini(&q[i]);
    }
    int64_t dialled[N];
    for (int i = 0; i < N; i++) {
        json_t *t = ut_rig_sim_wait_status(&r, sids[i], "completed");
        char paths[256];
        transcript_paths(t, paths, sizeof paths);
        assert_string_equal(paths, "/makecall;/voice;/hangup;");
        dialled[i] = iso_ms(json_string_value(json_object_get(t, "createdAt")));
        json_decref(t);
    }
    /* No window holds more dials than leave room for their commands. */
    for (int i = 0; i < N; i++) {
        int in_window = 0;
        for (int j = 0; j < N; j++)
            in_window += dialled[j] >= dialled[i] && dialled[j] < dialled[i] + WIN;
        assert_true(in_window <= 2);
    }
    json_t *k = sim_key(&r);
    assert_int_equal(key_int(k, "rateLimited", NULL), 0);
    json_decref(k);
    ut_rig_stop(&r);
}

/* A <Say> whose /voice is refused twice by a 429 (another client on the
 * key) is retried after 1 s and then 2 s — longer than the <Say>'s own
 * fallback (2.2 s for "Hi"). The fallback counts from Kaphila's answer, so
 * the call still says it before hanging up. */
static void test_a_playback_held_by_the_budget_is_still_said(void **state)
{
    (void)state;
    ut_rig r;
    said_despite_429s(&r, 2);
    ut_rig_stop(&r);
}

/* Kaphila lowers a key's limit while twigate runs: the first 429 makes
 * twigate ask GET /api/me again at once, instead of running on the old
 * figure until kaphila.me_interval_ms (5 minutes by default) has passed. */
static void test_a_429_relearns_the_limit(void **state)
{
    (void)state;
    ut_rig r;
    enum { N = 4 };
    char sid[SID_SIZE], sids[N][SID_SIZE];
    int st = 0;
    engine_budget_key snap[4];

    /* The simulator unlimited, as the key starts; twigate's window is the
     * one the limit will come with (the window is configured, not learned). */
    const char *sets[] = {"kaphila.rate_window_ms=2000", NULL};
    ut_rig_start(&r, sets);
    start_call(&r, SAY_HANGUP, sid);
    json_decref(ut_rig_sim_wait_status(&r, sid, "completed"));
    assert_int_equal(engine_budget_snapshot(r.a.engine, snap, 4), 1);
    assert_int_equal(snap[0].limit, 0);   /* learned: unlimited */

    json_decref(ut_rig_sim(&r, "POST", "/sim/keys/" UT_RIG_KEY,
                           "{\"rateLimit\":3,\"rateWindowMs\":2000}", &st));
    assert_int_equal(st, 200);
    for (int i = 0; i < N; i++) start_call(&r, SAY_HANGUP, sids[i]);
    for (int i = 0; i < N; i++) json_decref(ut_rig_sim_wait_status(&r, sids[i], "completed"));
    assert_int_equal(engine_budget_snapshot(r.a.engine, snap, 4), 1);
    assert_int_equal(snap[0].limit, 3);
    assert_true(snap[0].received_429 >= 1);
    ut_rig_stop(&r);
}

/* The queue's first call waits only for the room its key keeps for the two
 * live calls' later commands (6 per 120 s: two /makecalls used, 2 × 2
 * reserved). The far end hangs one of them up: the call ends on Kaphila's
 * word, twigate sends no /hangup, so no answer wakes the key, and the room
 * its reserve held must dial the queue at once. (It waited for a slot of
 * the window to free, two minutes here: the same stall left an adopted
 * queue undialled in test_cluster.py.) */
static void test_a_live_call_ended_by_the_far_end_lets_the_queue_dial(void **state)
{
    (void)state;
    ut_rig r;
    const char *sets[] = {"kaphila.rate_window_ms=120000", "sim.rate_limit=6",
                          "sim.rate_window_ms=120000", NULL};
    const char *pause = "<Response><Pause length=\"100\"/></Response>";
    char a[SID_SIZE], b[SID_SIZE], c[SID_SIZE], path[128];
    int st = 0;
    ut_rig_start(&r, sets);
    start_call(&r, pause, a);
    start_call(&r, pause, b);
    ut_rig_wait_row(&r, a, "in-progress");
    ut_rig_wait_row(&r, b, "in-progress");
    start_call(&r, pause, c);

    /* c is in the queue (the snapshot says so), not at the simulator. */
    engine_budget_key snap[1];
    int64_t until = ut_now_ms() + UT_RIG_WAIT_MS;
    while (!(engine_budget_snapshot(r.a.engine, snap, 1) == 1 && snap[0].queued_calls == 1) &&
           ut_now_ms() < until) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(snap[0].queued_calls, 1);
    snprintf(path, sizeof path, "/sim/calls/%s", c);
    json_decref(ut_rig_sim(&r, "GET", path, NULL, &st));
    assert_int_equal(st, 404);

    snprintf(path, sizeof path, "/sim/calls/%s/hangup", a);
    json_decref(ut_rig_sim(&r, "POST", path, NULL, &st));
    assert_true(st == 200 || st == 202 || st == 204);
    ut_rig_wait_row(&r, a, "completed");
    ut_rig_wait_row(&r, c, "in-progress");   /* within UT_RIG_WAIT_MS, not the window */
    json_t *k = sim_key(&r);
    assert_int_equal(key_int(k, "rateLimited", NULL), 0);
    assert_int_equal(key_int(k, "requests", "makecall"), 3);
    json_decref(k);
    ut_rig_stop(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_is_kept_and_order_too),
        cmocka_unit_test(test_unexpected_429_is_retried),
        cmocka_unit_test(test_a_429_relearns_the_limit),
        cmocka_unit_test(test_a_burst_of_creates_leaves_room_for_their_commands),
        cmocka_unit_test(test_a_playback_held_by_the_budget_is_still_said),
        cmocka_unit_test(test_a_live_call_ended_by_the_far_end_lets_the_queue_dial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
