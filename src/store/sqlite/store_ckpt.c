/* store_ckpt.c — the call_checkpoints table (migration 5): each live call's
 * position in its TwiML (docs/scale-out.md §3). Written by the engine inside
 * its write batch, so a checkpoint commits with the event that moved the
 * call; read once per call by start-up recovery. Engine thread only. */
#include "sqlite_int.h"

#include <stdlib.h>

store_status sq_call_ckpt_put(store_conn *c, const char *call_sid, int64_t seq,
                                 const char *doc, const char *state, int64_t now_ms)
{
    /* The document is large and rarely changes: NULL keeps the stored one
     * (an upsert: the first write of a call always carries it). */
    sqlite3_stmt *st = store_stmt_get(c,
        "INSERT INTO call_checkpoints(call_sid, seq, doc, state, updated_ms)"
        " VALUES(?1, ?2, coalesce(?3, ''), ?4, ?5)"
        " ON CONFLICT(call_sid) DO UPDATE SET seq = excluded.seq,"
        " doc = coalesce(?3, doc), state = excluded.state, updated_ms = excluded.updated_ms");
    store_status r;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, call_sid);
    sqlite3_bind_int64(st, 2, seq);
    if (doc) bind_text(st, 3, doc);
    else sqlite3_bind_null(st, 3);
    bind_text(st, 4, state);
    sqlite3_bind_int64(st, 5, now_ms);
    r = store_map_rc_c(c, sqlite3_step(st), "checkpoint write");
    store_stmt_done(c, st);
    return r;
}

store_status sq_call_ckpt_get(store_conn *c, const char *call_sid, char **doc, char **state)
{
    sqlite3_stmt *st = store_stmt_get(c, "SELECT doc, state FROM call_checkpoints"
                                         " WHERE call_sid = ?1");
    store_status r = STORE_NOTFOUND;
    *doc = *state = NULL;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, call_sid);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *d = (const char *)sqlite3_column_text(st, 0);
        const char *s = (const char *)sqlite3_column_text(st, 1);
        *doc = strdup(d ? d : "");
        *state = strdup(s ? s : "");
        r = *doc && *state ? STORE_OK : STORE_ERROR;
        if (r != STORE_OK) { free(*doc); free(*state); *doc = *state = NULL; }
    } else if (rc != SQLITE_DONE) {
        r = store_map_rc_c(c, rc, "checkpoint read");
        if (r == STORE_OK) r = STORE_ERROR;
    }
    store_stmt_done(c, st);
    return r;
}

store_status sq_call_ckpt_delete(store_conn *c, const char *call_sid)
{
    sqlite3_stmt *st = store_stmt_get(c, "DELETE FROM call_checkpoints WHERE call_sid = ?1");
    store_status r;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, call_sid);
    r = store_map_rc_c(c, sqlite3_step(st), "checkpoint delete");
    store_stmt_done(c, st);
    return r;
}
