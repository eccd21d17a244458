/* test_store_cluster — store/cluster.h through the public API, on the
 * database store_rig picks (TWIGATE_TEST_DB_URL: PostgreSQL, run by
 * tests/integration/test_store_pg.py; unset: SQLite, where the database is
 * one process's and every operation answers "nothing to do").
 *
 * On PostgreSQL two stores play two instances: ownership stamped at insert
 * and the start-up reads limited to the owner, one name up at a time, the
 * inbox read by the owner only, the fence of an instance whose lease ran
 * out, adoption of its call, the refused write of the fenced one, and the
 * shared budget's count. Names and SIDs are unique per run, so a database
 * reused between runs answers the same. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/cluster.h"
#include "store/recstore.h"
#include "store/store.h"
#include "../support/store_rig.h"

typedef struct seen {
    const char *sid, *ended_sid;
    int calls, inbox, ended;
    int64_t inbox_id;
} seen;

static void on_call(store_call *call, void *arg)
{
    seen *s = arg;
    if (!strcmp(call->sid, s->sid)) s->calls++;
}

static void on_inbox(int64_t id, const char *call_sid, const char *kind, const char *body,
                     void *arg)
{
    seen *s = arg;
    if (strcmp(call_sid, s->sid) != 0) return;
    assert_string_equal(kind, "kevent");
    assert_string_equal(body, "{\"event\":\"dtmf.received\"}");
    s->inbox++;
    s->inbox_id = id;
}

static void on_kevent(int64_t id, const char *call_sid, const char *body, void *arg)
{
    (void)id; (void)call_sid; (void)body; (void)arg;
}

static void on_outbox(store_outbox *o, void *arg)
{
    (void)o; (void)arg;
}

static void on_ended(const char *call_sid, void *arg)
{
    seen *s = arg;
    if (s && s->ended_sid && !strcmp(call_sid, s->ended_sid)) s->ended++;
}

/* Whether sid is among the calls rec_db_pending_calls lists on c. */
static bool pending_rec(store_conn *c, const char *sid)
{
    char (*sids)[SID_SIZE] = calloc(4096, SID_SIZE);
    int n = 0;
    bool found = false;
    assert_non_null(sids);
    assert_int_equal(rec_db_pending_calls(c, sids, 4096, &n), STORE_OK);
    for (int i = 0; i < n; i++) found |= !strcmp(sids[i], sid);
    free(sids);
    return found;
}

static void test_call_live_kaphila_on_every_backend(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE], kid[STORE_KID_LEN];
    store_call call;
    ut_store_sid(acct, "AC");
    snprintf(kid, sizeof kid, "%u.%d", ut_store_run(), 7);
    ut_store_make_call(&call, acct, "in-progress", 1700000000000LL);
    snprintf(call.kaphila_id, sizeof call.kaphila_id, "%s", kid);
    ut_store_insert_call(f->c, &call);
    assert_int_equal(store_call_live_kaphila(f->c, kid), STORE_OK);
    assert_int_equal(store_call_live_kaphila(f->c, "no-such-id"), STORE_NOTFOUND);
    snprintf(call.status, sizeof call.status, "completed");
    assert_int_equal(store_call_update(f->c, &call), STORE_OK);
    assert_int_equal(store_call_live_kaphila(f->c, kid), STORE_NOTFOUND);
    store_call_fini(&call);
}

static void test_sqlite_is_one_instance(void **state)
{
    ut_store *f = *state;
    char err[256] = "";
    int n = -1, fenced = -1;
    int64_t wait = -1;
    static const store_adopt_cbs cbs = {on_call, on_kevent, on_outbox, on_ended};
    if (ut_store_url()) skip();
    assert_false(store_shared(f->s));
    assert_int_equal(store_instance_join(f->s, "one", "t", 3000, 0, err, sizeof err), STORE_OK);
    assert_string_equal(store_instance(f->s), "");
    assert_int_equal(store_instance_renew(f->c, 3000), STORE_OK);
    assert_int_equal(store_adopt(f->c, 10, &cbs, NULL, &n, &fenced), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(fenced, 0);
    assert_int_equal(store_budget_take(f->c, "k", 1, 1000, 0, 0, 0, &wait), STORE_OK);
    assert_int_equal(store_budget_take(f->c, "k", 1, 1000, 0, 0, 0, &wait), STORE_OK);
    assert_int_equal(wait, 0);
}

/* Adoption passes until A's lease (500 ms, the database's clock) has run
 * out and B has taken the call; bounded so a bug fails instead of hanging. */
static void adopt_until_taken(store_conn *b, seen *taken)
{
    static const store_adopt_cbs cbs = {on_call, on_kevent, on_outbox, on_ended};
    for (int i = 0; i < 100 && !taken->calls; i++) {
        int n = 0, fenced = 0;
        assert_int_equal(store_adopt(b, 1000, &cbs, taken, &n, &fenced), STORE_OK);
        if (!taken->calls) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    assert_int_equal(taken->calls, 1);
}

static void test_two_instances(void **state)
{
    ut_store *f = *state;
    char err[256] = "", a_id[64], b_id[64], acct[SID_SIZE];
    if (!ut_store_url()) skip();
    store *a = ut_store_open(f), *b = ut_store_open(f);
    assert_true(store_shared(a));
    snprintf(a_id, sizeof a_id, "ut-a-%u", ut_store_run());
    snprintf(b_id, sizeof b_id, "ut-b-%u", ut_store_run());
    assert_int_equal(store_instance_join(a, a_id, "t", 500, 0, err, sizeof err), STORE_OK);
    assert_int_equal(store_instance_join(b, b_id, "t", 60000, 0, err, sizeof err), STORE_OK);
    /* The same name while it is up: refused, and said why. */
    store *a2 = ut_store_open(f);
    assert_int_equal(store_instance_join(a2, a_id, "t", 500, 0, err, sizeof err),
                     STORE_CONFLICT);
    assert_non_null(strstr(err, "up elsewhere"));
    store_close(a2);
    store_conn *ca = store_conn_acquire(a), *cb = store_conn_acquire(b);

    /* A's call is A's: its start-up read sees it, B's does not. */
    store_call call;
    ut_store_sid(acct, "AC");
    ut_store_make_call(&call, acct, "in-progress", 1700000000000LL);
    ut_store_insert_call(ca, &call);
    seen sa = {.sid = call.sid}, sb = {.sid = call.sid};
    assert_int_equal(store_call_each_live(ca, on_call, &sa), STORE_OK);
    assert_int_equal(store_call_each_live(cb, on_call, &sb), STORE_OK);
    assert_int_equal(sa.calls, 1);
    assert_int_equal(sb.calls, 0);

    /* An event B received for it: in the inbox for A, not for B. */
    const char *ev = "{\"event\":\"dtmf.received\"}";
    assert_int_equal(store_inbox_insert(cb, call.sid, "kevent", ev, strlen(ev)), STORE_OK);
    assert_int_equal(store_inbox_each(cb, 100, on_inbox, &sb), STORE_OK);
    assert_int_equal(sb.inbox, 0);
    assert_int_equal(store_inbox_each(ca, 100, on_inbox, &sa), STORE_OK);
    assert_int_equal(sa.inbox, 1);

    /* An ended call of A whose recording still waits for its media: A's
     * to finish, not B's, until B adopts it. */
    store_call done;
    rec_row rec;
    ut_store_make_call(&done, acct, "completed", 1700000000000LL);
    ut_store_insert_call(ca, &done);
    memset(&rec, 0, sizeof rec);
    ut_store_sid(rec.sid, "RE");
    snprintf(rec.account_sid, sizeof rec.account_sid, "%s", acct);
    snprintf(rec.call_sid, sizeof rec.call_sid, "%s", done.sid);
    snprintf(rec.source, sizeof rec.source, "OutboundAPI");
    snprintf(rec.status, sizeof rec.status, "processing");
    snprintf(rec.track, sizeof rec.track, "both");
    rec.channels = 1;
    rec.date_created = rec.date_updated = rec.start_time = 1700000000000LL;
    rec.duration = rec.window_ms = -1;
    assert_int_equal(rec_db_insert(ca, &rec), STORE_OK);
    assert_true(pending_rec(ca, done.sid));
    assert_false(pending_rec(cb, done.sid));

    /* A stops renewing (paused): B fences it and takes the call, with the
     * inbox row and the ended call's recording; A's renewal and its write of
     * the call are refused. */
    seen taken = {.sid = call.sid, .ended_sid = done.sid};
    adopt_until_taken(cb, &taken);
    assert_int_equal(taken.ended, 1);
    assert_true(pending_rec(cb, done.sid));
    assert_false(pending_rec(ca, done.sid));
    store_call_fini(&done);
    assert_int_equal(store_instance_renew(ca, 500), STORE_CONFLICT);
    assert_int_equal(store_instance_renew(cb, 60000), STORE_OK);
    snprintf(call.status, sizeof call.status, "completed");
    assert_int_equal(store_call_update(ca, &call), STORE_NOTFOUND);
    /* In a batch, as the engine writes, PostgreSQL's refusal comes at the
     * commit (the batch's writes are sent ahead, pg_defer): either way
     * nothing of the batch is kept. */
    json_t *rq = json_pack("{s:s}", "url", "u"), *rs = json_pack("{s:i}", "status", 200);
    assert_int_equal(store_begin(ca), STORE_OK);
    assert_int_equal(store_event_insert(ca, acct, call.sid, 1, rq, NULL, rs), STORE_OK);
    store_status up = store_call_update(ca, &call);
    store_status cm = up == STORE_OK ? store_commit(ca) : STORE_ERROR;
    if (up != STORE_OK) store_rollback(ca);
    assert_true(up != STORE_OK || cm != STORE_OK);
    assert_int_equal(store_begin(ca), STORE_OK);   /* the failed batch is over */
    store_rollback(ca);
    json_t *evs = json_array();
    int64_t last = 0;
    assert_int_equal(store_event_list(cb, acct, call.sid, 0, 0, 10, evs, &last), STORE_OK);
    assert_int_equal(json_array_size(evs), 0);
    json_decref(evs);
    json_decref(rq);
    json_decref(rs);
    seen after = {.sid = call.sid};
    assert_int_equal(store_inbox_each(cb, 100, on_inbox, &after), STORE_OK);
    assert_int_equal(after.inbox, 1);
    assert_int_equal(store_inbox_done(cb, after.inbox_id), STORE_OK);
    assert_int_equal(store_call_update(cb, &call), STORE_OK);
    seen none = {.sid = call.sid};
    assert_int_equal(store_inbox_each(cb, 100, on_inbox, &none), STORE_OK);
    assert_int_equal(none.inbox, 0);
    store_call_fini(&call);

    /* The shared budget: two slots of two, then none, with the wait —
     * while another instance (C) is up: alone, an instance's takes are
     * recorded but its own log decides. */
    char label[32], c_id[64];
    snprintf(c_id, sizeof c_id, "ut-c-%u", ut_store_run());
    store *c3 = ut_store_open(f);
    assert_int_equal(store_instance_join(c3, c_id, "t", 60000, 0, err, sizeof err), STORE_OK);
    int64_t wait = 0;
    snprintf(label, sizeof label, "ut%u", ut_store_run());
    assert_int_equal(store_budget_take(ca, label, 2, 60000, 0, 0, 0, &wait), STORE_OK);
    assert_int_equal(store_budget_take(cb, label, 2, 60000, 0, 0, 0, &wait), STORE_OK);
    assert_int_equal(store_budget_take(cb, label, 2, 60000, 0, 0, 0, &wait), STORE_CONFLICT);
    assert_true(wait > 50000 && wait <= 60000);
    /* A new call leaves 2 slots per live call of instances up: B's two,
     * then none of B's once both are its own dials still waiting (which need
     * no reserve); A, fenced, is not counted whatever its row says. */
    snprintf(label, sizeof label, "ur%u", ut_store_run());
    assert_int_equal(store_budget_live(ca, label, 5), STORE_OK);
    assert_int_equal(store_budget_take(cb, label, 4, 60000, 2, 2, 0, &wait), STORE_CONFLICT);
    assert_int_equal(store_budget_take(cb, label, 4, 60000, 2, 2, 2, &wait), STORE_OK);
    assert_int_equal(store_budget_take(cb, label, 4, 60000, 0, 0, 0, &wait), STORE_OK);

    /* B alone (C gone): recorded, not refused. */
    store_conn *cc = store_conn_acquire(c3);
    assert_int_equal(store_instance_leave(cc), STORE_OK);
    store_conn_release(cc);
    store_close(c3);
    assert_int_equal(store_budget_take(cb, label, 4, 60000, 2, 2, 0, &wait), STORE_OK);
    assert_int_equal(store_budget_take(cb, label, 4, 60000, 0, 0, 0, &wait), STORE_OK);

    /* B leaves, as a clean stop does: a run after this one on the same
     * database finds nobody of this run up. */
    assert_int_equal(store_instance_leave(cb), STORE_OK);
    store_conn_release(ca);
    store_conn_release(cb);
    store_close(a);
    store_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_call_live_kaphila_on_every_backend,
                                        ut_store_setup, ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_is_one_instance, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_two_instances, ut_store_setup, ut_store_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
