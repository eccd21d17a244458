/* test_store_conformance — store.h and recstore.h through the public API
 * only, so the same binary checks every backend (docs/scale-out.md §1):
 * TWIGATE_TEST_DB_URL names the database (a postgresql:// URL), unset = SQLite
 * in a temporary file. tests/integration/test_store_pg.py runs it on a real
 * PostgreSQL.
 *
 * Every test writes under its own account SIDs and call SIDs, made unique
 * per run, so a database that already holds rows (a server reused between
 * runs) answers the same; the whole-table walks (live calls, pending
 * kevents and outbox rows, account keys, pending recordings) are checked
 * for this run's rows, in order, not for an exact count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/recstore.h"
#include "store/store.h"
#include "../support/store_rig.h"

/* ---- calls ---- */

static void test_call_crud(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE], other[SID_SIZE];
    store_call call, dup, got;
    int64_t id = 0;
    ut_store_sid(acct, "AC");
    ut_store_sid(other, "AC");
    ut_store_make_call(&call, acct, "queued", 1700000000000LL);
    ut_store_insert_call(f->c, &call);

    /* The same SID again, or the same token, is a conflict. */
    ut_store_make_call(&dup, acct, "queued", 1);
    snprintf(dup.sid, sizeof dup.sid, "%s", call.sid);
    assert_int_equal(store_call_insert(f->c, &dup), STORE_CONFLICT);
    store_call_fini(&dup);
    ut_store_make_call(&dup, acct, "queued", 1);
    snprintf(dup.token, sizeof dup.token, "%s", call.token);
    assert_int_equal(store_call_insert(f->c, &dup), STORE_CONFLICT);
    store_call_fini(&dup);

    /* Lookups: within the account only; by SID; by token; the id. */
    assert_int_equal(store_call_get(f->c, other, call.sid, &got), STORE_NOTFOUND);
    assert_int_equal(store_call_get(f->c, acct, call.sid, &got), STORE_OK);
    assert_int_equal(got.id, call.id);
    assert_string_equal(got.to, call.to);
    assert_string_equal(got.from, call.from);
    assert_string_equal(got.status, "queued");
    assert_string_equal(got.direction, "outbound-api");
    assert_string_equal(got.parent_call_sid, "");
    assert_int_equal(got.duration, -1);
    assert_int_equal(got.date_created, 1700000000000LL);
    assert_null(got.params);
    assert_int_equal(store_call_get_by_sid(f->c, call.sid, &got), STORE_OK);
    assert_string_equal(got.account_sid, acct);
    assert_int_equal(store_call_get_by_token(f->c, call.token, &got), STORE_OK);
    assert_string_equal(got.sid, call.sid);
    assert_int_equal(store_call_get_by_token(f->c, "no-such-token", &got), STORE_NOTFOUND);
    assert_int_equal(store_call_id(f->c, acct, call.sid, &id), STORE_OK);
    assert_int_equal(id, call.id);
    assert_int_equal(store_call_id(f->c, other, call.sid, &id), STORE_NOTFOUND);

    /* Update writes every mutable column. */
    snprintf(call.status, sizeof call.status, "completed");
    snprintf(call.answered_by, sizeof call.answered_by, "human");
    snprintf(call.kaphila_id, sizeof call.kaphila_id, "1720012345.88");
    call.date_updated = 1700000009000LL;
    call.start_time = 1700000001000LL;
    call.end_time = 1700000008000LL;
    call.answered_at = 1700000002000LL;
    call.duration = 7;
    call.queue_time = 12;
    call.cb_seq = 3;
    json_object_set_new(call.params, "StatusCallback", json_string("http://cb.test/s"));
    assert_int_equal(store_call_update(f->c, &call), STORE_OK);
    assert_int_equal(store_call_get(f->c, acct, call.sid, &got), STORE_OK);
    assert_string_equal(got.status, "completed");
    assert_string_equal(got.answered_by, "human");
    assert_string_equal(got.kaphila_id, "1720012345.88");
    assert_int_equal(got.date_updated, 1700000009000LL);
    assert_int_equal(got.start_time, 1700000001000LL);
    assert_int_equal(got.end_time, 1700000008000LL);
    assert_int_equal(got.answered_at, 1700000002000LL);
    assert_int_equal(got.duration, 7);
    assert_int_equal(got.queue_time, 12);
    assert_int_equal(got.cb_seq, 3);

    /* An update or delete of a call that is not there; a delete in the
     * wrong account changes nothing. */
    ut_store_make_call(&dup, acct, "queued", 1);
    assert_int_equal(store_call_update(f->c, &dup), STORE_NOTFOUND);
    store_call_fini(&dup);
    assert_int_equal(store_call_delete(f->c, other, call.sid), STORE_NOTFOUND);
    assert_int_equal(store_call_delete(f->c, acct, call.sid), STORE_OK);
    assert_int_equal(store_call_get(f->c, acct, call.sid, &got), STORE_NOTFOUND);
    assert_int_equal(store_call_delete(f->c, acct, call.sid), STORE_NOTFOUND);
    store_call_fini(&call);
}

static int list_sids(ut_store *f, const store_call_filter *flt, int64_t before, int64_t offset,
                     int limit, char (*sids)[SID_SIZE])
{
    store_call page[16];
    int n = -1;
    assert_true(limit <= 16);
    assert_int_equal(store_call_list(f->c, flt, before, offset, limit, page, &n), STORE_OK);
    for (int i = 0; i < n; i++) {
        snprintf(sids[i], SID_SIZE, "%s", page[i].sid);
        assert_null(page[i].params);
        store_call_fini(&page[i]);
    }
    return n;
}

static void test_call_list_filters_and_pages(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE], other[SID_SIZE], sids[16][SID_SIZE];
    store_call calls[8], x;
    int64_t ids[8];
    ut_store_sid(acct, "AC");
    ut_store_sid(other, "AC");
    /* 8 calls: even ones completed (start 1000+i, end 2000+i), odd ones
     * in-progress; call 5 a child of call 0; one call in another account. */
    for (int i = 0; i < 8; i++) {
        ut_store_make_call(&calls[i], acct, i % 2 ? "in-progress" : "completed", 1700000000000LL + i);
        if (i % 2 == 0) {
            calls[i].start_time = 1000 + i;
            calls[i].end_time = 2000 + i;
        } else {
            calls[i].start_time = 1000 + i;
        }
        if (i == 5) snprintf(calls[i].parent_call_sid, SID_SIZE, "%s", calls[0].sid);
        if (i == 6) snprintf(calls[i].to, sizeof calls[i].to, "+15005550006");
        ut_store_insert_call(f->c, &calls[i]);
        ids[i] = calls[i].id;
        if (i) assert_true(ids[i] > ids[i - 1]);
    }
    ut_store_make_call(&x, other, "completed", 1);
    ut_store_insert_call(f->c, &x);
    store_call_fini(&x);

    store_call_filter flt = {.account_sid = acct};
    /* Newest first, by keyset and by offset; past the end is empty. */
    int n = list_sids(f, &flt, 0, 0, 3, sids);
    assert_int_equal(n, 3);
    assert_string_equal(sids[0], calls[7].sid);
    assert_string_equal(sids[2], calls[5].sid);
    n = list_sids(f, &flt, ids[5], 0, 3, sids);
    assert_int_equal(n, 3);
    assert_string_equal(sids[0], calls[4].sid);
    n = list_sids(f, &flt, 0, 6, 3, sids);
    assert_int_equal(n, 2);
    assert_string_equal(sids[0], calls[1].sid);
    assert_string_equal(sids[1], calls[0].sid);
    assert_int_equal(list_sids(f, &flt, 0, 8, 3, sids), 0);
    assert_int_equal(list_sids(f, &flt, ids[0], 0, 3, sids), 0);

    /* Each filter alone. */
    store_call_filter st = {.account_sid = acct, .status = "in-progress"};
    n = list_sids(f, &st, 0, 0, 16, sids);
    assert_int_equal(n, 4);
    assert_string_equal(sids[0], calls[7].sid);
    store_call_filter done = {.account_sid = acct, .status = "completed"};
    n = list_sids(f, &done, 0, 1, 16, sids);      /* offset inside a filter */
    assert_int_equal(n, 3);
    assert_string_equal(sids[0], calls[4].sid);
    store_call_filter busy = {.account_sid = acct, .status = "busy"};
    assert_int_equal(list_sids(f, &busy, 0, 0, 16, sids), 0);
    store_call_filter to = {.account_sid = acct, .to = "+15005550006"};
    n = list_sids(f, &to, 0, 0, 16, sids);
    assert_int_equal(n, 1);
    assert_string_equal(sids[0], calls[6].sid);
    store_call_filter from = {.account_sid = acct, .from = "+14155550199"};
    assert_int_equal(list_sids(f, &from, 0, 0, 16, sids), 8);
    store_call_filter parent = {.account_sid = acct, .parent_call_sid = calls[0].sid};
    n = list_sids(f, &parent, 0, 0, 16, sids);
    assert_int_equal(n, 1);
    assert_string_equal(sids[0], calls[5].sid);
    /* Times: half-open, and a zero (null) end is never "before". */
    store_call_filter sf = {.account_sid = acct, .start_from = 1004, .start_to = 1006};
    n = list_sids(f, &sf, 0, 0, 16, sids);
    assert_int_equal(n, 2);
    assert_string_equal(sids[0], calls[5].sid);
    store_call_filter ef = {.account_sid = acct, .end_to = 2003};
    n = list_sids(f, &ef, 0, 0, 16, sids);
    assert_int_equal(n, 2);
    assert_string_equal(sids[0], calls[2].sid);
    store_call_filter ef2 = {.account_sid = acct, .end_from = 2004};
    assert_int_equal(list_sids(f, &ef2, 0, 0, 16, sids), 2);
    /* Filters together. */
    store_call_filter both = {.account_sid = acct, .status = "completed", .end_from = 2002,
                              .start_to = 1006};
    n = list_sids(f, &both, 0, 0, 16, sids);
    assert_int_equal(n, 2);
    assert_string_equal(sids[0], calls[4].sid);
    assert_string_equal(sids[1], calls[2].sid);
    for (int i = 0; i < 8; i++) store_call_fini(&calls[i]);
}

typedef struct seen {
    char   want[8][SID_SIZE];
    int    n_want, n_found, order_ok;
    int64_t last_id;
    bool   params_ok;
} seen;

static int want_index(seen *s, const char *sid)
{
    for (int i = 0; i < s->n_want; i++)
        if (!strcmp(s->want[i], sid)) return i;
    return -1;
}

static void on_live(store_call *call, void *arg)
{
    seen *s = arg;
    int i = want_index(s, call->sid);
    if (i < 0) return;
    if (i != s->n_found) s->order_ok = 0;
    s->n_found++;
    if (!call->params || !json_is_string(json_object_get(call->params, "Url")))
        s->params_ok = false;
}

static void test_call_each_live(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE];
    const char *st[] = {"queued", "completed", "ringing", "canceled", "in-progress"};
    store_call c[5];
    seen s = {.order_ok = 1, .params_ok = true};
    ut_store_sid(acct, "AC");
    for (int i = 0; i < 5; i++) {
        ut_store_make_call(&c[i], acct, st[i], 1);
        ut_store_insert_call(f->c, &c[i]);
        if (store_status_live(st[i])) snprintf(s.want[s.n_want++], SID_SIZE, "%s", c[i].sid);
        store_call_fini(&c[i]);
    }
    assert_int_equal(s.n_want, 3);
    assert_int_equal(store_call_each_live(f->c, on_live, &s), STORE_OK);
    assert_int_equal(s.n_found, 3);
    assert_true(s.order_ok);
    assert_true(s.params_ok);
}

/* ---- checkpoints ---- */

static void test_checkpoints(void **state)
{
    ut_store *f = *state;
    char sid[SID_SIZE], *doc = NULL, *st = NULL;
    ut_store_sid(sid, "CA");
    assert_int_equal(store_call_ckpt_get(f->c, sid, &doc, &st), STORE_NOTFOUND);
    assert_null(doc);
    assert_int_equal(store_call_ckpt_put(f->c, sid, 1, "<Response/>", "{\"pc\":0}", 10), STORE_OK);
    assert_int_equal(store_call_ckpt_get(f->c, sid, &doc, &st), STORE_OK);
    assert_string_equal(doc, "<Response/>");
    assert_string_equal(st, "{\"pc\":0}");
    free(doc);
    free(st);
    /* NULL doc keeps the stored one; the state is replaced. */
    assert_int_equal(store_call_ckpt_put(f->c, sid, 2, NULL, "{\"pc\":1}", 11), STORE_OK);
    assert_int_equal(store_call_ckpt_get(f->c, sid, &doc, &st), STORE_OK);
    assert_string_equal(doc, "<Response/>");
    assert_string_equal(st, "{\"pc\":1}");
    free(doc);
    free(st);
    assert_int_equal(store_call_ckpt_delete(f->c, sid), STORE_OK);
    assert_int_equal(store_call_ckpt_get(f->c, sid, &doc, &st), STORE_NOTFOUND);
}

/* ---- transactions, the change signal, health ---- */

static void test_transactions(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE];
    store_call a, b, got;
    store_conn *c2 = store_conn_acquire(f->s);
    assert_non_null(c2);
    ut_store_sid(acct, "AC");

    /* Rollback discards every write of the transaction. */
    uint64_t changes = store_call_changes(f->s);
    assert_int_equal(store_begin(f->c), STORE_OK);
    assert_int_equal(store_begin(f->c), STORE_CONFLICT);    /* already in one: joins it */
    ut_store_make_call(&a, acct, "queued", 1);
    ut_store_insert_call(f->c, &a);
    assert_int_equal(store_call_ckpt_put(f->c, a.sid, 1, "d", "s", 1), STORE_OK);
    assert_int_equal(store_call_changes(f->s), changes);   /* not before the end */
    store_rollback(f->c);
    assert_true(store_call_changes(f->s) > changes);       /* a rollback counts too */
    assert_int_equal(store_call_get(f->c, acct, a.sid, &got), STORE_NOTFOUND);
    char *doc = NULL, *st = NULL;
    assert_int_equal(store_call_ckpt_get(f->c, a.sid, &doc, &st), STORE_NOTFOUND);
    store_rollback(f->c);                                   /* outside one: nothing */

    /* A commit makes them visible to another connection, not before. */
    changes = store_call_changes(f->s);
    assert_int_equal(store_begin(f->c), STORE_OK);
    ut_store_insert_call(f->c, &a);
    ut_store_make_call(&b, acct, "queued", 2);
    ut_store_insert_call(f->c, &b);
    assert_int_equal(store_write_probe(f->c), STORE_OK);
    assert_int_equal(store_call_get(c2, acct, a.sid, &got), STORE_NOTFOUND);
    assert_int_equal(store_commit(f->c), STORE_OK);
    assert_int_equal(store_call_changes(f->s), changes + 1);
    assert_int_equal(store_call_get(c2, acct, a.sid, &got), STORE_OK);
    assert_int_equal(store_call_get(c2, acct, b.sid, &got), STORE_OK);
    /* A write outside a transaction commits by itself, and signals once. */
    assert_int_equal(store_call_delete(f->c, acct, b.sid), STORE_OK);
    assert_int_equal(store_call_changes(f->s), changes + 2);
    /* Writes that are not call rows do not signal. */
    assert_int_equal(store_kevent_insert(f->c, a.sid, "{}", 2, true, NULL), STORE_OK);
    assert_int_equal(store_call_changes(f->s), changes + 2);

    assert_int_equal(store_check_writable(c2), STORE_OK);
    store_fault_stats fs;
    store_faults(f->s, &fs);
    for (int i = 0; i < STORE_FAULT_KINDS; i++) assert_int_equal(fs.count[i], 0);
    assert_false(fs.write_failing);
    assert_false(fs.integrity_failed);
    store_ckpt_stats cs;
    store_checkpoint_stats(f->s, &cs);      /* any numbers; answers without a fault */
    store_call_fini(&a);
    store_call_fini(&b);
    store_conn_release(c2);
}

/* A second handle on the same database sees the first one's rows (the
 * schema is not created twice), and a database that cannot be opened is an
 * error with a message, not a crash. */
static void test_reopen_and_errors(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE], err[256] = "";
    store_call a, got;
    ut_store_sid(acct, "AC");
    ut_store_make_call(&a, acct, "completed", 1);
    ut_store_insert_call(f->c, &a);
    store *again = ut_store_open(f);
    store_conn *c2 = store_conn_acquire(again);
    assert_non_null(c2);
    assert_int_equal(store_call_get(c2, acct, a.sid, &got), STORE_OK);
    store_conn_release(c2);
    store_close(again);
    store_call_fini(&a);

    const char *name = store_backend_name(f->s);
    assert_string_equal(name, ut_store_url() ? "postgresql" : "sqlite");
    store *bad = ut_store_url()
        ? store_open_url("postgresql://127.0.0.1:1/none?connect_timeout=2", NULL, err, sizeof err)
        : store_open_url(NULL, "/nonexistent-dir/for/twigate/t.db", err, sizeof err);
    assert_null(bad);
    assert_true(err[0] != '\0');
    err[0] = '\0';
    assert_null(store_open_url("mysql://x/y", NULL, err, sizeof err));
    assert_true(err[0] != '\0');
    store_close(NULL);
    store_conn_release(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_call_crud, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_call_list_filters_and_pages, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_call_each_live, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_transactions, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_and_errors, ut_store_setup,
                                        ut_store_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
