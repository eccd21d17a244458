/* pg_calls.c — the calls table on PostgreSQL (insert, the three lookups,
 * update, delete, the filtered keyset/offset list, the live calls for
 * recovery), the call checkpoints and the account keys. Same contracts as
 * SQLite's store_calls.c, store_ckpt.c and store_keys.c (store.h).
 *
 * Inserts that may meet a unique key say ON CONFLICT DO NOTHING and report
 * STORE_CONFLICT when no row came back: inside the engine's batch an error
 * would abort the whole transaction on PostgreSQL, where SQLite carries on. */
#include "pg_int.h"

#include <openssl/crypto.h>

/* The partial indexes' conditions (pg_schema.c), repeated in the queries
 * meant for them as SQLite's are. */
#define LIVE_CONDITION PG_LIVE_CONDITION
#define ENDED_CONDITION \
    "(status = 'completed' OR status = 'busy' OR status = 'failed'" \
    " OR status = 'no-answer' OR status = 'canceled')"

#define CALL_COLS PG_CALL_COLS
enum { C_ID, C_SID, C_ACCT, C_PARENT, C_TO, C_FROM, C_STATUS, C_DIR, C_ANSWERED_BY,
       C_CREATED, C_UPDATED, C_START, C_END, C_ANSWERED_AT, C_DURATION, C_QUEUE, C_KID,
       C_TOKEN, C_CBSEQ, C_PARAMS };

static void read_call(const PGresult *r, int i, store_call *out, bool with_params)
{
    memset(out, 0, sizeof *out);
    out->id = col_i64(r, i, C_ID);
    col_copy(r, i, C_SID, out->sid, sizeof out->sid);
    col_copy(r, i, C_ACCT, out->account_sid, sizeof out->account_sid);
    col_copy(r, i, C_PARENT, out->parent_call_sid, sizeof out->parent_call_sid);
    col_copy(r, i, C_TO, out->to, sizeof out->to);
    col_copy(r, i, C_FROM, out->from, sizeof out->from);
    col_copy(r, i, C_STATUS, out->status, sizeof out->status);
    col_copy(r, i, C_DIR, out->direction, sizeof out->direction);
    col_copy(r, i, C_ANSWERED_BY, out->answered_by, sizeof out->answered_by);
    out->date_created = col_i64(r, i, C_CREATED);
    out->date_updated = col_i64(r, i, C_UPDATED);
    out->start_time = col_i64(r, i, C_START);
    out->end_time = col_i64(r, i, C_END);
    out->answered_at = col_i64(r, i, C_ANSWERED_AT);
    out->duration = (int)col_i64(r, i, C_DURATION);
    out->queue_time = (int)col_i64(r, i, C_QUEUE);
    col_copy(r, i, C_KID, out->kaphila_id, sizeof out->kaphila_id);
    col_copy(r, i, C_TOKEN, out->token, sizeof out->token);
    out->cb_seq = (int)col_i64(r, i, C_CBSEQ);
    if (!with_params) return;
    out->params = json_loads(PQgetvalue(r, i, C_PARAMS), 0, NULL);
    if (!out->params) out->params = json_object();
}

store_status pg_call_insert(store_conn *c, store_call *call)
{
    pg_num n[9];
    store_status st;
    char *params = store_call_params_text(call);
    if (!params) return STORE_ERROR;
    const char *v[] = {
        call->sid, call->account_sid, call->parent_call_sid, call->to, call->from,
        call->status, call->direction, call->answered_by, pg_i64(&n[0], call->date_created),
        pg_i64(&n[1], call->date_updated), pg_i64(&n[2], call->start_time),
        pg_i64(&n[3], call->end_time), pg_i64(&n[4], call->answered_at),
        pg_i64(&n[5], call->duration), pg_i64(&n[6], call->queue_time), call->kaphila_id,
        call->token, pg_i64(&n[7], call->cb_seq), params, c->owner->instance};
    /* The inserting instance owns the call (store/cluster.h). */
    st = pg_insert_id(c,
        "INSERT INTO calls(sid, account_sid, parent_call_sid, to_num, from_num, status,"
        " direction, answered_by, date_created, date_updated, start_time, end_time,"
        " answered_at, duration, queue_time, kaphila_id, token, cb_seq, params, owner)"
        " VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)"
        " ON CONFLICT DO NOTHING RETURNING id", 20, v, &call->id, "call insert");
    free(params);
    return st;
}

static store_status get_one(store_conn *c, const char *sql, int n, const char *const *v,
                            store_call *out)
{
    store_status st;
    PGresult *r = pg_run(c, sql, n, v, &st, "call get");
    if (r) {
        if (PQntuples(r) == 1) read_call(r, 0, out, false);
        else st = STORE_NOTFOUND;
    }
    PQclear(r);
    return st;
}

store_status pg_call_get(store_conn *c, const char *account_sid, const char *sid,
                         store_call *out)
{
    const char *v[] = {pg_txt(sid), pg_txt(account_sid)};
    return get_one(c, "SELECT " CALL_COLS " FROM calls WHERE sid = $1 AND account_sid = $2",
                   2, v, out);
}

store_status pg_call_get_by_sid(store_conn *c, const char *sid, store_call *out)
{
    const char *v[] = {pg_txt(sid)};
    return get_one(c, "SELECT " CALL_COLS " FROM calls WHERE sid = $1", 1, v, out);
}

store_status pg_call_get_by_token(store_conn *c, const char *token, store_call *out)
{
    const char *v[] = {pg_txt(token)};
    return get_one(c, "SELECT " CALL_COLS " FROM calls WHERE token = $1", 1, v, out);
}

/* An UPDATE or DELETE that matched no row is STORE_NOTFOUND. */
static store_status changed(store_conn *c, const char *sql, int n, const char *const *v,
                            const char *what)
{
    store_status st;
    PGresult *r = pg_run(c, sql, n, v, &st, what);
    if (r && !strcmp(PQcmdTuples(r), "0")) st = STORE_NOTFOUND;
    PQclear(r);
    return st;
}

store_status pg_call_update(store_conn *c, const store_call *call)
{
    pg_num n[8];
    char *params = store_call_params_text(call);
    if (!params) return STORE_ERROR;
    const char *v[] = {
        call->sid, call->status, call->answered_by, pg_i64(&n[0], call->date_updated),
        pg_i64(&n[1], call->start_time), pg_i64(&n[2], call->end_time),
        pg_i64(&n[3], call->answered_at), pg_i64(&n[4], call->duration), call->kaphila_id,
        pg_i64(&n[5], call->cb_seq), params, pg_i64(&n[6], call->queue_time),
        c->owner->instance};
    /* The fence (store/cluster.h): only the call's owner writes it. An
     * instance that was paused past its lease and whose call another has
     * adopted meanwhile matches nothing here, so its batch is refused until
     * its next renewal finds it fenced and it exits. */
    store_status st = pg_defer(c,
        "UPDATE calls SET status=$2, answered_by=$3, date_updated=$4, start_time=$5,"
        " end_time=$6, answered_at=$7, duration=$8, kaphila_id=$9, cb_seq=$10, params=$11,"
        " queue_time=$12 WHERE sid = $1 AND owner = $13", 13, v, NULL, true, "call update");
    if (st == STORE_NOTFOUND && c->owner->instance[0])
        log_warn("store", "call %s is owned by another instance now: write refused", call->sid);
    free(params);
    return st;
}

store_status pg_call_delete(store_conn *c, const char *account_sid, const char *sid)
{
    const char *v[] = {pg_txt(sid), pg_txt(account_sid)};
    return changed(c, "DELETE FROM calls WHERE sid = $1 AND account_sid = $2", 2, v,
                   "call delete");
}

store_status pg_call_id(store_conn *c, const char *account_sid, const char *sid, int64_t *id)
{
    const char *v[] = {pg_txt(sid), pg_txt(account_sid)};
    store_status st;
    PGresult *r = pg_run(c, "SELECT id FROM calls WHERE sid = $1 AND account_sid = $2", 2, v,
                         &st, "call id");
    if (r) {
        if (PQntuples(r) == 1) *id = col_i64(r, 0, 0);
        else st = STORE_NOTFOUND;
    }
    PQclear(r);
    return st;
}

store_status pg_call_list(store_conn *c, const store_call_filter *f, int64_t before_id,
                          int64_t offset, int limit, store_call *out, int *n_out)
{
    /* Built per request as SQLite's is: account first, then each filter set,
     * newest first; an offset is PostgreSQL's own OFFSET (it walks the same
     * index entries SQLite's anchor query does). */
    char sql[900];
    const char *v[12];
    pg_num num[6];
    int n = 0, ni = 0;
    int len = snprintf(sql, sizeof sql, "SELECT " CALL_COLS " FROM calls WHERE account_sid = $1");
    v[n++] = pg_txt(f->account_sid);
#define ADD(cond, val) do { v[n++] = (val); \
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND " cond, n); } while (0)
    if (f->to && *f->to) ADD("to_num = $%d", f->to);
    if (f->from && *f->from) ADD("from_num = $%d", f->from);
    if (f->parent_call_sid && *f->parent_call_sid) ADD("parent_call_sid = $%d", f->parent_call_sid);
    if (f->status && *f->status) {
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND %s",
                        store_status_live(f->status) ? LIVE_CONDITION : ENDED_CONDITION);
        ADD("status = $%d", f->status);
    }
    if (f->start_from) ADD("start_time >= $%d", pg_i64(&num[ni++], f->start_from));
    if (f->start_to) ADD("start_time != 0 AND start_time < $%d", pg_i64(&num[ni++], f->start_to));
    if (f->end_from) ADD("end_time >= $%d", pg_i64(&num[ni++], f->end_from));
    if (f->end_to) ADD("end_time != 0 AND end_time < $%d", pg_i64(&num[ni++], f->end_to));
    if (offset <= 0 && before_id > 0) ADD("id < $%d", pg_i64(&num[ni++], before_id));
#undef ADD
    v[n++] = pg_i64(&num[ni++], limit);
    len += snprintf(sql + len, sizeof sql - (size_t)len, " ORDER BY id DESC LIMIT $%d", n);
    if (offset > 0) {
        v[n++] = pg_i64(&num[ni++], offset);
        snprintf(sql + len, sizeof sql - (size_t)len, " OFFSET $%d", n);
    }
    store_status st;
    PGresult *r = pg_run(c, sql, n, v, &st, "call list");
    int rows = r ? PQntuples(r) : 0;
    *n_out = 0;
    for (int i = 0; i < rows && i < limit; i++) read_call(r, i, &out[(*n_out)++], false);
    PQclear(r);
    return st;
}

store_status pg_call_each_live(store_conn *c, void (*cb)(store_call *call, void *arg),
                               void *arg)
{
    store_status st;
    const char *v[] = {c->owner->instance};
    /* This instance's calls only (store/cluster.h): the others' are theirs,
     * or adoption's once their owner is gone. */
    PGresult *r = pg_run(c, "SELECT " CALL_COLS " FROM calls WHERE " LIVE_CONDITION
                            " AND owner = $1 ORDER BY id", 1, v, &st, "live calls");
    for (int i = 0; r && i < PQntuples(r); i++) {
        store_call call;
        read_call(r, i, &call, true);
        cb(&call, arg);
        store_call_fini(&call);
    }
    PQclear(r);
    return st;
}

/* Rows of `SELECT CALL_COLS` to cb, params loaded (pg_cluster.c's adoption). */
void pg_calls_each_row(const PGresult *r, void (*cb)(store_call *call, void *arg), void *arg)
{
    for (int i = 0; r && i < PQntuples(r); i++) {
        store_call call;
        read_call(r, i, &call, true);
        cb(&call, arg);
        store_call_fini(&call);
    }
}

store_status pg_call_live_kaphila(store_conn *c, const char *kaphila_id)
{
    store_status st;
    const char *v[] = {kaphila_id};
    PGresult *r = pg_run(c, "SELECT 1 FROM calls WHERE kaphila_id = $1 AND kaphila_id != ''"
                            " AND " LIVE_CONDITION " LIMIT 1", 1, v, &st, "call by Kaphila id");
    if (r) st = PQntuples(r) ? STORE_OK : STORE_NOTFOUND;
    PQclear(r);
    return st;
}

/* ---- checkpoints (docs/scale-out.md §3) ---- */

store_status pg_ckpt_put(store_conn *c, const char *call_sid, int64_t seq, const char *doc,
                         const char *state, int64_t now_ms)
{
    pg_num n[2];
    const char *v[] = {pg_txt(call_sid), pg_i64(&n[0], seq), doc, pg_txt(state),
                       pg_i64(&n[1], now_ms)};
    return pg_defer(c,
        "INSERT INTO call_checkpoints(call_sid, seq, doc, state, updated_ms)"
        " VALUES($1, $2, coalesce($3::text, ''), $4, $5)"
        " ON CONFLICT(call_sid) DO UPDATE SET seq = excluded.seq,"
        " doc = coalesce($3::text, call_checkpoints.doc), state = excluded.state,"
        " updated_ms = excluded.updated_ms", 5, v, NULL, false, "checkpoint write");
}

store_status pg_ckpt_get(store_conn *c, const char *call_sid, char **doc, char **state)
{
    const char *v[] = {pg_txt(call_sid)};
    store_status st;
    PGresult *r = pg_run(c, "SELECT doc, state FROM call_checkpoints WHERE call_sid = $1", 1, v,
                         &st, "checkpoint read");
    *doc = *state = NULL;
    if (r && PQntuples(r) == 1) {
        *doc = col_dup(r, 0, 0);
        *state = col_dup(r, 0, 1);
        if (!*doc || !*state) { free(*doc); free(*state); *doc = *state = NULL; st = STORE_ERROR; }
    } else if (r) {
        st = STORE_NOTFOUND;
    }
    PQclear(r);
    return st;
}

store_status pg_ckpt_delete(store_conn *c, const char *call_sid)
{
    const char *v[] = {pg_txt(call_sid)};
    return pg_defer(c, "DELETE FROM call_checkpoints WHERE call_sid = $1", 1, v, NULL, false,
                    "checkpoint delete");
}

/* ---- account keys (keyauth.c) ---- */

store_status pg_account_key_bind(store_conn *c, const char *sid, const char *key,
                                 int64_t now, bool *same)
{
    pg_num n;
    const char *v[] = {pg_txt(sid), pg_txt(key), pg_i64(&n, now)};
    store_status st;
    *same = false;
    st = pg_do(c, "INSERT INTO account_keys(account_sid, kaphila_key, created)"
                  " VALUES($1, $2, $3) ON CONFLICT DO NOTHING", 3, v, "account key bind");
    if (st != STORE_OK) return st;
    PGresult *r = pg_run(c, "SELECT kaphila_key FROM account_keys WHERE account_sid = $1", 1, v,
                         &st, "account key read");
    if (r && PQntuples(r) == 1) {
        /* Constant time: the stored key is a credential. */
        const char *stored = PQgetvalue(r, 0, 0);
        *same = strlen(stored) == strlen(key) && CRYPTO_memcmp(stored, key, strlen(key)) == 0;
    } else if (r) {
        st = STORE_ERROR;
    }
    PQclear(r);
    return st;
}

store_status pg_account_key_each(store_conn *c, int max,
        bool (*cb)(const char *sid, const char *key, int64_t created, void *arg), void *arg)
{
    pg_num n;
    const char *v[] = {pg_i64(&n, max)};
    store_status st;
    PGresult *r = pg_run(c, "SELECT account_sid, kaphila_key, created FROM account_keys"
                            " ORDER BY created, account_sid LIMIT $1", 1, v, &st, "account keys");
    for (int i = 0; r && i < PQntuples(r); i++)
        if (!cb(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), col_i64(r, i, 2), arg)) {
            st = STORE_ERROR;
            break;
        }
    PQclear(r);
    return st;
}
