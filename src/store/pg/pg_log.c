/* pg_log.c — the append-mostly tables on PostgreSQL: raw Kaphila events
 * (kevents), the webhook outbox, the call event log and notifications. Same
 * contracts as SQLite's store_log.c (store.h). */
#include "pg_int.h"

#include "base/timefmt.h"

/* ---- raw Kaphila events ---- */

store_status pg_kevent_insert(store_conn *c, const char *call_sid, const char *body,
                              size_t len, bool done, int64_t *id)
{
    /* Text parameters end at their NUL: the body is copied to end at len. */
    char *b = strndup(body, len);
    pg_num n;
    store_status st;
    if (!b) return STORE_ERROR;
    const char *v[] = {pg_txt(call_sid), pg_i64(&n, timefmt_now_ms()), b, done ? "1" : "0"};
    st = pg_insert_id(c, "INSERT INTO kevents(call_sid, received_at, body, done)"
                         " VALUES($1, $2, $3, $4) RETURNING id", 4, v, id, "kevent insert");
    free(b);
    return st;
}

store_status pg_kevent_done(store_conn *c, int64_t id)
{
    pg_num n;
    const char *v[] = {pg_i64(&n, id)};
    return pg_defer(c, "UPDATE kevents SET done = 1 WHERE id = $1", 1, v, NULL, false,
                    "kevent done");
}

store_status pg_kevent_each_pending(store_conn *c,
        void (*cb)(int64_t id, const char *call_sid, const char *body, void *arg), void *arg)
{
    store_status st;
    const char *v[] = {c->owner->instance};
    /* This instance's calls' events (store/cluster.h); adoption replays the
     * others'. */
    PGresult *r = pg_run(c, "SELECT k.id, k.call_sid, k.body FROM kevents k"
                            " LEFT JOIN calls c ON c.sid = k.call_sid"
                            " WHERE k.done = 0 AND (c.owner = $1 OR c.sid IS NULL) ORDER BY k.id",
                         1, v, &st, "pending kevents");
    for (int i = 0; r && i < PQntuples(r); i++)
        cb(col_i64(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), arg);
    PQclear(r);
    return st;
}

/* ---- outbox ---- */

store_status pg_outbox_insert(store_conn *c, store_outbox *o)
{
    pg_num n[2];
    const char *v[] = {o->call_sid, o->account_sid, o->kind, pg_i64(&n[0], o->seq),
                       pg_txt(o->url), pg_txt(o->method), pg_txt(o->params), o->idem,
                       pg_i64(&n[1], o->created)};
    return pg_defer(c,
        "INSERT INTO outbox(call_sid, account_sid, kind, seq, url, method, params, idem,"
        " created) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING id", 9, v, &o->id, false,
        "outbox insert");
}

store_status pg_outbox_finish(store_conn *c, int64_t id, const char *state, int attempts)
{
    pg_num n[2];
    const char *v[] = {pg_i64(&n[0], id), pg_txt(state), pg_i64(&n[1], attempts)};
    return pg_defer(c, "UPDATE outbox SET state = $2, attempts = $3 WHERE id = $1", 3, v, NULL,
                    false, "outbox finish");
}

store_status pg_outbox_each_pending(store_conn *c, void (*cb)(store_outbox *o, void *arg),
                                    void *arg)
{
    store_status st;
    const char *v[] = {c->owner->instance};
    /* This instance's calls' deliveries (store/cluster.h); adoption takes
     * the others'. A delivery whose call row was deleted has no owner left:
     * each instance that starts sends it (at least once, as always). */
    PGresult *r = pg_run(c,
        "SELECT o.id, o.call_sid, o.account_sid, o.kind, o.seq, o.url, o.method, o.params,"
        " o.idem, o.created FROM outbox o LEFT JOIN calls c ON c.sid = o.call_sid"
        " WHERE o.state = 'pending' AND (c.owner = $1 OR c.sid IS NULL) ORDER BY o.id", 1, v, &st,
        "pending outbox");
    pg_outbox_each_row(r, cb, arg);
    PQclear(r);
    return st;
}

void pg_outbox_each_row(const PGresult *r, void (*cb)(store_outbox *o, void *arg), void *arg)
{
    for (int i = 0; r && i < PQntuples(r); i++) {
        store_outbox o = {0};
        o.id = col_i64(r, i, 0);
        col_copy(r, i, 1, o.call_sid, sizeof o.call_sid);
        col_copy(r, i, 2, o.account_sid, sizeof o.account_sid);
        col_copy(r, i, 3, o.kind, sizeof o.kind);
        o.seq = (int)col_i64(r, i, 4);
        o.url = col_dup(r, i, 5);
        o.method = col_dup(r, i, 6);
        o.params = col_dup(r, i, 7);
        col_copy(r, i, 8, o.idem, sizeof o.idem);
        o.created = col_i64(r, i, 9);
        if (o.url && o.method && o.params) cb(&o, arg);
        store_outbox_fini(&o);
    }
}

store_status pg_outbox_stats(store_conn *c, int64_t *pending, int64_t *oldest_ms)
{
    store_status st;
    PGresult *r = pg_run(c, "SELECT count(*), coalesce(min(created), 0) FROM outbox"
                            " WHERE state = 'pending'", 0, NULL, &st, "outbox stats");
    if (r && PQntuples(r) == 1) {
        *pending = col_i64(r, 0, 0);
        *oldest_ms = col_i64(r, 0, 1);
    }
    PQclear(r);
    return st;
}

/* ---- call events ---- */

store_status pg_event_insert(store_conn *c, const char *account_sid, const char *call_sid,
                             int64_t ts, json_t *request, const char *params, json_t *response)
{
    char *rq = json_dumps(request, JSON_COMPACT), *rs = json_dumps(response, JSON_COMPACT);
    store_status st = STORE_ERROR;
    pg_num n;
    if (rq && rs) {
        const char *v[] = {pg_txt(account_sid), pg_txt(call_sid), pg_i64(&n, ts), rq, rs,
                           params};
        st = pg_defer(c, "INSERT INTO call_events(account_sid, call_sid, ts, request, response,"
                         " params) VALUES($1,$2,$3,$4,$5,$6)", 6, v, NULL, false, "event insert");
    }
    free(rq);
    free(rs);
    return st;
}

store_status pg_event_list(store_conn *c, const char *account_sid, const char *call_sid,
                           int64_t after_id, int64_t offset, int limit, json_t *out_arr,
                           int64_t *last_id)
{
    pg_num n[2];
    const char *v[] = {pg_txt(call_sid), pg_txt(account_sid), pg_i64(&n[0], limit),
                       pg_i64(&n[1], offset > 0 ? offset : after_id)};
    store_status st;
    PGresult *r = pg_run(c, offset > 0
        ? "SELECT id, request, response, params FROM call_events WHERE call_sid = $1 AND"
          " account_sid = $2 ORDER BY id LIMIT $3 OFFSET $4"
        : "SELECT id, request, response, params FROM call_events WHERE call_sid = $1 AND"
          " account_sid = $2 AND id > $4 ORDER BY id LIMIT $3", 4, v, &st, "event list");
    for (int i = 0; r && i < PQntuples(r); i++) {
        json_t *rq = json_loads(PQgetvalue(r, i, 1), 0, NULL);
        json_t *rs = json_loads(PQgetvalue(r, i, 2), 0, NULL);
        if (!PQgetisnull(r, i, 3) && json_is_object(rq))
            json_object_set_new(rq, "parameters", store_event_params_object(PQgetvalue(r, i, 3)));
        *last_id = col_i64(r, i, 0);
        json_array_append_new(out_arr, json_pack("{s:I,s:o?,s:o?}", "id", (json_int_t)*last_id,
                                                 "request", rq, "response", rs));
    }
    PQclear(r);
    return st;
}

/* ---- notifications ---- */

store_status pg_notification_insert(store_conn *c, const store_notification *no)
{
    pg_num n[3];
    const char *v[] = {no->sid, no->account_sid, no->call_sid, pg_i64(&n[0], no->error_code),
                       pg_i64(&n[1], no->log), pg_i64(&n[2], no->date),
                       pg_txt(no->message_text), pg_txt(no->request_method),
                       pg_txt(no->request_url), pg_txt(no->request_variables),
                       pg_txt(no->response_body), pg_txt(no->response_headers)};
    return pg_insert_id(c,
        "INSERT INTO notifications(sid, account_sid, call_sid, error_code, log, date,"
        " message_text, request_method, request_url, request_variables, response_body,"
        " response_headers) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
        " ON CONFLICT DO NOTHING RETURNING id", 12, v, NULL, "notification insert");
}

/* A row as an object of its raw columns, integers as integers (as SQLite's
 * typed columns give them). */
static json_t *row_object(const PGresult *r, int i)
{
    json_t *o = json_object();
    for (int k = 0; k < PQnfields(r); k++) {
        const char *name = PQfname(r, k);
        Oid t = PQftype(r, k);
        if (PQgetisnull(r, i, k)) json_object_set_new(o, name, json_null());
        else if (t == 20 || t == 21 || t == 23)      /* int8, int2, int4 */
            json_object_set_new(o, name, json_integer(col_i64(r, i, k)));
        else json_object_set_new(o, name, json_string(PQgetvalue(r, i, k)));
    }
    return o;
}

#define NO_COLS                                                                     \
    "id, sid, account_sid, call_sid, error_code, log, date, message_text,"           \
    " request_method, request_url, request_variables, response_body, response_headers"

store_status pg_notification_list(store_conn *c, const char *account_sid,
                                  const char *call_sid, int64_t before_id, int64_t offset,
                                  int limit, json_t *out_arr, int64_t *last_id)
{
    char sql[400];
    const char *v[5];
    pg_num num[3];
    int n = 0;
    int len = snprintf(sql, sizeof sql, "SELECT " NO_COLS " FROM notifications"
                                        " WHERE account_sid = $1");
    v[n++] = pg_txt(account_sid);
    if (call_sid && *call_sid) {
        v[n++] = call_sid;
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND call_sid = $%d", n);
    }
    if (before_id > 0 && offset <= 0) {
        v[n++] = pg_i64(&num[0], before_id);
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND id < $%d", n);
    }
    v[n++] = pg_i64(&num[1], limit);
    len += snprintf(sql + len, sizeof sql - (size_t)len, " ORDER BY id DESC LIMIT $%d", n);
    if (offset > 0) {
        v[n++] = pg_i64(&num[2], offset);
        snprintf(sql + len, sizeof sql - (size_t)len, " OFFSET $%d", n);
    }
    store_status st;
    PGresult *r = pg_run(c, sql, n, v, &st, "notification list");
    for (int i = 0; r && i < PQntuples(r); i++) {
        *last_id = col_i64(r, i, 0);
        json_array_append_new(out_arr, row_object(r, i));
    }
    PQclear(r);
    return st;
}

store_status pg_notification_get(store_conn *c, const char *account_sid, const char *sid,
                                 json_t **out)
{
    const char *v[] = {pg_txt(sid), pg_txt(account_sid)};
    store_status st;
    PGresult *r = pg_run(c, "SELECT " NO_COLS " FROM notifications WHERE sid = $1 AND"
                            " account_sid = $2", 2, v, &st, "notification get");
    if (r && PQntuples(r) == 1) *out = row_object(r, 0);
    else if (r) st = STORE_NOTFOUND;
    PQclear(r);
    return st;
}
