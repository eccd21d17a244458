/* test_store — the store on a real SQLite file in a temporary directory:
 * the migrations from an empty file (and a newer file refused), a call's
 * insert, update, lookups and list paging (keyset, offset, filters), the
 * outbox's order, the account-key table, and contention: a writer that
 * meets another connection's write lock gets STORE_BUSY, counted in
 * store_busy_count — the recordings table's statements as the others';
 * the change signal of call rows (store_call_changes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/recstore.h"
#include "store/store.h"

#define ACCT_A "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define ACCT_B "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

typedef struct fixture {
    char   dir[64], path[96];
    store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[256];
    snprintf(f->dir, sizeof f->dir, "/tmp/test_store.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    f->s = store_open(f->path, err, sizeof err);
    assert_non_null(f->s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char p[128];
    store_close(f->s);
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, sfx[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    /* The store just opened may hold the file's lock a moment (its
     * checkpointer's first pass): wait for it as the store's own
     * connections do, rather than reading SQLITE_BUSY as no version. */
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int user_version(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void make_call(store_call *c, unsigned n, const char *acct, const char *status)
{
    memset(c, 0, sizeof *c);
    snprintf(c->sid, sizeof c->sid, "CA%032x", n);
    snprintf(c->account_sid, sizeof c->account_sid, "%s", acct);
    snprintf(c->to, sizeof c->to, "+1415555%04u", n % 10000);
    snprintf(c->from, sizeof c->from, "+14155550199");
    snprintf(c->status, sizeof c->status, "%s", status);
    snprintf(c->direction, sizeof c->direction, "outbound-api");
    snprintf(c->token, sizeof c->token, "tok%u", n);
    c->date_created = c->date_updated = 1700000000000LL + n;
    c->duration = -1;
    c->params = json_pack("{s:s}", "Url", "http://example.test/twiml");
}

/* An empty file is migrated to the newest schema, every table is there,
 * a second open leaves it as it is, and a file from a newer twigate is
 * refused with a message naming both versions. */
static void test_migrations_from_empty(void **state)
{
    fixture *f = *state;
    sqlite3 *db = raw_open(f->path);
    int v = user_version(db);
    assert_true(v >= 5);
    const char *tables[] = {"calls", "kevents", "outbox", "call_events", "notifications",
                            "recordings", "account_keys", "call_checkpoints"};
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tables[i]);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    }
    sqlite3_close(db);

    char err[256] = "";
    store_close(f->s);
    f->s = store_open(f->path, err, sizeof err);     /* already current: no change */
    assert_non_null(f->s);
    db = raw_open(f->path);
    assert_int_equal(user_version(db), v);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=999", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    store *newer = store_open(f->path, err, sizeof err);
    assert_null(newer);
    assert_non_null(strstr(err, "999"));
}

static void test_call_insert_update_list(void **state)
{
    fixture *f = *state;
    store_conn *c = store_conn_acquire(f->s);
    store_call call, got, page[4];
    int n = 0;
    assert_non_null(c);
    for (unsigned i = 1; i <= 7; i++) {
        make_call(&call, i, i == 4 ? ACCT_B : ACCT_A, i % 2 ? "queued" : "completed");
        assert_int_equal(store_call_insert(c, &call), STORE_OK);
        assert_true(call.id > 0);
        store_call_fini(&call);
    }
    /* The same SID twice is a conflict and changes nothing. */
    make_call(&call, 3, ACCT_A, "queued");
    assert_int_equal(store_call_insert(c, &call), STORE_CONFLICT);
    store_call_fini(&call);

    /* Lookups: by account (another account's call is not found), SID, token. */
    make_call(&call, 4, ACCT_B, "queued");
    assert_int_equal(store_call_get(c, ACCT_A, call.sid, &got), STORE_NOTFOUND);
    assert_int_equal(store_call_get(c, ACCT_B, call.sid, &got), STORE_OK);
    assert_string_equal(got.to, call.to);
    assert_null(got.params);
    store_call_fini(&got);
    assert_int_equal(store_call_get_by_token(c, "tok4", &got), STORE_OK);
    assert_string_equal(got.sid, call.sid);
    store_call_fini(&got);

    /* Update: every mutable column is written and read back. */
    assert_int_equal(store_call_get_by_sid(c, call.sid, &got), STORE_OK);
    snprintf(got.status, sizeof got.status, "in-progress");
    snprintf(got.kaphila_id, sizeof got.kaphila_id, "1720012345.88");
    got.start_time = 1700000001000LL;
    got.cb_seq = 3;
    got.params = json_pack("{s:s}", "Url", "http://example.test/other");
    assert_int_equal(store_call_update(c, &got), STORE_OK);
    store_call_fini(&got);
    assert_int_equal(store_call_get_by_sid(c, call.sid, &got), STORE_OK);
    assert_string_equal(got.status, "in-progress");
    assert_string_equal(got.kaphila_id, "1720012345.88");
    assert_int_equal(got.cb_seq, 3);
    assert_int_equal(got.start_time, 1700000001000LL);
    store_call_fini(&got);
    store_call_fini(&call);

    /* Paging account A (calls 1 2 3 5 6 7), newest first, two a page. */
    store_call_filter fa = {.account_sid = ACCT_A};
    assert_int_equal(store_call_list(c, &fa, 0, 0, 2, page, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(page[0].sid + 30, "0007");
    assert_string_equal(page[1].sid + 30, "0006");
    int64_t last = page[1].id;
    for (int i = 0; i < n; i++) store_call_fini(&page[i]);
    assert_int_equal(store_call_list(c, &fa, last, 0, 2, page, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(page[0].sid + 30, "0005");
    assert_string_equal(page[1].sid + 30, "0003");
    for (int i = 0; i < n; i++) store_call_fini(&page[i]);
    /* Page=2 without a token: offset 4 lands on the same rows as keyset would. */
    assert_int_equal(store_call_list(c, &fa, 0, 4, 4, page, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(page[0].sid + 30, "0002");
    assert_string_equal(page[1].sid + 30, "0001");
    for (int i = 0; i < n; i++) store_call_fini(&page[i]);
    /* A status filter (ended calls use the calls_acct_ended index). */
    store_call_filter fc = {.account_sid = ACCT_A, .status = "completed"};
    assert_int_equal(store_call_list(c, &fc, 0, 0, 4, page, &n), STORE_OK);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++) {
        assert_string_equal(page[i].status, "completed");
        store_call_fini(&page[i]);
    }
    /* Delete is per account too. */
    make_call(&call, 7, ACCT_A, "queued");
    assert_int_equal(store_call_delete(c, ACCT_B, call.sid), STORE_NOTFOUND);
    assert_int_equal(store_call_delete(c, ACCT_A, call.sid), STORE_OK);
    assert_int_equal(store_call_get(c, ACCT_A, call.sid, &got), STORE_NOTFOUND);
    store_call_fini(&call);
    store_conn_release(c);
}

typedef struct seen {
    int64_t ids[8];
    char    kinds[8][16];
    int     n;
} seen;

static void on_outbox(store_outbox *o, void *arg)
{
    seen *s = arg;
    if (s->n < 8) {
        s->ids[s->n] = o->id;
        snprintf(s->kinds[s->n], sizeof s->kinds[0], "%s", o->kind);
        s->n++;
    }
    store_outbox_fini(o);
}

/* Pending deliveries come back in the order they were written, without the
 * finished ones, and the stats count what is pending. */
static void test_outbox_order(void **state)
{
    fixture *f = *state;
    store_conn *c = store_conn_acquire(f->s);
    const char *kinds[] = {"status", "amd", "recording", "status"};
    int64_t ids[4];
    for (int i = 0; i < 4; i++) {
        store_outbox o = {.seq = i, .created = 1700000000000LL + i};
        snprintf(o.call_sid, sizeof o.call_sid, "CA%032x", 1u);
        snprintf(o.account_sid, sizeof o.account_sid, ACCT_A);
        snprintf(o.kind, sizeof o.kind, "%s", kinds[i]);
        snprintf(o.idem, sizeof o.idem, "idem%d", i);
        o.url = "http://example.test/cb";
        o.method = "POST";
        o.params = "CallStatus=completed";
        assert_int_equal(store_outbox_insert(c, &o), STORE_OK);
        ids[i] = o.id;
    }
    assert_int_equal(store_outbox_finish(c, ids[1], "done", 1), STORE_OK);
    seen s = {0};
    assert_int_equal(store_outbox_each_pending(c, on_outbox, &s), STORE_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ids[0], ids[0]);
    assert_int_equal(s.ids[1], ids[2]);
    assert_int_equal(s.ids[2], ids[3]);
    assert_string_equal(s.kinds[1], "recording");
    int64_t pending = 0, oldest = 0;
    assert_int_equal(store_outbox_stats(c, &pending, &oldest), STORE_OK);
    assert_int_equal(pending, 3);
    assert_int_equal(oldest, 1700000000000LL);
    store_conn_release(c);
}

static bool on_key(const char *sid, const char *key, int64_t created, void *arg)
{
    int *n = arg;
    (void)created;
    assert_string_equal(sid, ACCT_A);
    assert_string_equal(key, "key-one");
    (*n)++;
    return true;
}

/* The first key bound to an account stays its key. */
static void test_account_keys(void **state)
{
    fixture *f = *state;
    store_conn *c = store_conn_acquire(f->s);
    bool same = false;
    int n = 0;
    assert_int_equal(store_account_key_bind(c, ACCT_A, "key-one", 1, &same), STORE_OK);
    assert_true(same);
    assert_int_equal(store_account_key_bind(c, ACCT_A, "key-one", 2, &same), STORE_OK);
    assert_true(same);
    assert_int_equal(store_account_key_bind(c, ACCT_A, "key-two", 3, &same), STORE_OK);
    assert_false(same);
    assert_int_equal(store_account_key_each(c, 10, on_key, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_conn_release(c);
}

/* Another connection holds the write lock: past the busy timeout a write
 * is STORE_BUSY, changes nothing and is counted; once the lock is gone the
 * same write succeeds. The recordings table counts the same way (it did
 * not before it moved into src/store/). */
/* Executor checkpoints (migration 5): an upsert per call whose document is
 * kept when a write leaves it out, read back whole, gone once deleted; and
 * a version-4 file gains the table at the next open. */
static void test_call_checkpoints(void **state)
{
    fixture *f = *state;
    store_conn *c = store_conn_acquire(f->s);
    const char *sid = "CA00000000000000000000000000000007";
    char *doc = NULL, *st = NULL;
    assert_non_null(c);
    assert_int_equal(store_call_ckpt_get(c, sid, &doc, &st), STORE_NOTFOUND);
    assert_int_equal(store_call_ckpt_put(c, sid, 1, "{\"kind\":\"xml\"}", "{\"wait\":2}", 1000),
                     STORE_OK);
    assert_int_equal(store_call_ckpt_put(c, sid, 2, NULL, "{\"wait\":3}", 2000), STORE_OK);
    assert_int_equal(store_call_ckpt_get(c, sid, &doc, &st), STORE_OK);
    assert_string_equal(doc, "{\"kind\":\"xml\"}");
    assert_string_equal(st, "{\"wait\":3}");
    free(doc);
    free(st);
    assert_int_equal(store_call_ckpt_delete(c, sid), STORE_OK);
    assert_int_equal(store_call_ckpt_get(c, sid, &doc, &st), STORE_NOTFOUND);
    store_conn_release(c);

    char err[256] = "";
    store_close(f->s);
    f->s = NULL;
    sqlite3 *db = raw_open(f->path);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE call_checkpoints; PRAGMA user_version=4",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    f->s = store_open(f->path, err, sizeof err);
    assert_non_null(f->s);
    db = raw_open(f->path);
    assert_int_equal(user_version(db), 8);   /* to the newest, through 5 */
    /* 8: the indexes only instances sharing PostgreSQL read are gone. */
    sqlite3_stmt *ix = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE name IN"
                                            " ('calls_owner', 'calls_kaphila')", -1, &ix, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(ix), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(ix, 0), 0);
    sqlite3_finalize(ix);
    assert_int_equal(sqlite3_exec(db, "SELECT call_sid, seq, doc, state, updated_ms"
                                      " FROM call_checkpoints", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_busy(void **state)
{
    fixture *f = *state;
    store_conn *c = store_conn_acquire(f->s);
    sqlite3 *other = raw_open(f->path);
    store_call call, got;
    uint64_t busy0 = store_busy_count(f->s);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    make_call(&call, 42, ACCT_A, "queued");
    assert_int_equal(store_call_insert(c, &call), STORE_BUSY);
    assert_int_equal(store_busy_count(f->s), busy0 + 1);

    assert_int_equal(rec_db_set_deleted(c, "RE00000000000000000000000000000001", 1), STORE_BUSY);
    assert_int_equal(store_busy_count(f->s), busy0 + 2);

    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(store_call_get_by_sid(c, call.sid, &got), STORE_NOTFOUND);
    assert_int_equal(store_call_insert(c, &call), STORE_OK);
    assert_int_equal(store_call_get_by_sid(c, call.sid, &got), STORE_OK);
    store_call_fini(&got);
    store_call_fini(&call);
    store_conn_release(c);
}

static void count_hook(void *arg)
{
    (*(int *)arg)++;
}

/* The change signal (store_call_changes, console streams): one per ended
 * transaction that wrote call rows, however many rows; reads and writes of
 * other tables leave it, and the hook runs once per bump. */
static void test_call_changes(void **state)
{
    fixture *f = *state;
    store_conn *c = store_conn_acquire(f->s);
    store_call call, page[2];
    int hooked = 0, n = 0;
    store_set_change_hook(f->s, count_hook, &hooked);
    uint64_t v0 = store_call_changes(f->s);

    make_call(&call, 1, ACCT_A, "queued");
    assert_int_equal(store_call_insert(c, &call), STORE_OK);   /* its own commit */
    assert_int_equal(store_call_changes(f->s), v0 + 1);

    store_call_filter flt = {.account_sid = ACCT_A};
    assert_int_equal(store_call_list(c, &flt, 0, 0, 2, page, &n), STORE_OK);
    for (int i = 0; i < n; i++) store_call_fini(&page[i]);
    int64_t kid = 0;
    assert_int_equal(store_kevent_insert(c, call.sid, "{}", 2, false, &kid), STORE_OK);
    assert_int_equal(store_call_changes(f->s), v0 + 1);

    assert_int_equal(store_begin(c), STORE_OK);
    snprintf(call.status, sizeof call.status, "ringing");
    assert_int_equal(store_call_update(c, &call), STORE_OK);
    snprintf(call.status, sizeof call.status, "in-progress");
    assert_int_equal(store_call_update(c, &call), STORE_OK);
    assert_int_equal(store_call_changes(f->s), v0 + 1);        /* not before the commit */
    assert_int_equal(store_commit(c), STORE_OK);
    assert_int_equal(store_call_changes(f->s), v0 + 2);
    assert_int_equal(hooked, 2);

    store_set_change_hook(f->s, NULL, NULL);
    assert_int_equal(store_call_delete(c, ACCT_A, call.sid), STORE_OK);
    assert_int_equal(store_call_changes(f->s), v0 + 3);
    assert_int_equal(hooked, 2);
    store_call_fini(&call);
    store_conn_release(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations_from_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_insert_update_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_account_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_changes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
