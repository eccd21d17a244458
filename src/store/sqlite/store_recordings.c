/* store_recordings.c — the recordings table (recstore.h): every statement
 * on it. Created by store_schema.c's migration 1.
 *
 * Statements come from the caller's connection's cache (store_stmt_get):
 * the engine looks up a call's recordings for every recording event Kaphila
 * sends, recording or not. Every list walks an index backwards from the newest row
 * (recordings_acct or recordings_call), so a page costs the same whatever
 * its number. */
#include "sqlite_int.h"

#include <stdlib.h>

#include "store/recstore.h"

#define COLS                                                                        \
    "id, sid, account_sid, call_sid, source, status, channels, track, date_created," \
    " date_updated, start_time, duration, offset_ms, window_ms, kaphila_call_id,"     \
    " kaphila_recording_id, filename, error_code, callback_url, callback_method,"    \
    " callback_events, deleted"
enum { K_ID, K_SID, K_ACCT, K_CALL, K_SOURCE, K_STATUS, K_CHANNELS, K_TRACK, K_CREATED,
       K_UPDATED, K_START, K_DURATION, K_OFFSET, K_WINDOW, K_KCALL, K_KREC, K_FILENAME,
       K_ERROR, K_CB_URL, K_CB_METHOD, K_CB_EVENTS, K_DELETED };

static void read_row(sqlite3_stmt *st, rec_row *r, bool with_callback)
{
    const unsigned char *url;
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, K_ID);
    copy_col(st, K_SID, r->sid, sizeof r->sid);
    copy_col(st, K_ACCT, r->account_sid, sizeof r->account_sid);
    copy_col(st, K_CALL, r->call_sid, sizeof r->call_sid);
    copy_col(st, K_SOURCE, r->source, sizeof r->source);
    copy_col(st, K_STATUS, r->status, sizeof r->status);
    r->channels = sqlite3_column_int(st, K_CHANNELS);
    copy_col(st, K_TRACK, r->track, sizeof r->track);
    r->date_created = sqlite3_column_int64(st, K_CREATED);
    r->date_updated = sqlite3_column_int64(st, K_UPDATED);
    r->start_time = sqlite3_column_int64(st, K_START);
    r->duration = sqlite3_column_int(st, K_DURATION);
    r->offset_ms = sqlite3_column_int64(st, K_OFFSET);
    r->window_ms = sqlite3_column_int64(st, K_WINDOW);
    copy_col(st, K_KCALL, r->kaphila_call_id, sizeof r->kaphila_call_id);
    copy_col(st, K_KREC, r->kaphila_recording_id, sizeof r->kaphila_recording_id);
    copy_col(st, K_FILENAME, r->filename, sizeof r->filename);
    r->error_code = sqlite3_column_int(st, K_ERROR);
    copy_col(st, K_CB_METHOD, r->callback_method, sizeof r->callback_method);
    r->callback_events = sqlite3_column_int(st, K_CB_EVENTS);
    r->deleted = sqlite3_column_int(st, K_DELETED) != 0;
    url = sqlite3_column_text(st, K_CB_URL);
    if (with_callback && url && *url) r->callback_url = strdup((const char *)url);
}

store_status sq_rec_insert(store_conn *c, rec_row *r)
{
    sqlite3_stmt *st = store_stmt_get(c,
        "INSERT INTO recordings(sid, account_sid, call_sid, source, status, channels, track,"
        " date_created, date_updated, start_time, duration, offset_ms, window_ms,"
        " kaphila_call_id, kaphila_recording_id, filename, error_code, callback_url,"
        " callback_method, callback_events, deleted)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21)");
    store_status s;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, r->sid);
    bind_text(st, 2, r->account_sid);
    bind_text(st, 3, r->call_sid);
    bind_text(st, 4, r->source);
    bind_text(st, 5, r->status);
    sqlite3_bind_int(st, 6, r->channels);
    bind_text(st, 7, r->track);
    sqlite3_bind_int64(st, 8, r->date_created);
    sqlite3_bind_int64(st, 9, r->date_updated);
    sqlite3_bind_int64(st, 10, r->start_time);
    sqlite3_bind_int(st, 11, r->duration);
    sqlite3_bind_int64(st, 12, r->offset_ms);
    sqlite3_bind_int64(st, 13, r->window_ms);
    bind_text(st, 14, r->kaphila_call_id);
    bind_text(st, 15, r->kaphila_recording_id);
    bind_text(st, 16, r->filename);
    sqlite3_bind_int(st, 17, r->error_code);
    bind_text(st, 18, r->callback_url);
    bind_text(st, 19, r->callback_method[0] ? r->callback_method : "POST");
    sqlite3_bind_int(st, 20, r->callback_events);
    sqlite3_bind_int(st, 21, r->deleted);
    s = store_map_rc_c(c, sqlite3_step(st), "recording insert");
    if (s == STORE_OK) r->id = sqlite3_last_insert_rowid(SQ(c)->db);
    store_stmt_done(c, st);
    return s;
}

static store_status get_one(store_conn *c, sqlite3_stmt *st, rec_row *out)
{
    int rc = sqlite3_step(st);
    store_status s;
    if (rc == SQLITE_ROW) {
        read_row(st, out, true);
        s = STORE_OK;
    } else {
        s = rc == SQLITE_DONE ? STORE_NOTFOUND : store_map_rc_c(c, rc, "recording get");
    }
    store_stmt_done(c, st);
    return s;
}

store_status sq_rec_get(store_conn *c, const char *account_sid, const char *sid, rec_row *out)
{
    sqlite3_stmt *st = store_stmt_get(c, account_sid
        ? "SELECT " COLS " FROM recordings WHERE sid = ?1 AND account_sid = ?2"
        : "SELECT " COLS " FROM recordings WHERE sid = ?1");
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    if (account_sid) bind_text(st, 2, account_sid);
    return get_one(c, st, out);
}

store_status sq_rec_get_id(store_conn *c, int64_t id, rec_row *out)
{
    sqlite3_stmt *st = store_stmt_get(c, "SELECT " COLS " FROM recordings WHERE id = ?1");
    if (!st) return STORE_ERROR;
    sqlite3_bind_int64(st, 1, id);
    return get_one(c, st, out);
}

store_status sq_rec_update(store_conn *c, const rec_row *r)
{
    sqlite3_stmt *st = store_stmt_get(c,
        "UPDATE recordings SET status = ?2, date_updated = ?3, duration = ?4, window_ms = ?5,"
        " kaphila_call_id = ?6, kaphila_recording_id = ?7, filename = ?8, channels = ?9,"
        " error_code = ?10 WHERE sid = ?1");
    store_status s;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, r->sid);
    bind_text(st, 2, r->status);
    sqlite3_bind_int64(st, 3, r->date_updated);
    sqlite3_bind_int(st, 4, r->duration);
    sqlite3_bind_int64(st, 5, r->window_ms);
    bind_text(st, 6, r->kaphila_call_id);
    bind_text(st, 7, r->kaphila_recording_id);
    bind_text(st, 8, r->filename);
    sqlite3_bind_int(st, 9, r->channels);
    sqlite3_bind_int(st, 10, r->error_code);
    s = store_map_rc_c(c, sqlite3_step(st), "recording update");
    if (s == STORE_OK && sqlite3_changes(SQ(c)->db) == 0) s = STORE_NOTFOUND;
    store_stmt_done(c, st);
    return s;
}

store_status sq_rec_set_deleted(store_conn *c, const char *sid, int64_t now)
{
    sqlite3_stmt *st = store_stmt_get(c,
        "UPDATE recordings SET deleted = 1, date_updated = ?2 WHERE sid = ?1");
    store_status s;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    sqlite3_bind_int64(st, 2, now);
    s = store_map_rc_c(c, sqlite3_step(st), "recording delete");
    store_stmt_done(c, st);
    return s;
}

store_status sq_rec_list(store_conn *c, const rec_filter *f, int64_t before_id, int64_t offset,
                         int limit, rec_row *out, int *n_out)
{
    char sql[640];
    int n = 0, idx = 1, rc = SQLITE_DONE;
    bool by_call = f->call_sid && *f->call_sid;
    bool keyset = before_id > 0 && offset <= 0;
    sqlite3_stmt *st;
    store_status s = STORE_OK;
    int len = snprintf(sql, sizeof sql, "SELECT " COLS " FROM recordings WHERE account_sid = ?%d",
                       idx++);
#define ADD(cond) len += snprintf(sql + len, sizeof sql - (size_t)len, " AND " cond, idx++)
    if (by_call) ADD("call_sid = ?%d");
    if (f->created_from) ADD("date_created >= ?%d");
    if (f->created_to) ADD("date_created < ?%d");
    if (keyset) ADD("id < ?%d");
#undef ADD
    if (!f->include_deleted)
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND deleted = 0");
    len += snprintf(sql + len, sizeof sql - (size_t)len, " ORDER BY id DESC LIMIT ?%d", idx++);
    if (offset > 0) snprintf(sql + len, sizeof sql - (size_t)len, " OFFSET ?%d", idx++);

    if (!(st = store_stmt_get(c, sql))) return STORE_ERROR;
    idx = 1;
    bind_text(st, idx++, f->account_sid);
    if (by_call) bind_text(st, idx++, f->call_sid);
    if (f->created_from) sqlite3_bind_int64(st, idx++, f->created_from);
    if (f->created_to) sqlite3_bind_int64(st, idx++, f->created_to);
    if (keyset) sqlite3_bind_int64(st, idx++, before_id);
    sqlite3_bind_int(st, idx++, limit);
    if (offset > 0) sqlite3_bind_int64(st, idx++, offset);
    while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) read_row(st, &out[n++], false);
    if (n < limit && rc != SQLITE_DONE) s = store_map_rc_c(c, rc, "recording list");
    store_stmt_done(c, st);
    *n_out = n;
    return s;
}

store_status sq_rec_for_call(store_conn *c, const char *call_sid, rec_row **out, int *n_out)
{
    sqlite3_stmt *st = store_stmt_get(c, "SELECT " COLS " FROM recordings WHERE call_sid = ?1"
                                   " ORDER BY id LIMIT ?2");
    rec_row *rows = NULL;
    int n = 0, alloc = 0, rc = SQLITE_DONE;
    store_status s = STORE_OK;
    *out = NULL;
    *n_out = 0;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, call_sid);
    sqlite3_bind_int(st, 2, REC_MAX_PER_CALL);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == alloc) {
            /* Most calls have one or two recordings: start small. */
            int na = alloc ? alloc * 2 : 4;
            rec_row *nr = realloc(rows, (size_t)na * sizeof *nr);
            if (!nr) { s = STORE_ERROR; break; }
            rows = nr;
            alloc = na;
        }
        read_row(st, &rows[n++], true);
    }
    if (s == STORE_OK && rc != SQLITE_DONE) s = store_map_rc_c(c, rc, "recordings of a call");
    store_stmt_done(c, st);
    if (s != STORE_OK) {
        rec_rows_free(rows, n);
        return s;
    }
    *out = rows;
    *n_out = n;
    return STORE_OK;
}

store_status sq_rec_pending_calls(store_conn *c, char (*out)[SID_SIZE], int max, int *n_out)
{
    /* Waiting for media: windows closed but not cut, and recordings still
     * "in progress" although their call has ended (the events that would
     * have closed them were lost to a restart). The call is looked up by SID
     * per recording: `call_sid IN (SELECT sid FROM calls WHERE …)` made
     * SQLite list every ended call first, a scan of the whole table. */
    sqlite3_stmt *st = store_stmt_get(c,
        "SELECT DISTINCT call_sid FROM recordings WHERE deleted = 0 AND"
        " (status IN ('stopped', 'processing') OR (status = 'in-progress' AND EXISTS"
        "  (SELECT 1 FROM calls WHERE calls.sid = recordings.call_sid"
        "   AND calls.status NOT IN ('queued', 'ringing', 'in-progress'))))"
        " LIMIT ?1");
    int n = 0, rc = SQLITE_DONE;
    store_status s = STORE_OK;
    if (!st) return STORE_ERROR;
    sqlite3_bind_int(st, 1, max);
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) copy_col(st, 0, out[n++], SID_SIZE);
    if (n < max && rc != SQLITE_DONE) s = store_map_rc_c(c, rc, "pending recordings");
    store_stmt_done(c, st);
    *n_out = n;
    return s;
}

