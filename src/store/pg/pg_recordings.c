/* pg_recordings.c — the recordings table on PostgreSQL (recstore.h): every
 * statement on it, with the contracts of SQLite's store_recordings.c. Lists
 * walk recordings_acct or recordings_call backwards from the newest row. */
#include "pg_int.h"

#define COLS                                                                        \
    "id, sid, account_sid, call_sid, source, status, channels, track, date_created," \
    " date_updated, start_time, duration, offset_ms, window_ms, kaphila_call_id,"     \
    " kaphila_recording_id, filename, error_code, callback_url, callback_method,"    \
    " callback_events, deleted"
enum { K_ID, K_SID, K_ACCT, K_CALL, K_SOURCE, K_STATUS, K_CHANNELS, K_TRACK, K_CREATED,
       K_UPDATED, K_START, K_DURATION, K_OFFSET, K_WINDOW, K_KCALL, K_KREC, K_FILENAME,
       K_ERROR, K_CB_URL, K_CB_METHOD, K_CB_EVENTS, K_DELETED };

static void read_row(const PGresult *r, int i, rec_row *o, bool with_callback)
{
    memset(o, 0, sizeof *o);
    o->id = col_i64(r, i, K_ID);
    col_copy(r, i, K_SID, o->sid, sizeof o->sid);
    col_copy(r, i, K_ACCT, o->account_sid, sizeof o->account_sid);
    col_copy(r, i, K_CALL, o->call_sid, sizeof o->call_sid);
    col_copy(r, i, K_SOURCE, o->source, sizeof o->source);
    col_copy(r, i, K_STATUS, o->status, sizeof o->status);
    o->channels = (int)col_i64(r, i, K_CHANNELS);
    col_copy(r, i, K_TRACK, o->track, sizeof o->track);
    o->date_created = col_i64(r, i, K_CREATED);
    o->date_updated = col_i64(r, i, K_UPDATED);
    o->start_time = col_i64(r, i, K_START);
    o->duration = (int)col_i64(r, i, K_DURATION);
    o->offset_ms = col_i64(r, i, K_OFFSET);
    o->window_ms = col_i64(r, i, K_WINDOW);
    col_copy(r, i, K_KCALL, o->kaphila_call_id, sizeof o->kaphila_call_id);
    col_copy(r, i, K_KREC, o->kaphila_recording_id, sizeof o->kaphila_recording_id);
    col_copy(r, i, K_FILENAME, o->filename, sizeof o->filename);
    o->error_code = (int)col_i64(r, i, K_ERROR);
    col_copy(r, i, K_CB_METHOD, o->callback_method, sizeof o->callback_method);
    o->callback_events = (int)col_i64(r, i, K_CB_EVENTS);
    o->deleted = col_i64(r, i, K_DELETED) != 0;
    const char *url = PQgetvalue(r, i, K_CB_URL);
    if (with_callback && url && *url) o->callback_url = strdup(url);
}

store_status pg_rec_insert(store_conn *c, rec_row *w)
{
    pg_num n[11];
    const char *v[] = {
        w->sid, w->account_sid, w->call_sid, w->source, w->status, pg_i64(&n[0], w->channels),
        w->track, pg_i64(&n[1], w->date_created), pg_i64(&n[2], w->date_updated),
        pg_i64(&n[3], w->start_time), pg_i64(&n[4], w->duration), pg_i64(&n[5], w->offset_ms),
        pg_i64(&n[6], w->window_ms), w->kaphila_call_id, w->kaphila_recording_id, w->filename,
        pg_i64(&n[7], w->error_code), pg_txt(w->callback_url),
        w->callback_method[0] ? w->callback_method : "POST", pg_i64(&n[8], w->callback_events),
        pg_i64(&n[9], w->deleted)};
    return pg_insert_id(c,
        "INSERT INTO recordings(sid, account_sid, call_sid, source, status, channels, track,"
        " date_created, date_updated, start_time, duration, offset_ms, window_ms,"
        " kaphila_call_id, kaphila_recording_id, filename, error_code, callback_url,"
        " callback_method, callback_events, deleted)"
        " VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)"
        " ON CONFLICT DO NOTHING RETURNING id", 21, v, &w->id, "recording insert");
}

static store_status get_one(store_conn *c, const char *sql, int n, const char *const *v,
                            rec_row *out)
{
    store_status st;
    PGresult *r = pg_run(c, sql, n, v, &st, "recording get");
    if (r && PQntuples(r) == 1) read_row(r, 0, out, true);
    else if (r) st = STORE_NOTFOUND;
    PQclear(r);
    return st;
}

store_status pg_rec_get(store_conn *c, const char *account_sid, const char *sid, rec_row *out)
{
    const char *v[] = {pg_txt(sid), account_sid};
    return account_sid
        ? get_one(c, "SELECT " COLS " FROM recordings WHERE sid = $1 AND account_sid = $2",
                  2, v, out)
        : get_one(c, "SELECT " COLS " FROM recordings WHERE sid = $1", 1, v, out);
}

store_status pg_rec_get_id(store_conn *c, int64_t id, rec_row *out)
{
    pg_num n;
    const char *v[] = {pg_i64(&n, id)};
    return get_one(c, "SELECT " COLS " FROM recordings WHERE id = $1", 1, v, out);
}

store_status pg_rec_update(store_conn *c, const rec_row *w)
{
    pg_num n[6];
    store_status st;
    const char *v[] = {w->sid, w->status, pg_i64(&n[0], w->date_updated),
                       pg_i64(&n[1], w->duration), pg_i64(&n[2], w->window_ms),
                       w->kaphila_call_id, w->kaphila_recording_id, w->filename,
                       pg_i64(&n[3], w->channels), pg_i64(&n[4], w->error_code)};
    PGresult *r = pg_run(c,
        "UPDATE recordings SET status = $2, date_updated = $3, duration = $4, window_ms = $5,"
        " kaphila_call_id = $6, kaphila_recording_id = $7, filename = $8, channels = $9,"
        " error_code = $10 WHERE sid = $1", 10, v, &st, "recording update");
    if (r && !strcmp(PQcmdTuples(r), "0")) st = STORE_NOTFOUND;
    PQclear(r);
    return st;
}

store_status pg_rec_set_deleted(store_conn *c, const char *sid, int64_t now)
{
    pg_num n;
    const char *v[] = {pg_txt(sid), pg_i64(&n, now)};
    return pg_do(c, "UPDATE recordings SET deleted = 1, date_updated = $2 WHERE sid = $1", 2, v,
                 "recording delete");
}

store_status pg_rec_list(store_conn *c, const rec_filter *f, int64_t before_id, int64_t offset,
                         int limit, rec_row *out, int *n_out)
{
    char sql[700];
    const char *v[8];
    pg_num num[5];
    int n = 0, ni = 0;
    bool keyset = before_id > 0 && offset <= 0;
    int len = snprintf(sql, sizeof sql, "SELECT " COLS " FROM recordings WHERE account_sid = $1");
    v[n++] = pg_txt(f->account_sid);
#define ADD(cond, val) do { v[n++] = (val); \
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND " cond, n); } while (0)
    if (f->call_sid && *f->call_sid) ADD("call_sid = $%d", f->call_sid);
    if (f->created_from) ADD("date_created >= $%d", pg_i64(&num[ni++], f->created_from));
    if (f->created_to) ADD("date_created < $%d", pg_i64(&num[ni++], f->created_to));
    if (keyset) ADD("id < $%d", pg_i64(&num[ni++], before_id));
#undef ADD
    if (!f->include_deleted)
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND deleted = 0");
    v[n++] = pg_i64(&num[ni++], limit);
    len += snprintf(sql + len, sizeof sql - (size_t)len, " ORDER BY id DESC LIMIT $%d", n);
    if (offset > 0) {
        v[n++] = pg_i64(&num[ni++], offset);
        snprintf(sql + len, sizeof sql - (size_t)len, " OFFSET $%d", n);
    }
    store_status st;
    PGresult *r = pg_run(c, sql, n, v, &st, "recording list");
    *n_out = 0;
    for (int i = 0; r && i < PQntuples(r) && i < limit; i++) read_row(r, i, &out[(*n_out)++], false);
    PQclear(r);
    return st;
}

store_status pg_rec_for_call(store_conn *c, const char *call_sid, rec_row **out, int *n_out)
{
    pg_num n;
    const char *v[] = {pg_txt(call_sid), pg_i64(&n, REC_MAX_PER_CALL)};
    store_status st;
    *out = NULL;
    *n_out = 0;
    PGresult *r = pg_run(c, "SELECT " COLS " FROM recordings WHERE call_sid = $1"
                            " ORDER BY id LIMIT $2", 2, v, &st, "recordings of a call");
    int rows = r ? PQntuples(r) : 0;
    if (rows > 0) {
        rec_row *all = calloc((size_t)rows, sizeof *all);
        if (!all) {
            st = STORE_ERROR;
        } else {
            for (int i = 0; i < rows; i++) read_row(r, i, &all[i], true);
            *out = all;
            *n_out = rows;
        }
    }
    PQclear(r);
    return st;
}

store_status pg_rec_pending_calls(store_conn *c, char (*out)[SID_SIZE], int max, int *n_out)
{
    /* As store_recordings.c: windows closed but not cut, and recordings still
     * "in progress" whose call has ended. */
    pg_num n;
    const char *v[] = {pg_i64(&n, max), c->owner->instance};
    store_status st;
    /* This instance's calls' recordings only (store/cluster.h): another's
     * are its owner's, or adoption's. */
    PGresult *r = pg_run(c,
        "SELECT DISTINCT call_sid FROM recordings WHERE deleted = 0 AND"
        " (status IN ('stopped', 'processing') OR (status = 'in-progress' AND EXISTS"
        "  (SELECT 1 FROM calls WHERE calls.sid = recordings.call_sid"
        "   AND calls.status NOT IN ('queued', 'ringing', 'in-progress'))))"
        " AND NOT EXISTS (SELECT 1 FROM calls WHERE calls.sid = recordings.call_sid"
        "  AND calls.owner <> $2)"
        " LIMIT $1", 2, v, &st, "pending recordings");
    *n_out = 0;
    for (int i = 0; r && i < PQntuples(r) && i < max; i++)
        col_copy(r, i, 0, out[(*n_out)++], SID_SIZE);
    PQclear(r);
    return st;
}
