/* test_store_conformance_logs — the second half of the store's conformance
 * suite (test_store_conformance.c has the calls, checkpoints and
 * transactions): kevents, the outbox, the call event log, notifications,
 * account keys and recordings, through the public API only, so the same
 * binary checks every backend (docs/scale-out.md §1):
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

/* ---- kevents and the outbox ---- */

typedef struct kev_seen {
    int64_t want[3];
    int     found[3];
    int64_t last;
    bool    order_ok, body_ok;
    char    call_sid[SID_SIZE];
} kev_seen;

static void on_kevent(int64_t id, const char *call_sid, const char *body, void *arg)
{
    kev_seen *k = arg;
    for (int i = 0; i < 3; i++)
        if (k->want[i] == id) {
            k->found[i]++;
            if (id <= k->last) k->order_ok = false;
            k->last = id;
            if (strcmp(call_sid, k->call_sid) || strncmp(body, "{\"n\":", 5)) k->body_ok = false;
        }
}

static void test_kevents(void **state)
{
    ut_store *f = *state;
    kev_seen k = {.order_ok = true, .body_ok = true};
    int64_t done_id = 0;
    char body[32];
    ut_store_sid(k.call_sid, "CA");
    for (int i = 0; i < 3; i++) {
        int len = snprintf(body, sizeof body, "{\"n\":%d}xx", i);
        /* len - 2: the body is the first len bytes only. */
        assert_int_equal(store_kevent_insert(f->c, k.call_sid, body, (size_t)len - 2, false,
                                             &k.want[i]), STORE_OK);
    }
    assert_true(k.want[0] < k.want[1] && k.want[1] < k.want[2]);
    assert_int_equal(store_kevent_insert(f->c, k.call_sid, "{}", 2, true, &done_id), STORE_OK);
    assert_int_equal(store_kevent_done(f->c, k.want[1]), STORE_OK);
    assert_int_equal(store_kevent_each_pending(f->c, on_kevent, &k), STORE_OK);
    assert_int_equal(k.found[0], 1);
    assert_int_equal(k.found[1], 0);
    assert_int_equal(k.found[2], 1);
    assert_true(k.order_ok);
    assert_true(k.body_ok);
}

typedef struct ob_seen {
    int64_t want[3];
    int     n;
    bool    ok;
} ob_seen;

static void on_outbox(store_outbox *o, void *arg)
{
    ob_seen *s = arg;
    for (int i = 0; i < 3; i++)
        if (s->want[i] == o->id) {
            char url[64];
            snprintf(url, sizeof url, "http://cb.test/%d#frag", i);
            if (s->n != i || strcmp(o->url, url) || strcmp(o->method, i ? "GET" : "POST") ||
                strcmp(o->params, "CallStatus=ringing&x=%20") || strcmp(o->kind, "status") ||
                o->seq != i || o->created != 1700000000000LL + i || strlen(o->idem) < 8)
                s->ok = false;
            s->n = i + 1;
        }
}

static void test_outbox(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE], call[SID_SIZE];
    ob_seen s = {.ok = true};
    int64_t pending = -1, oldest = -1;
    ut_store_sid(acct, "AC");
    ut_store_sid(call, "CA");
    for (int i = 0; i < 4; i++) {
        char url[64], method[8], params[32];
        snprintf(url, sizeof url, "http://cb.test/%d#frag", i);
        snprintf(method, sizeof method, "%s", i ? "GET" : "POST");
        snprintf(params, sizeof params, "CallStatus=ringing&x=%%20");
        store_outbox o = {.seq = i, .url = url, .method = method, .params = params,
                          .created = 1700000000000LL + i};
        snprintf(o.call_sid, sizeof o.call_sid, "%s", call);
        snprintf(o.account_sid, sizeof o.account_sid, "%s", acct);
        snprintf(o.kind, sizeof o.kind, "status");
        snprintf(o.idem, sizeof o.idem, "idem%08x%04d", ut_store_run(), i);
        assert_int_equal(store_outbox_insert(f->c, &o), STORE_OK);
        assert_true(o.id > 0);
        if (i < 3) s.want[i] = o.id;
        else assert_int_equal(store_outbox_finish(f->c, o.id, "done", 1), STORE_OK);
    }
    assert_int_equal(store_outbox_stats(f->c, &pending, &oldest), STORE_OK);
    assert_true(pending >= 3);
    assert_true(oldest > 0 && oldest <= 1700000000000LL);
    assert_int_equal(store_outbox_each_pending(f->c, on_outbox, &s), STORE_OK);
    assert_int_equal(s.n, 3);
    assert_true(s.ok);
    /* Finished rows ("done" or "failed") are pending no more. */
    assert_int_equal(store_outbox_finish(f->c, s.want[0], "failed", 5), STORE_OK);
    assert_int_equal(store_outbox_finish(f->c, s.want[1], "done", 1), STORE_OK);
    memset(&s, 0, sizeof s);
    s.ok = true;
    s.want[0] = -1;
    assert_int_equal(store_outbox_each_pending(f->c, on_outbox, &s), STORE_OK);
    assert_int_equal(s.n, 0);
}

/* ---- the call event log and notifications ---- */

static void test_events(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE], other[SID_SIZE], call[SID_SIZE];
    int64_t last = 0, first_id;
    ut_store_sid(acct, "AC");
    ut_store_sid(other, "AC");
    ut_store_sid(call, "CA");
    for (int i = 0; i < 5; i++) {
        json_t *rq = json_pack("{s:s,s:i}", "url", "http://x.test/", "n", i);
        json_t *rs = json_pack("{s:i}", "status_code", 200);
        assert_int_equal(store_event_insert(f->c, acct, call, 1700000000000LL + i, rq,
                                            i == 1 ? "Digits=1%232&CallStatus=in-progress" : NULL,
                                            rs), STORE_OK);
        json_decref(rq);
        json_decref(rs);
    }
    json_t *arr = json_array();
    assert_int_equal(store_event_list(f->c, acct, call, 0, 0, 3, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 3);
    first_id = json_integer_value(json_object_get(json_array_get(arr, 0), "id"));
    for (int i = 0; i < 3; i++) {
        json_t *e = json_array_get(arr, (size_t)i);
        json_t *rq = json_object_get(e, "request");
        assert_int_equal(json_integer_value(json_object_get(rq, "n")), i);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "response"),
                                                            "status_code")), 200);
        json_t *p = json_object_get(rq, "parameters");
        if (i == 1) {
            assert_string_equal(json_string_value(json_object_get(p, "Digits")), "1#2");
            assert_string_equal(json_string_value(json_object_get(p, "CallStatus")),
                                "in-progress");
        } else {
            assert_null(p);
        }
    }
    assert_int_equal(last, json_integer_value(json_object_get(json_array_get(arr, 2), "id")));
    json_array_clear(arr);
    /* Keyset after the last id, then offset. */
    assert_int_equal(store_event_list(f->c, acct, call, last, 0, 3, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_array_get(arr, 1),
                                                                        "request"), "n")), 4);
    json_array_clear(arr);
    assert_int_equal(store_event_list(f->c, acct, call, 0, 4, 3, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 1);
    assert_true(json_integer_value(json_object_get(json_array_get(arr, 0), "id")) > first_id);
    json_array_clear(arr);
    /* Another account sees none of them. */
    assert_int_equal(store_event_list(f->c, other, call, 0, 0, 3, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
}

static void test_notifications(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE], other[SID_SIZE], call[SID_SIZE], sids[4][SID_SIZE];
    int64_t last = 0;
    json_t *got = NULL;
    ut_store_sid(acct, "AC");
    ut_store_sid(other, "AC");
    ut_store_sid(call, "CA");
    for (int i = 0; i < 4; i++) {
        ut_store_sid(sids[i], "NO");
        store_notification n = {.error_code = 11200 + i, .log = i % 2, .date = 1700000000000LL + i,
                                .message_text = "Msg=hello+there", .request_method = "POST",
                                .request_url = "http://x.test/", .request_variables = "",
                                .response_body = "<oops>", .response_headers = "X-A: 1"};
        memcpy(n.sid, sids[i], SID_SIZE);
        snprintf(n.account_sid, sizeof n.account_sid, "%s", acct);
        snprintf(n.call_sid, sizeof n.call_sid, "%s", i == 3 ? "" : call);
        assert_int_equal(store_notification_insert(f->c, &n), STORE_OK);
        if (i == 0) assert_int_equal(store_notification_insert(f->c, &n), STORE_CONFLICT);
    }
    assert_int_equal(store_notification_get(f->c, other, sids[0], &got), STORE_NOTFOUND);
    assert_int_equal(store_notification_get(f->c, acct, sids[1], &got), STORE_OK);
    assert_string_equal(json_string_value(json_object_get(got, "sid")), sids[1]);
    assert_string_equal(json_string_value(json_object_get(got, "call_sid")), call);
    assert_int_equal(json_integer_value(json_object_get(got, "error_code")), 11201);
    assert_int_equal(json_integer_value(json_object_get(got, "log")), 1);
    assert_int_equal(json_integer_value(json_object_get(got, "date")), 1700000000001LL);
    assert_string_equal(json_string_value(json_object_get(got, "message_text")), "Msg=hello+there");
    assert_string_equal(json_string_value(json_object_get(got, "response_body")), "<oops>");
    assert_string_equal(json_string_value(json_object_get(got, "response_headers")), "X-A: 1");
    assert_true(json_integer_value(json_object_get(got, "id")) > 0);
    json_decref(got);

    json_t *arr = json_array();
    assert_int_equal(store_notification_list(f->c, acct, NULL, 0, 0, 3, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "sid")), sids[3]);
    json_array_clear(arr);
    assert_int_equal(store_notification_list(f->c, acct, NULL, last, 0, 3, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "sid")), sids[0]);
    json_array_clear(arr);
    assert_int_equal(store_notification_list(f->c, acct, call, 0, 0, 10, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "sid")), sids[2]);
    json_array_clear(arr);
    assert_int_equal(store_notification_list(f->c, acct, call, 0, 2, 10, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "sid")), sids[0]);
    json_array_clear(arr);
    assert_int_equal(store_notification_list(f->c, other, NULL, 0, 0, 10, arr, &last), STORE_OK);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
}

/* ---- account keys ---- */

typedef struct key_seen {
    char sids[2][SID_SIZE];
    int  found, order_ok;
    char key0[64];
} key_seen;

static bool on_key(const char *sid, const char *key, int64_t created, void *arg)
{
    key_seen *k = arg;
    for (int i = 0; i < 2; i++)
        if (!strcmp(sid, k->sids[i])) {
            if (i != k->found) k->order_ok = 0;
            if (i == 0 && (strcmp(key, k->key0) || created != 1700000000000LL)) k->order_ok = 0;
            k->found++;
        }
    return true;
}

static bool stop_at_first(const char *sid, const char *key, int64_t created, void *arg)
{
    (void)sid; (void)key; (void)created;
    ++*(int *)arg;
    return false;
}

static void test_account_keys(void **state)
{
    ut_store *f = *state;
    key_seen k = {.order_ok = 1};
    bool same = false;
    int calls = 0;
    ut_store_sid(k.sids[0], "AC");
    ut_store_sid(k.sids[1], "AC");
    snprintf(k.key0, sizeof k.key0, "key-%08x-a", ut_store_run());
    assert_int_equal(store_account_key_bind(f->c, k.sids[0], k.key0, 1700000000000LL, &same),
                     STORE_OK);
    assert_true(same);
    /* Bound already: the first key stays, a second one is told apart. */
    assert_int_equal(store_account_key_bind(f->c, k.sids[0], "key-other", 1700000000001LL, &same),
                     STORE_OK);
    assert_false(same);
    assert_int_equal(store_account_key_bind(f->c, k.sids[0], k.key0, 1700000000002LL, &same),
                     STORE_OK);
    assert_true(same);
    assert_int_equal(store_account_key_bind(f->c, k.sids[1], "key-b", 1700000000003LL, &same),
                     STORE_OK);
    assert_true(same);
    assert_int_equal(store_account_key_each(f->c, 1000000, on_key, &k), STORE_OK);
    assert_int_equal(k.found, 2);
    assert_true(k.order_ok);
    /* A callback that fails stops the walk with an error. */
    assert_int_equal(store_account_key_each(f->c, 1000000, stop_at_first, &calls), STORE_ERROR);
    assert_int_equal(calls, 1);
}

/* ---- recordings ---- */

static void make_rec(rec_row *r, const char *acct, const char *call, const char *source,
                     const char *status, int64_t created)
{
    memset(r, 0, sizeof *r);
    ut_store_sid(r->sid, "RE");
    snprintf(r->account_sid, sizeof r->account_sid, "%s", acct);
    snprintf(r->call_sid, sizeof r->call_sid, "%s", call);
    snprintf(r->source, sizeof r->source, "%s", source);
    snprintf(r->status, sizeof r->status, "%s", status);
    snprintf(r->track, sizeof r->track, "both");
    r->channels = 1;
    r->date_created = r->date_updated = r->start_time = created;
    r->duration = -1;
    r->window_ms = -1;
    r->callback_events = REC_EV_COMPLETED;
}

static void test_recordings(void **state)
{
    ut_store *f = *state;
    char acct[SID_SIZE], other[SID_SIZE], sids[8][SID_SIZE] = {{0}};
    store_call call;
    rec_row r[4], got, page[8];
    int n = -1;
    ut_store_sid(acct, "AC");
    ut_store_sid(other, "AC");
    ut_store_make_call(&call, acct, "completed", 1);
    ut_store_insert_call(f->c, &call);
    for (int i = 0; i < 4; i++) {
        make_rec(&r[i], acct, call.sid, i ? "RecordVerb" : "OutboundAPI",
                 i == 2 ? "in-progress" : "completed", 1700000000000LL + i * 1000);
        if (i == 1) {
            r[i].callback_url = strdup("http://cb.test/rec");
            snprintf(r[i].callback_method, sizeof r[i].callback_method, "GET");
            r[i].callback_events = REC_EV_IN_PROGRESS | REC_EV_COMPLETED;
            r[i].offset_ms = 1500;
        }
        assert_int_equal(rec_db_insert(f->c, &r[i]), STORE_OK);
        assert_true(r[i].id > 0);
        snprintf(sids[i], SID_SIZE, "%s", r[i].sid);
    }
    assert_int_equal(rec_db_insert(f->c, &r[0]), STORE_CONFLICT);
    assert_false(rec_is_window(&r[0]));
    assert_true(rec_is_window(&r[1]));

    /* Lookups: by account, any account (NULL), by id. */
    assert_int_equal(rec_db_get(f->c, other, sids[1], &got), STORE_NOTFOUND);
    assert_int_equal(rec_db_get(f->c, acct, sids[1], &got), STORE_OK);
    assert_string_equal(got.callback_url, "http://cb.test/rec");
    assert_string_equal(got.callback_method, "GET");
    assert_int_equal(got.callback_events, REC_EV_IN_PROGRESS | REC_EV_COMPLETED);
    assert_int_equal(got.offset_ms, 1500);
    assert_int_equal(got.window_ms, -1);
    assert_string_equal(got.source, "RecordVerb");
    assert_false(got.deleted);
    rec_row_fini(&got);
    assert_int_equal(rec_db_get(f->c, NULL, sids[0], &got), STORE_OK);
    assert_null(got.callback_url);
    assert_string_equal(got.callback_method, "POST");   /* the default */
    rec_row_fini(&got);
    assert_int_equal(rec_db_get_id(f->c, r[2].id, &got), STORE_OK);
    assert_string_equal(got.sid, sids[2]);
    rec_row_fini(&got);

    /* Update: the engine's columns. */
    snprintf(r[2].status, sizeof r[2].status, "processing");
    r[2].date_updated = 1700000009000LL;
    r[2].duration = 4;
    r[2].window_ms = 4200;
    snprintf(r[2].kaphila_call_id, sizeof r[2].kaphila_call_id, "k.1");
    snprintf(r[2].kaphila_recording_id, sizeof r[2].kaphila_recording_id, "kr.1");
    snprintf(r[2].filename, sizeof r[2].filename, "a.wav");
    r[2].channels = 2;
    r[2].error_code = 0;
    assert_int_equal(rec_db_update(f->c, &r[2]), STORE_OK);
    assert_int_equal(rec_db_get(f->c, acct, sids[2], &got), STORE_OK);
    assert_string_equal(got.status, "processing");
    assert_int_equal(got.duration, 4);
    assert_int_equal(got.window_ms, 4200);
    assert_string_equal(got.kaphila_recording_id, "kr.1");
    assert_string_equal(got.filename, "a.wav");
    assert_int_equal(got.channels, 2);
    assert_int_equal(got.date_updated, 1700000009000LL);
    rec_row_fini(&got);
    rec_row ghost;
    make_rec(&ghost, acct, call.sid, "RecordVerb", "completed", 1);
    assert_int_equal(rec_db_update(f->c, &ghost), STORE_NOTFOUND);

    /* Pending media: a "processing" one counts. */
    char pend[64][SID_SIZE];
    bool found = false;
    assert_int_equal(rec_db_pending_calls(f->c, pend, 64, &n), STORE_OK);
    for (int i = 0; i < n; i++) found |= !strcmp(pend[i], call.sid);
    assert_true(found);

    /* Delete marks; lists skip marked rows unless asked. */
    assert_int_equal(rec_db_set_deleted(f->c, sids[3], 1700000010000LL), STORE_OK);
    assert_int_equal(rec_db_get(f->c, acct, sids[3], &got), STORE_OK);
    assert_true(got.deleted);
    rec_row_fini(&got);
    rec_filter flt = {.account_sid = acct};
    assert_int_equal(rec_db_list(f->c, &flt, 0, 0, 8, page, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(page[0].sid, sids[2]);
    assert_null(page[0].callback_url);
    for (int i = 0; i < n; i++) rec_row_fini(&page[i]);
    flt.include_deleted = true;
    assert_int_equal(rec_db_list(f->c, &flt, 0, 0, 2, page, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(page[0].sid, sids[3]);
    int64_t before = page[1].id;
    for (int i = 0; i < n; i++) rec_row_fini(&page[i]);
    assert_int_equal(rec_db_list(f->c, &flt, before, 0, 8, page, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(page[0].sid, sids[1]);
    for (int i = 0; i < n; i++) rec_row_fini(&page[i]);
    assert_int_equal(rec_db_list(f->c, &flt, 0, 3, 8, page, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(page[0].sid, sids[0]);
    for (int i = 0; i < n; i++) rec_row_fini(&page[i]);
    rec_filter byt = {.account_sid = acct, .call_sid = call.sid,
                      .created_from = 1700000001000LL, .created_to = 1700000003000LL};
    assert_int_equal(rec_db_list(f->c, &byt, 0, 0, 8, page, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(page[0].sid, sids[2]);
    assert_string_equal(page[1].sid, sids[1]);
    for (int i = 0; i < n; i++) rec_row_fini(&page[i]);
    rec_filter oth = {.account_sid = other};
    assert_int_equal(rec_db_list(f->c, &oth, 0, 0, 8, page, &n), STORE_OK);
    assert_int_equal(n, 0);

    /* Every row of the call, oldest first, deleted ones too. */
    rec_row *rows = NULL;
    assert_int_equal(rec_db_for_call(f->c, call.sid, &rows, &n), STORE_OK);
    assert_int_equal(n, 4);
    assert_string_equal(rows[0].sid, sids[0]);
    assert_string_equal(rows[1].callback_url, "http://cb.test/rec");
    assert_true(rows[3].deleted);
    rec_rows_free(rows, n);
    assert_int_equal(rec_db_for_call(f->c, "CAnone", &rows, &n), STORE_OK);
    assert_null(rows);
    assert_int_equal(n, 0);
    for (int i = 0; i < 4; i++) rec_row_fini(&r[i]);
    store_call_fini(&call);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kevents, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_outbox, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_events, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_notifications, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_account_keys, ut_store_setup,
                                        ut_store_teardown),
        cmocka_unit_test_setup_teardown(test_recordings, ut_store_setup,
                                        ut_store_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
