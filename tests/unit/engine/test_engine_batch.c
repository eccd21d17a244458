/* Unit tests for the engine's group commit (engine.c, "2. transactions"),
 * driven without HTTP through engine.h on a real SQLite file and the
 * in-process simulator (tests/unit/support/engine_rig.h).
 *
 * The engine thread is held by a message of ours while the creates queue
 * up behind it, so they are all taken in one loop iteration; each reply
 * callback then looks at the database through a connection of its own,
 * which sees committed rows only. A lost batch is made with a real SQLite
 * refusal: a trigger the test adds makes one row update fail, as a full
 * disk would, with no hook in the engine. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "../support/engine_rig.h"
#include "store/store.h"

#define N_CREATES 5   /* well under the loop's DRAIN_BATCH (16): one iteration */

typedef struct gate {
    ut_waiter entered, release;
} gate;

/* Holds the engine thread until the test has queued its work. */
static void hold(engine *e, void *arg)
{
    (void)e;
    gate *g = arg;
    ut_waiter_add(&g->entered, 1);
    assert_true(ut_waiter_wait(&g->release, 1, UT_RIG_WAIT_MS));
}

typedef struct probe {
    store      *st;
    const char *sids[N_CREATES];
    int         visible;   /* rows committed when the reply left */
} probe;

/* On the engine thread, as the reply leaves: which of the calls' rows can
 * another connection read? */
static void count_committed(ut_ereq *q, void *arg)
{
    (void)q;
    probe *p = arg;
    store_conn *c = store_conn_acquire(p->st);
    assert_non_null(c);
    p->visible = 0;
    for (int i = 0; i < N_CREATES; i++) {
        store_call row;
        if (store_call_get_by_sid(c, p->sids[i], &row) == STORE_OK) {
            p->visible++;
            store_call_fini(&row);
        }
    }
    store_conn_release(c);
}

typedef struct mid_probe {
    probe     p;
    ut_waiter ran;
} mid_probe;

/* Queued right behind the creates, so it runs in their iteration: the
 * batch holding their rows must still be open (nothing visible yet). */
static void probe_mid_batch(engine *e, void *arg)
{
    (void)e;
    mid_probe *m = arg;
    count_committed(NULL, &m->p);
    ut_waiter_add(&m->ran, 1);
}

/* N creates taken in one iteration share one commit: right after the last
 * of them, in the same iteration, none of their rows is committed yet (a
 * commit per create would show them); and no reply leaves before that
 * commit: when each 201 goes out, every row is already durable. */
static void test_creates_share_one_commit(void **state)
{
    (void)state;
    ut_rig r;
    gate g;
    ut_ereq q[N_CREATES];
    store_call calls[N_CREATES];
    probe pr[N_CREATES];
    char sids[N_CREATES][SID_SIZE];

    ut_rig_start(&r, NULL);
    ut_waiter_init(&g.entered);
    ut_waiter_init(&g.release);
    assert_true(engine_submit(r.a.engine, hold, &g));
    assert_true(ut_waiter_wait(&g.entered, 1, UT_RIG_WAIT_MS));

    for (int i = 0; i < N_CREATES; i++) {
        json_t *p = json_pack("{s:s}", "twiml", "<Response><Hangup/></Response>");
        ut_rig_call(&calls[i], "+15005550100", p);
        snprintf(sids[i], sizeof sids[i], "%s", calls[i].sid);
    }
    for (int i = 0; i < N_CREATES; i++) {
        pr[i].st = r.a.store;
        for (int k = 0; k < N_CREATES; k++) pr[i].sids[k] = sids[k];
        ut_ereq_init(&q[i]);
        q[i].on_reply = count_committed;
        q[i].on_reply_arg = &pr[i];
        assert_true(engine_originate(r.a.engine, ut_ereq_reply(&q[i]), &calls[i], NULL));
        store_call_fini(&calls[i]);
    }
    mid_probe mid = {.p.st = r.a.store};
    for (int k = 0; k < N_CREATES; k++) mid.p.sids[k] = sids[k];
    mid.p.visible = -1;
    ut_waiter_init(&mid.ran);
    assert_true(engine_submit(r.a.engine, probe_mid_batch, &mid));
    ut_waiter_add(&g.release, 1);

    assert_true(ut_waiter_wait(&mid.ran, 1, UT_RIG_WAIT_MS));
    assert_int_equal(mid.p.visible, 0);

    for (int i = 0; i < N_CREATES; i++) {
        assert_true(ut_waiter_wait(&q[i].done, 1, UT_RIG_WAIT_MS));
        assert_int_equal(q[i].status, 201);
        assert_int_equal(q[i].answers, 1);
        json_t *j = json_loads(q[i].answer, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(j, "sid")), sids[i]);
        assert_string_equal(json_string_value(json_object_get(j, "status")), "queued");
        json_decref(j);
        /* The whole burst was committed before the first answer. */
        assert_int_equal(pr[i].visible, N_CREATES);
    }
    /* … and only then dialled: each reaches Kaphila and is hung up. */
    for (int i = 0; i < N_CREATES; i++) json_decref(ut_rig_sim_wait_status(&r, sids[i], "completed"));

    ut_rig_stop(&r);
    for (int i = 0; i < N_CREATES; i++) ut_ereq_fini(&q[i]);
    ut_waiter_fini(&g.entered);
    ut_waiter_fini(&g.release);
    ut_waiter_fini(&mid.ran);
}

/* A create the engine refuses (unknown account) is answered at once with a
 * Twilio error, stores nothing and dials nothing. */
static void test_create_unknown_account(void **state)
{
    (void)state;
    ut_rig r;
    ut_ereq q;
    store_call call;
    char sid[SID_SIZE];

    ut_rig_start(&r, NULL);
    ut_ereq_init(&q);
    ut_rig_call(&call, "+15005550100", json_pack("{s:s}", "twiml", "<Response/>"));
    snprintf(call.account_sid, sizeof call.account_sid, "AC%032d", 9);
    snprintf(sid, sizeof sid, "%s", call.sid);
    assert_true(engine_originate(r.a.engine, ut_ereq_reply(&q), &call, NULL));
    store_call_fini(&call);
    assert_true(ut_waiter_wait(&q.done, 1, UT_RIG_WAIT_MS));
    assert_int_equal(q.status, 401);
    assert_int_equal(q.answers, 1);

    store_conn *c = store_conn_acquire(r.a.store);
    store_call row;
    assert_int_equal(store_call_get_by_sid(c, sid, &row), STORE_NOTFOUND);
    store_conn_release(c);
    int st = 0;
    json_t *t = ut_rig_sim(&r, "GET", "/sim/calls", NULL, &st);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(t, "calls")), 0);
    json_decref(t);
    ut_rig_stop(&r);
    ut_ereq_fini(&q);
}

typedef struct ack_probe {
    store *st;
    char   answered_status[STORE_STATUS_LEN];   /* the row's, as call.answered was acked */
    int    acks;
} ack_probe;

/* As the engine answers Kaphila's POST of an event: what does the stored
 * row say now? */
static void row_at_ack(ut_ereq *q, void *arg)
{
    ack_probe *p = arg;
    json_t *ev = json_loadb(buf_str(&q->body), q->body.len, 0, NULL);
    const char *name = json_string_value(json_object_get(ev, "event"));
    p->acks++;
    if (name && !strcmp(name, "call.answered")) {
        store_conn *c = store_conn_acquire(p->st);
        store_call row;
        assert_non_null(c);
        /* The test's one call: the newest row of the account. */
        store_call_filter f = {.account_sid = UT_RIG_ACCOUNT};
        int n = 0;
        assert_int_equal(store_call_list(c, &f, 0, 0, 1, &row, &n), STORE_OK);
        assert_int_equal(n, 1);
        snprintf(p->answered_status, sizeof p->answered_status, "%s", row.status);
        store_call_fini(&row);
        store_conn_release(c);
    }
    json_decref(ev);
}

/* Kaphila's event is answered only after the batch holding its effects has
 * committed: when call.answered is acked, another connection already reads
 * the call as in-progress. */
static void test_event_acked_after_commit(void **state)
{
    (void)state;
    ut_rig r;
    ut_ereq q;
    store_call call;
    char sid[SID_SIZE];
    ack_probe ap = {0};

    ut_rig_start(&r, NULL);
    ap.st = r.a.store;
    r.kevent_probe = row_at_ack;
    r.kevent_probe_arg = &ap;
    ut_ereq_init(&q);
    ut_rig_call(&call, "+15005550100",
                json_pack("{s:s}", "twiml", "<Response><Pause length=\"1\"/><Hangup/></Response>"));
    snprintf(sid, sizeof sid, "%s", call.sid);
    assert_true(engine_originate(r.a.engine, ut_ereq_reply(&q), &call, NULL));
    store_call_fini(&call);
    assert_true(ut_waiter_wait(&q.done, 1, UT_RIG_WAIT_MS));
    assert_int_equal(q.status, 201);
    json_decref(ut_rig_sim_wait_status(&r, sid, "completed"));
    ut_rig_stop(&r);   /* every event the sim posted has been answered */

    assert_true(ap.acks >= 3);   /* initiated, answered, ended */
    assert_string_equal(ap.answered_status, "in-progress");
    ut_ereq_fini(&q);
}

/* The test's own connection runs sql on the engine's database. */
static void db_exec(ut_rig *r, const char *sql)
{
    char path[320];
    sqlite3 *db = NULL;
    char *err = NULL;
    ut_rig_db_path(r, path, sizeof path);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, UT_RIG_WAIT_MS);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) fail_msg("%s: %s", sql, err);
    sqlite3_close(db);
}

static void drop_trigger(ut_rig *r) { db_exec(r, "DROP TRIGGER unit_refuse;"); }

/* The raw events waiting for replay: how many, how many are call.ended, and
 * whether they all belong to one call (sid). */
typedef struct pending { char sid[SID_SIZE]; int n, ended; bool one_call; } pending;

static void count_pending(int64_t id, const char *call_sid, const char *body, void *arg)
{
    (void)id;
    pending *p = arg;
    if (!p->n++) {
        snprintf(p->sid, sizeof p->sid, "%s", call_sid);
        p->one_call = true;
    } else if (strcmp(p->sid, call_sid) != 0) {
        p->one_call = false;
    }
    json_t *ev = json_loads(body, 0, NULL);
    const char *name = json_string_value(json_object_get(ev, "event"));
    if (name && !strcmp(name, "call.ended")) p->ended++;
    json_decref(ev);
}

static pending pending_events(ut_rig *r)
{
    pending p = {0};
    store_conn *c = store_conn_acquire(r->a.store);
    assert_non_null(c);
    assert_int_equal(store_kevent_each_pending(c, count_pending, &p), STORE_OK);
    store_conn_release(c);
    return p;
}

typedef struct ended_ack { int status; } ended_ack;

static void note_ended_ack(ut_ereq *q, void *arg)
{
    json_t *ev = json_loadb(buf_str(&q->body), q->body.len, 0, NULL);
    const char *name = json_string_value(json_object_get(ev, "event"));
    if (name && !strcmp(name, "call.ended")) ((ended_ack *)arg)->status = q->status;
    json_decref(ev);
}

/* A batch that cannot be written is lost whole: the create that joined it
 * is answered 503 and never dialled (no row, no /makecall), and Kaphila's
 * event whose effects it held is stored raw instead and acked 200, then
 * replayed at the next start. The event is a real one: the simulator's
 * far-end hang-up of a live call, taken in the create's iteration. */
static void test_lost_batch(void **state)
{
    (void)state;
    ut_rig r;
    gate g;
    ut_ereq qb, qa;
    store_call call;
    char sid_a[SID_SIZE], sid_b[SID_SIZE], path[128];
    ended_ack ack = {0};

    ut_rig_start(&r, NULL);
    r.kevent_probe = note_ended_ack;
    r.kevent_probe_arg = &ack;
    ut_ereq_init(&qb);
    ut_ereq_init(&qa);
    ut_rig_call(&call, "+15005550100",
                json_pack("{s:s}", "twiml", "<Response><Pause length=\"60\"/></Response>"));
    snprintf(sid_b, sizeof sid_b, "%s", call.sid);
    assert_true(engine_originate(r.a.engine, ut_ereq_reply(&qb), &call, NULL));
    store_call_fini(&call);
    assert_true(ut_waiter_wait(&qb.done, 1, UT_RIG_WAIT_MS));
    ut_rig_wait_row(&r, sid_b, "in-progress");

    /* From now on the disk refuses the write that ends a call. */
    db_exec(&r, "CREATE TRIGGER unit_refuse BEFORE UPDATE OF status ON calls"
                " WHEN NEW.status = 'completed'"
                " BEGIN SELECT RAISE(ABORT, 'unit test: the disk says no'); END;");

    ut_waiter_init(&g.entered);
    ut_waiter_init(&g.release);
    assert_true(engine_submit(r.a.engine, hold, &g));
    assert_true(ut_waiter_wait(&g.entered, 1, UT_RIG_WAIT_MS));
    ut_rig_call(&call, "+15005550100", json_pack("{s:s}", "twiml", "<Response><Hangup/></Response>"));
    snprintf(sid_a, sizeof sid_a, "%s", call.sid);
    assert_true(engine_originate(r.a.engine, ut_ereq_reply(&qa), &call, NULL));
    store_call_fini(&call);
    pthread_mutex_lock(&r.kev_in.mu);
    int kev = r.kev_in.count;
    pthread_mutex_unlock(&r.kev_in.mu);
    snprintf(path, sizeof path, "/sim/calls/%s/hangup", sid_b);
    int st = 0;
    json_decref(ut_rig_sim(&r, "POST", path, NULL, &st));
    assert_int_equal(st, 200);
    assert_true(ut_waiter_wait(&r.kev_in, kev + 1, UT_RIG_WAIT_MS));   /* call.ended queued */
    ut_waiter_add(&g.release, 1);

    /* The create: 503, nothing stored, nothing dialled. */
    assert_true(ut_waiter_wait(&qa.done, 1, UT_RIG_WAIT_MS));
    assert_int_equal(qa.status, 503);
    json_t *j = json_loads(qa.answer, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "code")), 20503);
    json_decref(j);
    store_conn *c = store_conn_acquire(r.a.store);
    store_call row;
    assert_int_equal(store_call_get_by_sid(c, sid_a, &row), STORE_NOTFOUND);
    assert_int_equal(store_call_get_by_sid(c, sid_b, &row), STORE_OK);
    assert_string_equal(row.status, "in-progress");   /* its end was in the lost batch */
    store_call_fini(&row);
    store_conn_release(c);
    json_t *t = ut_rig_sim(&r, "GET", "/sim/calls", NULL, &st);
    assert_int_equal(json_array_size(json_object_get(t, "calls")), 1);   /* B only */
    json_decref(t);

    /* The event: acked 200 once stored raw for replay. */
    json_decref(ut_rig_sim_wait_status(&r, sid_b, "completed"));
    assert_int_equal(ack.status, 200);
    /* B's call.ended, and whatever else of B's reached the held engine
     * before the release (its recording events follow the hang-up and,
     * on a loaded machine, can join the same lost batch). */
    pending p = pending_events(&r);
    assert_true(p.n >= 1);
    assert_true(p.one_call);
    assert_string_equal(p.sid, sid_b);
    assert_int_equal(p.ended, 1);

    /* The disk takes writes again; at the next start the event is replayed. */
    ut_rig_restart_engine(&r, drop_trigger);
    ut_rig_wait_row(&r, sid_b, "completed");
    assert_int_equal(pending_events(&r).n, 0);
    /* Still only B ever reached Kaphila: the refused create was never dialled. */
    t = ut_rig_sim(&r, "GET", "/sim/calls", NULL, &st);
    assert_int_equal(json_array_size(json_object_get(t, "calls")), 1);
    json_decref(t);

    ut_rig_stop(&r);
    ut_ereq_fini(&qa);
    ut_ereq_fini(&qb);
    ut_waiter_fini(&g.entered);
    ut_waiter_fini(&g.release);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_creates_share_one_commit),
        cmocka_unit_test(test_create_unknown_account),
        cmocka_unit_test(test_event_acked_after_commit),
        cmocka_unit_test(test_lost_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
