/* store_log.c — the append-mostly tables: raw Kaphila events (kevents),
 * the webhook outbox, the call event log and notifications. */
#include "sqlite_int.h"

#include <stdlib.h>

#include "base/jsonw.h"
#include "base/timefmt.h"

/* ---- raw Kaphila events ---- */

store_status sq_kevent_insert(store_conn *c, const char *call_sid, const char *body,
                                 size_t len, bool done, int64_t *id)
{
    sqlite3_stmt *st = stmt_get(c, S_KEV_INSERT);
    store_status r;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, call_sid);
    sqlite3_bind_int64(st, 2, timefmt_now_ms());
    sqlite3_bind_text(st, 3, body, (int)len, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, done ? 1 : 0);
    r = step_done(c, st, "kevent insert");
    if (r == STORE_OK && id) *id = sqlite3_last_insert_rowid(SQ(c)->db);
    return r;
}

store_status sq_kevent_done(store_conn *c, int64_t id)
{
    sqlite3_stmt *st = stmt_get(c, S_KEV_DONE);
    if (!st) return STORE_ERROR;
    sqlite3_bind_int64(st, 1, id);
    return step_done(c, st, "kevent done");
}

store_status sq_kevent_each_pending(store_conn *c,
        void (*cb)(int64_t id, const char *call_sid, const char *body, void *arg), void *arg)
{
    sqlite3_stmt *st = stmt_get(c, S_KEV_PENDING);
    int rc;
    if (!st) return STORE_ERROR;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
           (const char *)sqlite3_column_text(st, 2), arg);
    sqlite3_reset(st);
    return store_map_rc_c(c, rc, "pending kevents");
}

/* ---- outbox ---- */

store_status sq_outbox_insert(store_conn *c, store_outbox *o)
{
    sqlite3_stmt *st = stmt_get(c, S_OB_INSERT);
    store_status r;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, o->call_sid);
    bind_text(st, 2, o->account_sid);
    bind_text(st, 3, o->kind);
    sqlite3_bind_int(st, 4, o->seq);
    bind_text(st, 5, o->url);
    bind_text(st, 6, o->method);
    bind_text(st, 7, o->params);
    bind_text(st, 8, o->idem);
    sqlite3_bind_int64(st, 9, o->created);
    r = step_done(c, st, "outbox insert");
    if (r == STORE_OK) o->id = sqlite3_last_insert_rowid(SQ(c)->db);
    return r;
}

store_status sq_outbox_finish(store_conn *c, int64_t id, const char *state, int attempts)
{
    sqlite3_stmt *st = stmt_get(c, S_OB_FINISH);
    if (!st) return STORE_ERROR;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, state);
    sqlite3_bind_int(st, 3, attempts);
    return step_done(c, st, "outbox finish");
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

store_status sq_outbox_each_pending(store_conn *c, void (*cb)(store_outbox *o, void *arg),
                                       void *arg)
{
    sqlite3_stmt *st = stmt_get(c, S_OB_PENDING);
    int rc;
    if (!st) return STORE_ERROR;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_outbox o = {0};
        o.id = sqlite3_column_int64(st, 0);
        copy_col(st, 1, o.call_sid, sizeof o.call_sid);
        copy_col(st, 2, o.account_sid, sizeof o.account_sid);
        copy_col(st, 3, o.kind, sizeof o.kind);
        o.seq = sqlite3_column_int(st, 4);
        o.url = dup_col(st, 5);
        o.method = dup_col(st, 6);
        o.params = dup_col(st, 7);
        copy_col(st, 8, o.idem, sizeof o.idem);
        o.created = sqlite3_column_int64(st, 9);
        if (o.url && o.method && o.params) cb(&o, arg);
        store_outbox_fini(&o);
    }
    sqlite3_reset(st);
    return store_map_rc_c(c, rc, "pending outbox");
}

store_status sq_outbox_stats(store_conn *c, int64_t *pending, int64_t *oldest_ms)
{
    sqlite3_stmt *st = stmt_get(c, S_OB_STATS);
    int rc;
    if (!st) return STORE_ERROR;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *pending = sqlite3_column_int64(st, 0);
        *oldest_ms = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return store_map_rc_c(c, rc, "outbox stats");
}

/* ---- call events ---- */

store_status sq_event_insert(store_conn *c, const char *account_sid, const char *call_sid,
                                int64_t ts, json_t *request, const char *params, json_t *response)
{
    sqlite3_stmt *st = stmt_get(c, S_EV_INSERT);
    char *rq = NULL, *rs = NULL;
    store_status r = STORE_ERROR;
    if (!st) return STORE_ERROR;
    rq = jsonw_dumps(request);
    rs = jsonw_dumps(response);
    if (!rq || !rs) goto out;
    bind_text(st, 1, account_sid);
    bind_text(st, 2, call_sid);
    sqlite3_bind_int64(st, 3, ts);
    bind_text(st, 4, rq);
    bind_text(st, 5, rs);
    if (params) bind_text(st, 6, params);   /* unbound: NULL */
    r = step_done(c, st, "event insert");
out:
    free(rq);
    free(rs);
    return r;
}

store_status sq_event_list(store_conn *c, const char *account_sid, const char *call_sid,
                              int64_t after_id, int64_t offset, int limit, json_t *out_arr,
                              int64_t *last_id)
{
    /* Oldest first, as a log reads; keyset on id like the call list. */
    const char *sql = offset > 0
        ? "SELECT id, request, response, params FROM call_events WHERE call_sid = ?1 AND"
          " account_sid = ?2 ORDER BY id LIMIT ?3 OFFSET ?4"
        : "SELECT id, request, response, params FROM call_events WHERE call_sid = ?1 AND"
          " account_sid = ?2 AND id > ?4 ORDER BY id LIMIT ?3";
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(SQ(c)->db, sql, -1, &st, NULL) != SQLITE_OK)
        return store_map_rc_c(c, sqlite3_errcode(SQ(c)->db), "event list prepare");
    bind_text(st, 1, call_sid);
    bind_text(st, 2, account_sid);
    sqlite3_bind_int(st, 3, limit);
    sqlite3_bind_int64(st, 4, offset > 0 ? offset : after_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *rq = json_loads((const char *)sqlite3_column_text(st, 1), 0, NULL);
        json_t *rs = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
        const char *params = (const char *)sqlite3_column_text(st, 3);
        if (params && json_is_object(rq)) json_object_set_new(rq, "parameters", store_event_params_object(params));
        *last_id = sqlite3_column_int64(st, 0);
        json_array_append_new(out_arr, json_pack("{s:I,s:o?,s:o?}", "id",
                                                 (json_int_t)*last_id, "request", rq,
                                                 "response", rs));
    }
    sqlite3_finalize(st);
    return store_map_rc_c(c, rc, "event list");
}

/* ---- notifications ---- */

store_status sq_notification_insert(store_conn *c, const store_notification *n)
{
    sqlite3_stmt *st = stmt_get(c, S_NO_INSERT);
    if (!st) return STORE_ERROR;
    bind_text(st, 1, n->sid);
    bind_text(st, 2, n->account_sid);
    bind_text(st, 3, n->call_sid);
    sqlite3_bind_int(st, 4, n->error_code);
    sqlite3_bind_int(st, 5, n->log);
    sqlite3_bind_int64(st, 6, n->date);
    bind_text(st, 7, n->message_text);
    bind_text(st, 8, n->request_method);
    bind_text(st, 9, n->request_url);
    bind_text(st, 10, n->request_variables);
    bind_text(st, 11, n->response_body);
    bind_text(st, 12, n->response_headers);
    return step_done(c, st, "notification insert");
}

static json_t *row_object(sqlite3_stmt *st)
{
    json_t *o = json_object();
    int n = sqlite3_column_count(st);
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(st, i);
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
            json_object_set_new(o, name, json_integer(sqlite3_column_int64(st, i)));
            break;
        case SQLITE_NULL:
            json_object_set_new(o, name, json_null());
            break;
        default:
            json_object_set_new(o, name, json_string((const char *)sqlite3_column_text(st, i)));
        }
    }
    return o;
}

store_status sq_notification_list(store_conn *c, const char *account_sid,
                                     const char *call_sid, int64_t before_id, int64_t offset,
                                     int limit, json_t *out_arr, int64_t *last_id)
{
    char sql[320];
    sqlite3_stmt *st = NULL;
    int rc, idx = 1;
    snprintf(sql, sizeof sql,
             "SELECT * FROM notifications WHERE account_sid = ?1%s%s ORDER BY id DESC LIMIT ?3%s",
             call_sid && *call_sid ? " AND call_sid = ?2" : " AND ?2 = ?2",
             before_id > 0 && offset <= 0 ? " AND id < ?4" : " AND ?4 = ?4",
             offset > 0 ? " OFFSET ?5" : " OFFSET 0 * ?5");
    if (sqlite3_prepare_v2(SQ(c)->db, sql, -1, &st, NULL) != SQLITE_OK)
        return store_map_rc_c(c, sqlite3_errcode(SQ(c)->db), "notification list prepare");
    bind_text(st, idx++, account_sid);
    bind_text(st, idx++, call_sid ? call_sid : "");
    sqlite3_bind_int(st, idx++, limit);
    sqlite3_bind_int64(st, idx++, before_id);
    sqlite3_bind_int64(st, idx++, offset);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        *last_id = sqlite3_column_int64(st, 0);
        json_array_append_new(out_arr, row_object(st));
    }
    sqlite3_finalize(st);
    return store_map_rc_c(c, rc, "notification list");
}

store_status sq_notification_get(store_conn *c, const char *account_sid, const char *sid,
                                    json_t **out)
{
    sqlite3_stmt *st = stmt_get(c, S_NO_GET);
    store_status r;
    int rc;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    bind_text(st, 2, account_sid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) { *out = row_object(st); r = STORE_OK; }
    else r = rc == SQLITE_DONE ? STORE_NOTFOUND : store_map_rc_c(c, rc, "notification get");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

