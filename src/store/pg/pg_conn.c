/* pg_conn.c — the PostgreSQL backend (store_backend.h; docs/scale-out.md
 * §1): the connection pool over libpq, the per-connection statement cache,
 * transactions, the mapping of SQLSTATEs onto store_status and the fault
 * counters, and the backend's table of entries (store_pg_backend).
 *
 * Map of the PostgreSQL backend (src/store/pg/): pg_int.h, the internals
 * every file shares; pg_conn.c, this file; pg_schema.c, the migrations
 * (same version numbers as SQLite's); pg_calls.c (calls, checkpoints,
 * account keys), pg_log.c (kevents, outbox, call events, notifications),
 * pg_recordings.c (recordings).
 *
 * Every statement is prepared once per connection (named "t<slot>") and run
 * with text parameters; a lost connection is reset on its next use, its
 * statements prepared again. READ COMMITTED, the server's default.
 *
 * Inside a transaction the engine batch's plain writes are sent ahead in
 * libpq's pipeline mode (pg_defer) and their answers read back in one go
 * (pipe_drain) by the next statement that waits for its own answer, or by
 * the commit; a refused one poisons the transaction, whose COMMIT then
 * rolls it back. One thread uses a connection at a time (pg_int.h), so the
 * pending answers are that thread's. */
#include "pg_int.h"

#include <stdatomic.h>

/* Quiet: "relation already exists, skipping" and the like are expected. */
static void pg_notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("store", "postgresql: %s", msg);
}

void pg_mask_url(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://"), *at = p ? strchr(p + 3, '@') : NULL;
    const char *colon = p && at ? memchr(p + 3, ':', (size_t)(at - p - 3)) : NULL;
    if (!colon) { snprintf(out, outlen, "%s", url); return; }
    snprintf(out, outlen, "%.*s:***%s", (int)(colon - url), url, at);
}

store_status pg_status(store_conn *c, const PGresult *r, const char *what)
{
    PGconn *pq = PG(c)->pq;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(pq);
    int kind = -1;
    if (!state) state = "";
    if (!strncmp(state, "23", 2)) return STORE_CONFLICT;
    if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03") ||
        !strcmp(state, "57014")) {
        store_count_busy(c->owner);
        log_warn("store", "%s: database busy (%s)", what, state);
        return STORE_BUSY;
    }
    if (!strcmp(state, "53100")) kind = STORE_FAULT_FULL;
    else if (!strcmp(state, "25006")) kind = STORE_FAULT_READONLY;
    else if (!strncmp(state, "57P0", 4) || !strncmp(state, "08", 2) ||
             PQstatus(pq) != CONNECTION_OK) kind = STORE_FAULT_IO;
    else if (!strncmp(state, "XX00", 4)) kind = STORE_FAULT_CORRUPT;
    if (kind >= 0) store_count_fault(c->owner, kind);
    log_error("store", "%s: %s", what, msg && *msg ? msg : "postgresql error");
    return STORE_ERROR;
}

static void stmts_forget(pg_conn *c)
{
    for (int i = 0; i < PG_STMT_CACHE; i++) {
        free(c->stmts[i].sql);
        c->stmts[i].sql = NULL;
    }
}

/* A connection that broke (server restart, network) is reset once per use,
 * never inside a transaction (the rest of it would be lost in silence);
 * its prepared statements died with the old session. */
static void idle_limit_apply(pg_conn *c);

static bool conn_usable(pg_conn *c)
{
    if (PQstatus(c->pq) == CONNECTION_OK) return true;
    if (c->in_batch) return false;
    stmts_forget(c);
    PQreset(c->pq);
    c->idle_txn_ms = 0;   /* a new session: the server's settings again */
    if (PQstatus(c->pq) != CONNECTION_OK) return false;
    idle_limit_apply(c);
    return true;
}

/* The store's idle-in-transaction limit on c's session, when it changed.
 * Why: an instance stopped inside a transaction (SIGSTOP, a frozen VM)
 * keeps its row locks for as long as it stays stopped, and an adopter's
 * FOR UPDATE SKIP LOCKED would pass its calls over for all that time; the
 * server ends such a session once the lease is over, which frees them. A
 * connection is only taken or reset outside a transaction, where SET is
 * allowed. */
static void idle_limit_apply(pg_conn *c)
{
    int want = atomic_load(&((pg_store *)c->base.owner)->idle_txn_ms);
    if (want == c->idle_txn_ms) return;
    char sql[80];
    snprintf(sql, sizeof sql, "SET idle_in_transaction_session_timeout = %d", want);
    PGresult *r = PQexec(c->pq, sql);
    if (PQresultStatus(r) == PGRES_COMMAND_OK) c->idle_txn_ms = want;
    else log_warn("store", "cannot set idle_in_transaction_session_timeout: %s",
                  PQresultErrorMessage(r));
    PQclear(r);
}

/* The cache slot of sql's prepared statement, or -1 (*free_slot: the
 * first empty slot, or -1; *hash: sql's). */
static int stmt_find(const pg_conn *c, const char *sql, uint64_t *hash, int *free_slot)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = sql; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    *hash = h;
    *free_slot = -1;
    for (int i = 0; i < PG_STMT_CACHE; i++) {
        if (!c->stmts[i].sql) { if (*free_slot < 0) *free_slot = i; continue; }
        if (c->stmts[i].hash == h && !strcmp(c->stmts[i].sql, sql)) return i;
    }
    return -1;
}

static bool result_ok(const PGresult *r);

/* ---- the batch's pipeline (pg_defer) ---- */

/* Reads back every deferred write's answer and leaves pipeline mode. The
 * first failure is returned (and poisons the batch); a later write after
 * an error was not run (PGRES_PIPELINE_ABORTED). */
static store_status pipe_drain(store_conn *base)
{
    pg_conn *c = PG(base);
    if (!c->piped) return STORE_OK;
    store_status st = PQpipelineSync(c->pq) ? STORE_OK : pg_status(base, NULL, "pipeline sync");
    for (int i = 0; i < c->n_pend; i++) {
        const pg_pending *p = &c->pend[i];
        PGresult *r = PQgetResult(c->pq);
        if (!r) {   /* the connection is gone: no answer for the rest */
            if (st == STORE_OK) st = pg_status(base, NULL, p->what);
            break;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
            /* not run: an earlier write failed */
        } else if (!result_ok(r)) {
            store_status e = pg_status(base, r, p->what);
            if (st == STORE_OK) st = e;
        } else if (p->id) {
            if (PQntuples(r) == 1) *p->id = col_i64(r, 0, 0);
            else if (st == STORE_OK) st = STORE_CONFLICT;
        } else if (p->must_touch && !strcmp(PQcmdTuples(r), "0")) {
            log_warn("store", "%s: no row matched (another instance's now, or gone); the batch is"
                     " rolled back", p->what);
            if (st == STORE_OK) st = STORE_NOTFOUND;
        }
        PQclear(r);
        while ((r = PQgetResult(c->pq))) PQclear(r);   /* the statement's end (NULL) */
    }
    PGresult *r;
    while ((r = PQgetResult(c->pq))) {   /* the sync's own result */
        bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        PQclear(r);
        if (sync) break;
    }
    if (!PQexitPipelineMode(c->pq) && st == STORE_OK) st = pg_status(base, NULL, "pipeline end");
    c->piped = false;
    c->n_pend = 0;
    if (st != STORE_OK) c->poisoned = true;
    return st;
}

store_status pg_defer(store_conn *base, const char *sql, int n, const char *const *vals,
                      int64_t *id, bool must_touch, const char *what)
{
    pg_conn *c = PG(base);
    uint64_t h;
    int free_slot, slot = -1;
    if (c->in_batch && PQstatus(c->pq) == CONNECTION_OK) slot = stmt_find(c, sql, &h, &free_slot);
    if (slot < 0) {   /* at once: prepares it for the next time */
        store_status st;
        PGresult *r = pg_run(base, sql, n, vals, &st, what);
        if (r && id) {
            if (PQntuples(r) == 1) *id = col_i64(r, 0, 0);
            else st = STORE_CONFLICT;
        } else if (r && must_touch && !strcmp(PQcmdTuples(r), "0")) {
            st = STORE_NOTFOUND;
        }
        PQclear(r);
        return st;
    }
    if (c->n_pend == PG_PIPE_MAX) {
        store_status st = pipe_drain(base);
        if (st != STORE_OK) return st;
    }
    if (c->poisoned) return STORE_ERROR;   /* the batch is lost already */
    if (!c->piped) {
        if (!PQenterPipelineMode(c->pq)) return pg_status(base, NULL, what);
        c->piped = true;
    }
    char name[16];
    snprintf(name, sizeof name, "t%d", slot);
    if (!PQsendQueryPrepared(c->pq, name, n, vals, NULL, NULL, 0)) {
        c->poisoned = true;
        return pg_status(base, NULL, what);
    }
    c->pend[c->n_pend++] = (pg_pending){what, id, must_touch};
    return STORE_OK;
}

/* The statement's result, failed or not (NULL: no connection, *st set). */
static PGresult *run_once(store_conn *base, const char *sql, int n, const char *const *vals,
                          store_status *st, const char *what)
{
    pg_conn *c = PG(base);
    uint64_t h;
    int slot, free_slot;
    char name[16];
    PGresult *r;
    /* What was sent ahead is answered first; a failure there is this one's. */
    if (c->piped && (*st = pipe_drain(base)) != STORE_OK) return NULL;
    if (!conn_usable(c)) {
        *st = pg_status(base, NULL, what);
        return NULL;
    }
    slot = stmt_find(c, sql, &h, &free_slot);
    if (slot < 0 && free_slot >= 0 && PQtransactionStatus(c->pq) != PQTRANS_INERROR) {
        snprintf(name, sizeof name, "t%d", free_slot);
        r = PQprepare(c->pq, name, sql, n, NULL);
        if (PQresultStatus(r) == PGRES_COMMAND_OK && (c->stmts[free_slot].sql = strdup(sql))) {
            c->stmts[free_slot].hash = h;
            slot = free_slot;
        } else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            *st = STORE_OK;
            return r;           /* the caller maps (or retries) the failure */
        }
        PQclear(r);
    }
    if (slot >= 0) {
        snprintf(name, sizeof name, "t%d", slot);
        r = PQexecPrepared(c->pq, name, n, vals, NULL, NULL, 0);
    } else {
        r = PQexecParams(c->pq, sql, n, NULL, vals, NULL, NULL, 0);
    }
    *st = STORE_OK;
    return r;
}

static bool result_ok(const PGresult *r)
{
    ExecStatusType es = PQresultStatus(r);
    return es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK;
}

/* libpq learns that the server closed a session only when it next uses it,
 * so every pooled connection meets a cut once. A read that met it outside a
 * transaction is run again on a fresh session: it changed nothing. A write
 * is not (it may have been applied before the answer was lost); it fails,
 * as a write to a full disk does. */
PGresult *pg_run(store_conn *base, const char *sql, int n, const char *const *vals,
                 store_status *st, const char *what)
{
    pg_conn *c = PG(base);
    bool retry = !c->in_batch && !strncmp(sql, "SELECT ", 7) &&
                 PQstatus(c->pq) == CONNECTION_OK;
    PGresult *r = run_once(base, sql, n, vals, st, what);
    if (r && !result_ok(r) && retry && PQstatus(c->pq) != CONNECTION_OK) {
        log_warn("store", "%s: the connection to PostgreSQL was lost; reconnecting", what);
        PQclear(r);
        r = run_once(base, sql, n, vals, st, what);
    }
    if (!r || result_ok(r)) return r;
    *st = pg_status(base, r, what);
    PQclear(r);
    return NULL;
}

store_status pg_insert_id(store_conn *c, const char *sql, int n, const char *const *vals,
                          int64_t *id, const char *what)
{
    store_status st;
    PGresult *r = pg_run(c, sql, n, vals, &st, what);
    if (r && PQntuples(r) == 1) {
        if (id) *id = col_i64(r, 0, 0);
    } else if (r) {
        st = STORE_CONFLICT;
    }
    PQclear(r);
    return st;
}

store_status pg_do(store_conn *c, const char *sql, int n, const char *const *vals,
                   const char *what)
{
    store_status st;
    PQclear(pg_run(c, sql, n, vals, &st, what));
    return st;
}

/* ---- the pool ---- */

static PGconn *connect_one(const char *url, char *err, size_t errlen)
{
    PGconn *pq = PQconnectdb(url);
    if (!pq || PQstatus(pq) != CONNECTION_OK) {
        char masked[512];
        pg_mask_url(url, masked, sizeof masked);
        snprintf(err, errlen, "cannot connect to %s: %s", masked,
                 pq ? PQerrorMessage(pq) : "out of memory");
        /* libpq's messages end with a newline */
        size_t l = strlen(err);
        if (l && err[l - 1] == '\n') err[l - 1] = '\0';
        PQfinish(pq);
        return NULL;
    }
    PQsetNoticeProcessor(pq, pg_notice, NULL);
    return pq;
}

static void pg_close(store *base);

static store *pg_open(const char *url, const char *path, char *err, size_t errlen)
{
    pg_store *s = calloc(1, sizeof *s);
    PGconn *pq;
    (void)path;
    if (!s || !(s->url = strdup(url))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    if (!(pq = connect_one(url, err, errlen))) goto fail;
    int rc = pg_migrate(pq, err, errlen);
    PQfinish(pq);
    if (rc) goto fail;
    char masked[512];
    pg_mask_url(url, masked, sizeof masked);
    log_info("store", "postgresql at %s", masked);
    return &s->base;
fail:
    pg_close(&s->base);
    return NULL;
}

static void conn_free(pg_conn *c)
{
    stmts_forget(c);
    PQfinish(c->pq);
    free(c);
}

static void pg_close(store *base)
{
    pg_store *s = (pg_store *)base;
    while (s->free_list) {
        pg_conn *c = s->free_list;
        s->free_list = c->next_free;
        conn_free(c);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->url);
    free(s);
}

static store_conn *pg_conn_acquire(store *base)
{
    pg_store *s = (pg_store *)base;
    pg_conn *c;
    char err[512];
    pthread_mutex_lock(&s->lock);
    if ((c = s->free_list)) {
        s->free_list = c->next_free;
        pthread_mutex_unlock(&s->lock);
        c->next_free = NULL;
        idle_limit_apply(c);
        return &c->base;
    }
    if (s->n_conns >= PG_MAX_CONNS) {
        pthread_mutex_unlock(&s->lock);
        log_error("store", "connection cap %d reached", PG_MAX_CONNS);
        return NULL;
    }
    s->n_conns++;
    pthread_mutex_unlock(&s->lock);
    c = calloc(1, sizeof *c);
    if (c && !(c->pq = connect_one(s->url, err, sizeof err))) log_error("store", "%s", err);
    if (!c || !c->pq) {
        free(c);
        store_count_fault(base, STORE_FAULT_IO);
        pthread_mutex_lock(&s->lock);
        s->n_conns--;
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    c->base.owner = base;
    idle_limit_apply(c);
    return &c->base;
}

static void pg_conn_release(store_conn *base)
{
    pg_conn *c = PG(base);
    pg_store *s = (pg_store *)base->owner;
    pthread_mutex_lock(&s->lock);
    c->next_free = s->free_list;
    s->free_list = c;
    pthread_mutex_unlock(&s->lock);
}

/* ---- transactions ---- */

static bool pg_in_txn(store_conn *c)
{
    if (PG(c)->in_batch) return true;
    PGTransactionStatusType t = PQtransactionStatus(PG(c)->pq);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

static store_status simple(store_conn *c, const char *sql, const char *what)
{
    PGresult *r = PQexec(PG(c)->pq, sql);
    store_status st = PQresultStatus(r) == PGRES_COMMAND_OK ? STORE_OK : pg_status(c, r, what);
    /* COMMIT of a transaction that had failed answers ROLLBACK: nothing of it
     * was kept, which the caller must hear. */
    if (st == STORE_OK && !strcmp(sql, "COMMIT") && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
        log_error("store", "commit: the transaction had failed and was rolled back");
        st = STORE_ERROR;
    }
    PQclear(r);
    return st;
}

static store_status pg_begin(store_conn *c)
{
    if (pg_in_txn(c)) return STORE_CONFLICT;
    PG(c)->poisoned = false;
    if (!conn_usable(PG(c))) return pg_status(c, NULL, "begin");
    /* A BEGIN that met a cut session changed nothing: once more, afresh. */
    PGresult *r = PQexec(PG(c)->pq, "BEGIN");
    bool lost = PQresultStatus(r) != PGRES_COMMAND_OK && PQstatus(PG(c)->pq) != CONNECTION_OK;
    PQclear(r);
    if (lost) log_warn("store", "begin: the connection to PostgreSQL was lost; reconnecting");
    else if (pg_in_txn(c)) { PG(c)->in_batch = true; return STORE_OK; }
    if (!conn_usable(PG(c))) return pg_status(c, NULL, "begin");
    store_status st = simple(c, "BEGIN", "begin");
    PG(c)->in_batch = st == STORE_OK;
    return st;
}

static void pg_rollback(store_conn *c)
{
    (void)pipe_drain(c);   /* answers to throw away, the mode left */
    if (pg_in_txn(c) && PQstatus(PG(c)->pq) == CONNECTION_OK)
        (void)simple(c, "ROLLBACK", "rollback");
    PG(c)->in_batch = false;
    PG(c)->poisoned = false;
}

static store_status pg_commit(store_conn *c)
{
    /* The deferred writes first: one of them failed or matched nothing,
     * and nothing of the batch may be kept. */
    store_status st = pipe_drain(c);
    if (st == STORE_OK && PG(c)->poisoned) st = STORE_ERROR;
    if (st != STORE_OK) {
        log_error("store", "commit: a write of the batch was refused; the batch is rolled back");
        pg_rollback(c);
        return st;
    }
    st = simple(c, "COMMIT", "commit");
    PG(c)->in_batch = false;
    return st;
}

static store_status pg_check_writable(store_conn *c)
{
    store_status st;
    PGresult *r = pg_run(c, "SELECT current_setting('transaction_read_only')", 0, NULL, &st,
                         "writable check");
    if (r && PQntuples(r) == 1 && !strcmp(PQgetvalue(r, 0, 0), "on")) {
        log_error("store", "writable check: the server is read-only");
        st = STORE_ERROR;
    }
    PQclear(r);
    return st;
}

static store_status pg_write_probe(store_conn *c)
{
    return pg_do(c, "UPDATE schema_version SET version = version", 0, NULL, "write probe");
}

/* No WAL file of ours: the server checkpoints its own. */
static void pg_checkpoint_stats(const store *s, store_ckpt_stats *out)
{
    (void)s;
    memset(out, 0, sizeof *out);
}

const store_backend store_pg_backend = {
    .name = "postgresql",
    .open = pg_open, .close = pg_close,
    .conn_acquire = pg_conn_acquire, .conn_release = pg_conn_release,
    .in_txn = pg_in_txn, .check_writable = pg_check_writable,
    .begin = pg_begin, .commit = pg_commit, .rollback = pg_rollback,
    .write_probe = pg_write_probe, .checkpoint_stats = pg_checkpoint_stats,
    .call_insert = pg_call_insert, .call_get = pg_call_get,
    .call_get_by_sid = pg_call_get_by_sid, .call_get_by_token = pg_call_get_by_token,
    .call_update = pg_call_update, .call_delete = pg_call_delete,
    .call_list = pg_call_list, .call_id = pg_call_id, .call_each_live = pg_call_each_live,
    .ckpt_put = pg_ckpt_put, .ckpt_get = pg_ckpt_get, .ckpt_delete = pg_ckpt_delete,
    .kevent_insert = pg_kevent_insert, .kevent_done = pg_kevent_done,
    .kevent_each_pending = pg_kevent_each_pending,
    .outbox_insert = pg_outbox_insert, .outbox_finish = pg_outbox_finish,
    .outbox_each_pending = pg_outbox_each_pending, .outbox_stats = pg_outbox_stats,
    .event_insert = pg_event_insert, .event_list = pg_event_list,
    .notification_insert = pg_notification_insert,
    .notification_list = pg_notification_list, .notification_get = pg_notification_get,
    .account_key_bind = pg_account_key_bind, .account_key_each = pg_account_key_each,
    .rec_insert = pg_rec_insert, .rec_get = pg_rec_get, .rec_get_id = pg_rec_get_id,
    .rec_update = pg_rec_update, .rec_set_deleted = pg_rec_set_deleted,
    .rec_list = pg_rec_list, .rec_for_call = pg_rec_for_call,
    .rec_pending_calls = pg_rec_pending_calls,
    .instance_join = pg_instance_join,
    .instance_renew = pg_instance_renew,
    .instance_leave = pg_instance_leave,
    .adopt = pg_adopt,
    .inbox_insert = pg_inbox_insert,
    .inbox_each = pg_inbox_each,
    .inbox_done = pg_inbox_done,
    .budget_take = pg_budget_take,
    .budget_live = pg_budget_live,
    .listener_open = pg_listener_open,
    .listener_fd = pg_listener_fd,
    .listener_drain = pg_listener_drain,
    .listener_close = pg_listener_close,
    .call_live_kaphila = pg_call_live_kaphila,
};
