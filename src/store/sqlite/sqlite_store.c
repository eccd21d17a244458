/* sqlite_store.c — the SQLite backend (store_backend.h): the connection
 * pool, the statement caches, transactions, the checkpointer thread, the
 * mapping of SQLite's result codes onto contention and fault counts, and
 * the backend's table of entries (store_sqlite_backend).
 *
 * Map of the SQLite backend (src/store/sqlite/): sqlite_int.h, the
 * internals every file shares; sqlite_store.c, this file; store_schema.c,
 * opening a connection and the schema migrations; then one file per group
 * of tables: store_calls.c (calls), store_ckpt.c (call_checkpoints),
 * store_log.c (kevents, outbox, call events, notifications), store_keys.c
 * (account_keys), store_recordings.c (recordings).
 * Every fixed statement is prepared once per connection (stmt_get) and
 * reset after use, so a request costs no SQL compilation. */
#include "sqlite_int.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

const char *const store_stmt_sql[S_COUNT] = {
    [S_CALL_INSERT] =
        "INSERT INTO calls(sid, account_sid, parent_call_sid, to_num, from_num, status,"
        " direction, answered_by, date_created, date_updated, start_time, end_time,"
        " answered_at, duration, queue_time, kaphila_id, token, cb_seq, params)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)",
    [S_CALL_GET] = "SELECT * FROM calls WHERE sid = ?1 AND account_sid = ?2",
    [S_CALL_GET_SID] = "SELECT * FROM calls WHERE sid = ?1",
    [S_CALL_GET_TOKEN] = "SELECT * FROM calls WHERE token = ?1",
    [S_CALL_UPDATE] =
        "UPDATE calls SET status=?2, answered_by=?3, date_updated=?4, start_time=?5,"
        " end_time=?6, answered_at=?7, duration=?8, kaphila_id=?9, cb_seq=?10, params=?11,"
        " queue_time=?12 WHERE sid = ?1",
    [S_CALL_DELETE] = "DELETE FROM calls WHERE sid = ?1 AND account_sid = ?2",
    [S_CALL_ID] = "SELECT id FROM calls WHERE sid = ?1 AND account_sid = ?2",
    [S_CALL_LIVE_KID] = "SELECT 1 FROM calls WHERE kaphila_id = ?1 AND kaphila_id != '' AND "
                        LIVE_CONDITION " LIMIT 1",
    /* calls_live leads with account_sid, so SQLite would rather scan the
     * whole table than sort what the index holds: INDEXED BY keeps a restart
     * on a million ended calls from reading them all. */
    [S_CALL_LIVE] = "SELECT * FROM calls INDEXED BY calls_live WHERE " LIVE_CONDITION " ORDER BY id",
    [S_KEV_INSERT] = "INSERT INTO kevents(call_sid, received_at, body, done) VALUES(?1, ?2, ?3, ?4)",
    [S_KEV_DONE] = "UPDATE kevents SET done = 1 WHERE id = ?1",
    [S_KEV_PENDING] = "SELECT id, call_sid, body FROM kevents WHERE done = 0 ORDER BY id",
    [S_OB_INSERT] =
        "INSERT INTO outbox(call_sid, account_sid, kind, seq, url, method, params, idem,"
        " created) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    [S_OB_FINISH] = "UPDATE outbox SET state = ?2, attempts = ?3 WHERE id = ?1",
    [S_OB_PENDING] =
        "SELECT id, call_sid, account_sid, kind, seq, url, method, params, idem, created"
        " FROM outbox WHERE state = 'pending' ORDER BY id",
    [S_OB_STATS] = "SELECT count(*), min(created) FROM outbox WHERE state = 'pending'",
    [S_EV_INSERT] =
        "INSERT INTO call_events(account_sid, call_sid, ts, request, response, params)"
        " VALUES(?1,?2,?3,?4,?5,?6)",
    [S_NO_INSERT] =
        "INSERT INTO notifications(sid, account_sid, call_sid, error_code, log, date,"
        " message_text, request_method, request_url, request_variables, response_body,"
        " response_headers) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
    [S_NO_GET] = "SELECT * FROM notifications WHERE sid = ?1 AND account_sid = ?2",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
};

static store_status map_rc(sqlite3 *db, int rc, const char *what);

/* Every statement of a connection goes through here, so contention is
 * counted per store. */
store_status store_map_rc_c(store_conn *c, int rc, const char *what)
{
    int kind = -1;
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) store_count_busy(c->owner);
    switch (rc & 0xff) {
    case SQLITE_FULL:     kind = STORE_FAULT_FULL; break;
    case SQLITE_READONLY: kind = STORE_FAULT_READONLY; break;
    case SQLITE_IOERR: case SQLITE_CANTOPEN: kind = STORE_FAULT_IO; break;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: kind = STORE_FAULT_CORRUPT; break;
    }
    if (kind >= 0) store_count_fault(c->owner, kind);
    return map_rc(SQ(c)->db, rc, what);
}

static void sq_checkpoint_stats(const store *s, store_ckpt_stats *out)
{
    sq_store *m = (sq_store *)s;
    out->by_volume = atomic_load(&m->ckpt_by_volume);
    out->by_timer = atomic_load(&m->ckpt_by_timer);
    out->wal_pages = atomic_load(&m->ckpt_mark);
}

static store_status map_rc(sqlite3 *db, int rc, const char *what)
{
    switch (rc) {
    case SQLITE_OK: case SQLITE_DONE: case SQLITE_ROW: return STORE_OK;
    case SQLITE_CONSTRAINT: return STORE_CONFLICT;
    case SQLITE_BUSY: case SQLITE_LOCKED:
        log_warn("store", "%s: database busy", what);
        return STORE_BUSY;
    default:
        log_error("store", "%s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        return STORE_ERROR;
    }
}

/* When the checkpointer folds the WAL back into the database: once writers
 * have added STORE_CKPT_FRAMES frames since its last pass (the WAL hook below
 * wakes it), and at least every STORE_CHECKPOINT_MS. PASSIVE checkpoints never
 * block readers or writers, but each one fdatasyncs the WAL written since the
 * last, and an append to a file being synced waits for that sync (14-27 ms
 * measured on ext4 for the 50-80 MB a one-second period gathered at 1,000
 * creates/s). Passes by volume keep each sync to a few megabytes, so the
 * engine's commits no longer stall behind it (docs/performance.md, "The
 * write-ahead log under load"). SQLite's own autocheckpoint uses the same
 * 1,000-page step, but runs it inside the committing thread. */
#ifndef STORE_CKPT_FRAMES
#define STORE_CKPT_FRAMES 1024
#endif
#define STORE_CHECKPOINT_MS 1000

/* sqlite3_wal_hook: after every commit of a pooled connection, with the
 * WAL's length in frames. Cheap on the commit path: one atomic load, and a
 * signal only when the step is crossed (the flag keeps it to one per pass). */
static int wal_committed(void *arg, sqlite3 *db, const char *name, int frames)
{
    sq_store *s = arg;
    (void)db; (void)name;
    int mark = atomic_load_explicit(&s->ckpt_mark, memory_order_relaxed);
    if (frames < mark) mark = 0;   /* the WAL started over since the last pass */
    if (frames - mark >= STORE_CKPT_FRAMES && !atomic_exchange(&s->ckpt_kicked, true)) {
        pthread_mutex_lock(&s->ckpt_lock);
        pthread_cond_signal(&s->ckpt_cond);
        pthread_mutex_unlock(&s->ckpt_lock);
    }
    return SQLITE_OK;
}

static void *checkpointer(void *arg)
{
    sq_store *s = arg;
    char err[256];
    sqlite3 *db = store_open_db(s->path, err, sizeof err);
    pthread_setname_np(pthread_self(), "store-ckpt");
    if (!db) {
        log_error("store", "checkpointer: %s", err);
        return NULL;
    }
    pthread_mutex_lock(&s->ckpt_lock);
    while (!s->ckpt_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += STORE_CHECKPOINT_MS / 1000;
        until.tv_nsec += (long)(STORE_CHECKPOINT_MS % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
        while (!s->ckpt_stop && !atomic_load(&s->ckpt_kicked) &&
               pthread_cond_timedwait(&s->ckpt_cond, &s->ckpt_lock, &until) != ETIMEDOUT) {}
        if (s->ckpt_stop) break;
        pthread_mutex_unlock(&s->ckpt_lock);
        atomic_fetch_add(atomic_load(&s->ckpt_kicked) ? &s->ckpt_by_volume : &s->ckpt_by_timer, 1);
        int log_frames = -1;
        int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            log_warn("store", "checkpoint: %s", sqlite3_errmsg(db));
        /* The mark before the flag: a writer that sees the flag clear
         * measures from this pass. */
        if (log_frames >= 0) atomic_store(&s->ckpt_mark, log_frames);
        atomic_store(&s->ckpt_kicked, false);
        pthread_mutex_lock(&s->ckpt_lock);
    }
    pthread_mutex_unlock(&s->ckpt_lock);
    /* A last full pass so a clean stop leaves a small WAL behind. */
    (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    sqlite3_close(db);
    return NULL;
}

static void sq_close(store *base);

static store *sq_open(const char *url, const char *path, char *err, size_t errlen)
{
    sq_store *s = calloc(1, sizeof *s);
    sqlite3 *db = NULL;
    (void)url;
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    pthread_mutex_init(&s->ckpt_lock, NULL);
    pthread_cond_init(&s->ckpt_cond, NULL);
    pthread_mutex_init(&s->lock, NULL);
    if (!strcmp(path, ":memory:")) {
        /* Every pooled connection must see the same database: a named
         * shared-cache memory database, kept alive by s->keeper. */
        char uri[96];
        snprintf(uri, sizeof uri, "file:twigate-mem-%p?mode=memory&cache=shared", (void *)s);
        s->path = strdup(uri);
    } else {
        s->path = strdup(path);
    }
    if (!s->path) { snprintf(err, errlen, "out of memory"); goto fail; }
    db = store_open_db(s->path, err, errlen);
    if (!db) goto fail;
    if (store_migrate(db, err, errlen)) goto fail;
    if (strncmp(s->path, "file:twigate-mem-", 17) != 0) store_integrity_check(&s->base, db);
    if (!strncmp(s->path, "file:twigate-mem-", 17)) s->keeper = db;
    else sqlite3_close(db);
    db = NULL;
    /* A memory database has no WAL to fold back. */
    if (!s->keeper) {
        if (pthread_create(&s->ckpt_thread, NULL, checkpointer, s) != 0) {
            snprintf(err, errlen, "cannot start the checkpoint thread");
            goto fail;
        }
        s->ckpt_running = true;
    }
    return &s->base;
fail:
    sqlite3_close(db);
    sq_close(&s->base);
    return NULL;
}

static void conn_free(sq_conn *c)
{
    for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(c->stmts[i]);
    for (int i = 0; i < STORE_SQL_CACHE; i++) {
        sqlite3_finalize(c->cache[i].st);
        free(c->cache[i].sql);
    }
    sqlite3_close(c->db);
    free(c);
}

static void sq_close(store *base)
{
    sq_store *s = (sq_store *)base;
    if (s->ckpt_running) {
        pthread_mutex_lock(&s->ckpt_lock);
        s->ckpt_stop = true;
        pthread_cond_signal(&s->ckpt_cond);
        pthread_mutex_unlock(&s->ckpt_lock);
        pthread_join(s->ckpt_thread, NULL);
        s->ckpt_running = false;
    }
    while (s->free_list) {
        sq_conn *c = s->free_list;
        s->free_list = c->next_free;
        conn_free(c);
    }
    sqlite3_close(s->keeper);
    pthread_cond_destroy(&s->ckpt_cond);
    pthread_mutex_destroy(&s->ckpt_lock);
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
}

static store_conn *sq_conn_acquire(store *base)
{
    sq_store *s = (sq_store *)base;
    sq_conn *c;
    char err[256];
    pthread_mutex_lock(&s->lock);
    c = s->free_list;
    if (c) {
        s->free_list = c->next_free;
        pthread_mutex_unlock(&s->lock);
        c->next_free = NULL;
        return &c->base;
    }
    if (s->n_conns >= STORE_MAX_CONNS) {
        pthread_mutex_unlock(&s->lock);
        log_error("store", "connection cap %d reached", STORE_MAX_CONNS);
        return NULL;
    }
    s->n_conns++;
    pthread_mutex_unlock(&s->lock);

    c = calloc(1, sizeof *c);
    if (c) c->db = store_open_db(s->path, err, sizeof err);
    if (!c || !c->db) {
        if (c) log_error("store", "%s", err);
        free(c);
        pthread_mutex_lock(&s->lock);
        s->n_conns--;
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    c->base.owner = base;
    if (s->ckpt_running) sqlite3_wal_hook(c->db, wal_committed, s);
    return &c->base;
}

static void sq_conn_release(store_conn *base)
{
    sq_conn *c = SQ(base);
    sq_store *s = (sq_store *)base->owner;
    pthread_mutex_lock(&s->lock);
    c->next_free = s->free_list;
    s->free_list = c;
    pthread_mutex_unlock(&s->lock);
}

sqlite3_stmt *store_stmt_get(store_conn *base, const char *sql)
{
    sq_conn *c = SQ(base);
    uint64_t h = 1469598103934665603ULL;
    sqlite3_stmt *st = NULL;
    sql_cached *slot = NULL;
    for (const char *p = sql; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (int i = 0; i < STORE_SQL_CACHE; i++) {
        sql_cached *e = &c->cache[i];
        if (!e->st) { if (!slot) slot = e; continue; }
        if (e->hash == h && !strcmp(e->sql, sql)) {
            if (e->in_use) break;          /* nested use of the same SQL: uncached */
            e->in_use = true;
            return e->st;
        }
    }
    if (sqlite3_prepare_v3(c->db, sql, -1, slot ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL) != SQLITE_OK) {
        log_error("store", "prepare: %s", sqlite3_errmsg(c->db));
        sqlite3_finalize(st);
        return NULL;
    }
    if (slot && (slot->sql = strdup(sql))) {
        slot->hash = h;
        slot->st = st;
        slot->in_use = true;
    }
    return st;
}

void store_stmt_done(store_conn *base, sqlite3_stmt *st)
{
    sq_conn *c = SQ(base);
    if (!st) return;
    for (int i = 0; i < STORE_SQL_CACHE; i++)
        if (c->cache[i].st == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            c->cache[i].in_use = false;
            return;
        }
    sqlite3_finalize(st);
}

static store_status simple(store_conn *c, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = stmt_get(c, id);
    return st ? step_done(c, st, what) : STORE_ERROR;
}


static bool sq_in_txn(store_conn *c)
{
    return !sqlite3_get_autocommit(SQ(c)->db);
}

static store_status sq_begin(store_conn *c)
{
    /* Already inside a transaction (the engine's per-iteration batch): the
     * caller's writes simply join it; it commits with the batch. */
    if (sq_in_txn(c)) return STORE_CONFLICT;
    return simple(c, S_BEGIN, "begin");
}
static store_status sq_commit(store_conn *c)
{
    return simple(c, S_COMMIT, "commit");
}

static store_status sq_write_probe(store_conn *base)
{
    sq_conn *c = SQ(base);
    /* Rewrites user_version with its own value: page 1 becomes dirty, so
     * the caller's commit really writes to the disk. */
    sqlite3_stmt *st = NULL;
    int v = -1, rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (v < 0) return store_map_rc_c(base, rc == SQLITE_OK ? SQLITE_ERROR : rc, "write probe");
    char sql[48];
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d", v);
    return store_map_rc_c(base, sqlite3_exec(c->db, sql, NULL, NULL, NULL), "write probe");
}

static store_status sq_check_writable(store_conn *base)
{
    sq_conn *c = SQ(base);
    /* Without waiting: a write lock held by someone else means the
     * database is being written, i.e. writable; only real errors
     * (read-only file, disk full, I/O) fail the check. */
    int rc;
    sqlite3_busy_timeout(c->db, 0);
    rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_busy_timeout(c->db, STORE_BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return STORE_OK;
    return map_rc(c->db, rc, "writable check");
}

static void sq_rollback(store_conn *c)
{
    if (sq_in_txn(c)) (void)simple(c, S_ROLLBACK, "rollback");
}

const store_backend store_sqlite_backend = {
    .name = "sqlite",
    .open = sq_open, .close = sq_close,
    .conn_acquire = sq_conn_acquire, .conn_release = sq_conn_release,
    .in_txn = sq_in_txn, .check_writable = sq_check_writable,
    .begin = sq_begin, .commit = sq_commit, .rollback = sq_rollback,
    .write_probe = sq_write_probe, .checkpoint_stats = sq_checkpoint_stats,
    .call_insert = sq_call_insert, .call_get = sq_call_get,
    .call_get_by_sid = sq_call_get_by_sid, .call_get_by_token = sq_call_get_by_token,
    .call_update = sq_call_update, .call_delete = sq_call_delete,
    .call_list = sq_call_list, .call_id = sq_call_id, .call_each_live = sq_call_each_live,
    .ckpt_put = sq_call_ckpt_put, .ckpt_get = sq_call_ckpt_get,
    .ckpt_delete = sq_call_ckpt_delete,
    .kevent_insert = sq_kevent_insert, .kevent_done = sq_kevent_done,
    .kevent_each_pending = sq_kevent_each_pending,
    .outbox_insert = sq_outbox_insert, .outbox_finish = sq_outbox_finish,
    .outbox_each_pending = sq_outbox_each_pending, .outbox_stats = sq_outbox_stats,
    .event_insert = sq_event_insert, .event_list = sq_event_list,
    .notification_insert = sq_notification_insert,
    .notification_list = sq_notification_list, .notification_get = sq_notification_get,
    .account_key_bind = sq_account_key_bind, .account_key_each = sq_account_key_each,
    .rec_insert = sq_rec_insert, .rec_get = sq_rec_get, .rec_get_id = sq_rec_get_id,
    .rec_update = sq_rec_update, .rec_set_deleted = sq_rec_set_deleted,
    .rec_list = sq_rec_list, .rec_for_call = sq_rec_for_call,
    .rec_pending_calls = sq_rec_pending_calls,
    .call_live_kaphila = sq_call_live_kaphila,
};

