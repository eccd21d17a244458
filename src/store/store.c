/* store.c — SQLite persistence.
 *
 * Map of this file: schema and migrations; the connection pool; the
 * prepared-statement cache; then one section per table (calls, kevents,
 * outbox, call events, notifications). Every statement is prepared once per
 * connection (stmt_get) and reset after use, so a request costs no SQL
 * compilation. */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/form.h"
#include "base/log.h"
#include "base/timefmt.h"

/* A connection per concurrently active thread: the HTTP pool, the engine,
 * and a few for start-up/tests. More than this means a leak of connections. */
#define STORE_MAX_CONNS 64
/* How long a writer waits for another writer before giving up. WAL lets
 * readers proceed; writers serialise, and each transaction is short. */
#define STORE_BUSY_TIMEOUT_MS 5000

/* The conditions of the partial indexes calls_live and calls_acct_ended
 * (migrations 2 and 3, which keep their own copies: a released step is never
 * edited). SQLite uses a partial index only when a query's WHERE contains its
 * condition, so the queries meant for them repeat these word for word. */
#define LIVE_CONDITION \
    "(status = 'queued' OR status = 'ringing' OR status = 'in-progress')"
#define ENDED_CONDITION \
    "(status = 'completed' OR status = 'busy' OR status = 'failed'" \
    " OR status = 'no-answer' OR status = 'canceled')"

enum stmt_id {
    S_CALL_INSERT, S_CALL_GET, S_CALL_GET_SID, S_CALL_GET_TOKEN, S_CALL_UPDATE, S_CALL_DELETE, S_CALL_ID,
    S_CALL_LIVE, S_KEV_INSERT, S_KEV_DONE, S_KEV_PENDING, S_OB_INSERT, S_OB_FINISH,
    S_OB_PENDING, S_OB_STATS, S_EV_INSERT, S_NO_INSERT, S_NO_GET,
    S_BEGIN, S_COMMIT, S_ROLLBACK,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
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
        " end_time=?6, answered_at=?7, duration=?8, kaphila_id=?9, cb_seq=?10, params=?11"
        " WHERE sid = ?1",
    [S_CALL_DELETE] = "DELETE FROM calls WHERE sid = ?1 AND account_sid = ?2",
    [S_CALL_ID] = "SELECT id FROM calls WHERE sid = ?1 AND account_sid = ?2",
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

/* Schema migrations; index i takes user_version i to i+1. Never edit a
 * released step: append a new one. */
static const char *const migrations[] = {
    "CREATE TABLE calls("
    "  id INTEGER PRIMARY KEY,"
    "  sid TEXT NOT NULL UNIQUE,"
    "  account_sid TEXT NOT NULL,"
    "  parent_call_sid TEXT NOT NULL DEFAULT '',"
    "  to_num TEXT NOT NULL, from_num TEXT NOT NULL,"
    "  status TEXT NOT NULL, direction TEXT NOT NULL,"
    "  answered_by TEXT NOT NULL DEFAULT '',"
    "  date_created INTEGER NOT NULL, date_updated INTEGER NOT NULL,"
    "  start_time INTEGER NOT NULL DEFAULT 0, end_time INTEGER NOT NULL DEFAULT 0,"
    "  answered_at INTEGER NOT NULL DEFAULT 0,"
    "  duration INTEGER NOT NULL DEFAULT -1, queue_time INTEGER NOT NULL DEFAULT 0,"
    "  kaphila_id TEXT NOT NULL DEFAULT '',"
    "  token TEXT NOT NULL UNIQUE,"
    "  cb_seq INTEGER NOT NULL DEFAULT 0,"
    "  params TEXT NOT NULL DEFAULT '{}');"
    "CREATE INDEX calls_acct ON calls(account_sid, id);"
    "CREATE INDEX calls_acct_status ON calls(account_sid, status, id);"
    "CREATE INDEX calls_acct_to ON calls(account_sid, to_num, id);"
    "CREATE INDEX calls_acct_from ON calls(account_sid, from_num, id);"
    "CREATE INDEX calls_acct_parent ON calls(account_sid, parent_call_sid, id)"
    "  WHERE parent_call_sid != '';"
    "CREATE INDEX calls_live ON calls(status) WHERE status IN ('queued','ringing','in-progress');"
    "CREATE TABLE kevents("
    "  id INTEGER PRIMARY KEY, call_sid TEXT NOT NULL, received_at INTEGER NOT NULL,"
    "  body TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX kevents_pending ON kevents(id) WHERE done = 0;"
    "CREATE TABLE outbox("
    "  id INTEGER PRIMARY KEY, call_sid TEXT NOT NULL, account_sid TEXT NOT NULL,"
    "  kind TEXT NOT NULL, seq INTEGER NOT NULL, url TEXT NOT NULL, method TEXT NOT NULL,"
    "  params TEXT NOT NULL, idem TEXT NOT NULL, created INTEGER NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX outbox_pending ON outbox(id) WHERE state = 'pending';"
    "CREATE TABLE call_events("
    "  id INTEGER PRIMARY KEY, account_sid TEXT NOT NULL, call_sid TEXT NOT NULL,"
    "  ts INTEGER NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL);"
    "CREATE INDEX call_events_call ON call_events(call_sid, id);"
    "CREATE TABLE notifications("
    "  id INTEGER PRIMARY KEY, sid TEXT NOT NULL UNIQUE, account_sid TEXT NOT NULL,"
    "  call_sid TEXT NOT NULL DEFAULT '', error_code INTEGER NOT NULL, log INTEGER NOT NULL,"
    "  date INTEGER NOT NULL, message_text TEXT NOT NULL DEFAULT '',"
    "  request_method TEXT NOT NULL DEFAULT '', request_url TEXT NOT NULL DEFAULT '',"
    "  request_variables TEXT NOT NULL DEFAULT '', response_body TEXT NOT NULL DEFAULT '',"
    "  response_headers TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX notifications_acct ON notifications(account_sid, id);"
    "CREATE INDEX notifications_call ON notifications(call_sid, id) WHERE call_sid != '';"
    /* Recordings (recordings.c owns the SQL). A RecordVerb recording is a
     * window [offset_ms, offset_ms + duration) of the call's bridge file. */
    "CREATE TABLE recordings("
    "  id INTEGER PRIMARY KEY, sid TEXT NOT NULL UNIQUE, account_sid TEXT NOT NULL,"
    "  call_sid TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,"
    "  channels INTEGER NOT NULL DEFAULT 1, track TEXT NOT NULL DEFAULT 'both',"
    "  date_created INTEGER NOT NULL, date_updated INTEGER NOT NULL,"
    "  start_time INTEGER NOT NULL, duration INTEGER NOT NULL DEFAULT -1,"
    "  offset_ms INTEGER NOT NULL DEFAULT 0, window_ms INTEGER NOT NULL DEFAULT -1,"
    "  kaphila_call_id TEXT NOT NULL DEFAULT '', kaphila_recording_id TEXT NOT NULL DEFAULT '',"
    "  filename TEXT NOT NULL DEFAULT '', error_code INTEGER NOT NULL DEFAULT 0,"
    "  callback_url TEXT NOT NULL DEFAULT '', callback_method TEXT NOT NULL DEFAULT 'POST',"
    "  callback_events INTEGER NOT NULL DEFAULT 2, deleted INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX recordings_acct ON recordings(account_sid, id);"
    "CREATE INDEX recordings_call ON recordings(call_sid, id);",
    /* 2. calls_live said `status IN (…)`: SQLite evaluates that list through
     * two ephemeral tables on every UPDATE of a call (old and new row), a
     * tenth of the engine's time per Kaphila event; the ORs cost three
     * comparisons. call_events.params: a request's parameters as sent,
     * form-encoded (NULL: they are inside `request`, as in version 1). */
    "DROP INDEX calls_live;"
    "CREATE INDEX calls_live ON calls(status)"
    "  WHERE status = 'queued' OR status = 'ringing' OR status = 'in-progress';"
    "ALTER TABLE call_events ADD COLUMN params TEXT;",
    /* 3. calls_acct_status held every call, so each status change moved the
     * row between four right-hand leaves of it (queued, ringing, in-progress,
     * then the end): a fifth of the WAL's frames at 1,000 creates/s. Live
     * calls are in calls_live already; this index now holds ended calls only
     * and takes one insert per call. A list filtered by status names the
     * index's condition in its SQL (filter_sql) so that SQLite can use it. */
    "DROP INDEX calls_acct_status;"
    "CREATE INDEX calls_acct_ended ON calls(account_sid, status, id)"
    "  WHERE status = 'completed' OR status = 'busy' OR status = 'failed'"
    "  OR status = 'no-answer' OR status = 'canceled';"
    /* calls_live leads with the account too, so a list of one account's
     * in-progress calls does not walk every account's. */
    "DROP INDEX calls_live;"
    "CREATE INDEX calls_live ON calls(account_sid, status)"
    "  WHERE status = 'queued' OR status = 'ringing' OR status = 'in-progress';",
    /* 4. Kaphila-key accounts (keyauth.c owns the SQL): the SID each key
     * was bound to on first use. The key itself is kept, as the config file
     * keeps a file account's: after a restart, live calls and pending
     * webhooks of the account need it to sign and to drive Kaphila.
     * IF NOT EXISTS: a database rolled back to an older user_version by hand
     * (test_a_schema_2_database_is_migrated) may have it already. */
    ("CREATE TABLE IF NOT EXISTS account_keys("
     "  account_sid TEXT PRIMARY KEY, kaphila_key TEXT NOT NULL, created INTEGER NOT NULL);"),
};
#define N_MIGRATIONS (sizeof migrations / sizeof migrations[0])

/* Statements with SQL built at run time (list filters, sibling modules),
 * cached per connection by their text. Filter combinations are few, so a
 * small table holds them all; beyond it statements are simply not cached. */
#define STORE_SQL_CACHE 48

typedef struct sql_cached {
    char         *sql;
    uint64_t      hash;
    sqlite3_stmt *st;
    bool          in_use;
} sql_cached;

struct store_conn {
    store        *owner;
    sqlite3      *db;
    sqlite3_stmt *stmts[S_COUNT];
    sql_cached    cache[STORE_SQL_CACHE];
    store_conn   *next_free;
    callcache_writes cc_writes;   /* call rows written in the open transaction */
};

struct store {
    pthread_t       ckpt_thread;     /* "store-ckpt": WAL checkpoints */
    bool            ckpt_running;
    pthread_mutex_t ckpt_lock;
    pthread_cond_t  ckpt_cond;
    bool            ckpt_stop;
    atomic_int      ckpt_mark;       /* WAL frames after the last checkpoint */
    atomic_bool     ckpt_kicked;     /* a writer woke the checkpointer */
    atomic_uint_fast64_t ckpt_by_volume, ckpt_by_timer;
    char           *path;
    sqlite3        *keeper;      /* holds a :memory: database alive */
    pthread_mutex_t lock;
    store_conn     *free_list;
    int             n_conns;
    atomic_uint_fast64_t busy;
    /* Storage faults (store_faults): writes refused by the disk, by
     * kind, and whether the last one is still unresolved (no commit has
     * succeeded since); the integrity check of store_open. */
    atomic_uint_fast64_t faults[STORE_FAULT_KINDS];
    atomic_bool     write_failing;
    atomic_bool     integrity_failed;
    callcache      *callcache;   /* told of every call row write; may be NULL */
};

static store_status map_rc(sqlite3 *db, int rc, const char *what);

/* Every statement of a connection goes through here, so contention is
 * counted per store. */
static store_status map_rc_c(store_conn *c, int rc, const char *what)
{
    int kind = -1;
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) atomic_fetch_add(&c->owner->busy, 1);
    switch (rc & 0xff) {
    case SQLITE_FULL:     kind = STORE_FAULT_FULL; break;
    case SQLITE_READONLY: kind = STORE_FAULT_READONLY; break;
    case SQLITE_IOERR: case SQLITE_CANTOPEN: kind = STORE_FAULT_IO; break;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: kind = STORE_FAULT_CORRUPT; break;
    }
    if (kind >= 0) {
        atomic_fetch_add(&c->owner->faults[kind], 1);
        atomic_store(&c->owner->write_failing, true);
    }
    return map_rc(c->db, rc, what);
}

void store_faults(const store *s, store_fault_stats *out)
{
    store *m = (store *)s;
    for (int i = 0; i < STORE_FAULT_KINDS; i++) out->count[i] = atomic_load(&m->faults[i]);
    out->write_failing = atomic_load(&m->write_failing);
    out->integrity_failed = atomic_load(&m->integrity_failed);
}

/* PRAGMA quick_check at start: a database with corrupt pages loads what it
 * can, but must not say it is ready (the live calls it lost are unknown). */
static void integrity_check(store *s, sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
    const unsigned char *first = NULL;
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) first = sqlite3_column_text(st, 0);
    if (!first || strcmp((const char *)first, "ok") != 0) {
        log_error("store", "integrity check failed: %s",
                  first ? (const char *)first : sqlite3_errmsg(db));
        atomic_store(&s->integrity_failed, true);
    }
    sqlite3_finalize(st);
}

uint64_t store_busy_count(const store *s)
{
    return atomic_load(&((store *)s)->busy);
}

void store_checkpoint_stats(const store *s, store_ckpt_stats *out)
{
    store *m = (store *)s;
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

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return rc;
}

static sqlite3 *open_db(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_URI,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    /* NORMAL in WAL mode: commits survive a process crash (kill -9); only
     * an OS crash or power loss can lose the last transactions. */
    /* wal_autocheckpoint=0: checkpoints (and their fsyncs, 1-24 ms each
     * measured) run on the store's own thread, never inside a request's or
     * the engine's commit. */
    /* cache_size: 8 MiB per connection instead of SQLite's 2 MiB, so a deep
     * `Page=N` (walking 50,000 index entries, ~2.5 MB) runs from the cache
     * rather than re-reading pages from the OS (measured 3 -> 2.2 ms). Pages
     * are only held once touched, so idle memory does not grow. */
    if (exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     " PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;"
                     " PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-8192;", err, errlen)) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static int migrate(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > (int)N_MIGRATIONS) {
        snprintf(err, errlen, "database schema version %d is newer than this twigate (%zu)",
                 version, N_MIGRATIONS);
        return -1;
    }
    for (size_t i = (size_t)version; i < N_MIGRATIONS; i++) {
        char sql[64];
        if (exec_sql(db, "BEGIN IMMEDIATE", err, errlen)) return -1;
        if (exec_sql(db, migrations[i], err, errlen)) {
            char ignore[16];
            exec_sql(db, "ROLLBACK", ignore, sizeof ignore);
            return -1;
        }
        snprintf(sql, sizeof sql, "PRAGMA user_version=%zu", i + 1);
        if (exec_sql(db, sql, err, errlen) || exec_sql(db, "COMMIT", err, errlen)) return -1;
    }
    return 0;
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
    store *s = arg;
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
    store *s = arg;
    char err[256];
    sqlite3 *db = open_db(s->path, err, sizeof err);
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

store *store_open(const char *path, char *err, size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    sqlite3 *db = NULL;
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
    db = open_db(s->path, err, errlen);
    if (!db) goto fail;
    if (migrate(db, err, errlen)) goto fail;
    if (strncmp(s->path, "file:twigate-mem-", 17) != 0) integrity_check(s, db);
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
    return s;
fail:
    sqlite3_close(db);
    store_close(s);
    return NULL;
}

static void conn_free(store_conn *c)
{
    for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(c->stmts[i]);
    for (int i = 0; i < STORE_SQL_CACHE; i++) {
        sqlite3_finalize(c->cache[i].st);
        free(c->cache[i].sql);
    }
    sqlite3_close(c->db);
    free(c);
}

void store_close(store *s)
{
    if (!s) return;
    if (s->ckpt_running) {
        pthread_mutex_lock(&s->ckpt_lock);
        s->ckpt_stop = true;
        pthread_cond_signal(&s->ckpt_cond);
        pthread_mutex_unlock(&s->ckpt_lock);
        pthread_join(s->ckpt_thread, NULL);
        s->ckpt_running = false;
    }
    while (s->free_list) {
        store_conn *c = s->free_list;
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

store_conn *store_conn_acquire(store *s)
{
    store_conn *c;
    char err[256];
    pthread_mutex_lock(&s->lock);
    c = s->free_list;
    if (c) {
        s->free_list = c->next_free;
        pthread_mutex_unlock(&s->lock);
        c->next_free = NULL;
        return c;
    }
    if (s->n_conns >= STORE_MAX_CONNS) {
        pthread_mutex_unlock(&s->lock);
        log_error("store", "connection cap %d reached", STORE_MAX_CONNS);
        return NULL;
    }
    s->n_conns++;
    pthread_mutex_unlock(&s->lock);

    c = calloc(1, sizeof *c);
    if (c) c->db = open_db(s->path, err, sizeof err);
    if (!c || !c->db) {
        if (c) log_error("store", "%s", err);
        free(c);
        pthread_mutex_lock(&s->lock);
        s->n_conns--;
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    c->owner = s;
    if (s->ckpt_running) sqlite3_wal_hook(c->db, wal_committed, s);
    return c;
}

void store_conn_release(store_conn *c)
{
    if (!c) return;
    store *s = c->owner;
    pthread_mutex_lock(&s->lock);
    c->next_free = s->free_list;
    s->free_list = c;
    pthread_mutex_unlock(&s->lock);
}

static sqlite3_stmt *stmt_get(store_conn *c, enum stmt_id id)
{
    if (!c->stmts[id] &&
        sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                           &c->stmts[id], NULL) != SQLITE_OK) {
        log_error("store", "prepare %d: %s", (int)id, sqlite3_errmsg(c->db));
        return NULL;
    }
    return c->stmts[id];
}

sqlite3_stmt *store_stmt_get(store_conn *c, const char *sql)
{
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

void store_stmt_done(store_conn *c, sqlite3_stmt *st)
{
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

/* Runs a statement that returns no rows; always resets it. */
static store_status step_done(store_conn *c, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    store_status r = map_rc_c(c, rc == SQLITE_ROW ? SQLITE_DONE : rc, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

static store_status simple(store_conn *c, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = stmt_get(c, id);
    return st ? step_done(c, st, what) : STORE_ERROR;
}

struct sqlite3 *store_conn_sqlite(store_conn *c) { return c->db; }

void store_set_callcache(store *s, callcache *cc) { s->callcache = cc; }

/* The call cache's side of a write to the calls table (callcache.h has the
 * protocol and why it is correct): cc_write_begin before the statement;
 * cc_write_end after it, which releases the written shards once no
 * transaction is open any more — at once for a statement outside a
 * transaction (its own commit), else at store_commit/store_rollback. SQLite
 * may also end a transaction by itself (an automatic rollback after an I/O
 * or full-disk error), which the autocommit check catches too. */
static void cc_write_begin(store_conn *c, const char *sid)
{
    callcache_write(c->owner->callcache, &c->cc_writes, sid);
}

static void cc_write_end(store_conn *c)
{
    if (sqlite3_get_autocommit(c->db)) callcache_writes_done(c->owner->callcache, &c->cc_writes);
}

store_status store_begin(store_conn *c)
{
    /* Already inside a transaction (the engine's per-iteration batch): the
     * caller's writes simply join it; it commits with the batch. */
    if (!sqlite3_get_autocommit(c->db)) return STORE_CONFLICT;
    return simple(c, S_BEGIN, "begin");
}
store_status store_commit(store_conn *c)
{
    store_status r = simple(c, S_COMMIT, "commit");
    if (r == STORE_OK) atomic_store(&c->owner->write_failing, false);   /* writes work again */
    cc_write_end(c);   /* not after a COMMIT that left the transaction open (busy) */
    return r;
}
store_status store_write_probe(store_conn *c)
{
    /* Rewrites user_version with its own value: page 1 becomes dirty, so
     * the caller's commit really writes to the disk. */
    sqlite3_stmt *st = NULL;
    int v = -1, rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (v < 0) return map_rc_c(c, rc == SQLITE_OK ? SQLITE_ERROR : rc, "write probe");
    char sql[48];
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d", v);
    return map_rc_c(c, sqlite3_exec(c->db, sql, NULL, NULL, NULL), "write probe");
}

store_status store_check_writable(store_conn *c)
{
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

void store_rollback(store_conn *c)
{
    if (!sqlite3_get_autocommit(c->db)) (void)simple(c, S_ROLLBACK, "rollback");
    cc_write_end(c);
}

/* ---- binding helpers ---- */

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_STATIC);
}

static void copy_col(sqlite3_stmt *st, int i, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

/* ---- calls ---- */

void store_call_fini(store_call *c)
{
    if (!c) return;
    json_decref(c->params);
    c->params = NULL;
}

/* Column order of "SELECT *" on calls, fixed by the CREATE TABLE above. */
enum { C_ID, C_SID, C_ACCT, C_PARENT, C_TO, C_FROM, C_STATUS, C_DIR, C_ANSWERED_BY,
       C_CREATED, C_UPDATED, C_START, C_END, C_ANSWERED_AT, C_DURATION, C_QUEUE, C_KID,
       C_TOKEN, C_CBSEQ, C_PARAMS };

/* with_params: only the engine's recovery needs the create parameters;
 * REST reads skip parsing them (a JSON parse per fetch, measured ~10 %). */
static void read_call(sqlite3_stmt *st, store_call *out, bool with_params)
{
    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(st, C_ID);
    copy_col(st, C_SID, out->sid, sizeof out->sid);
    copy_col(st, C_ACCT, out->account_sid, sizeof out->account_sid);
    copy_col(st, C_PARENT, out->parent_call_sid, sizeof out->parent_call_sid);
    copy_col(st, C_TO, out->to, sizeof out->to);
    copy_col(st, C_FROM, out->from, sizeof out->from);
    copy_col(st, C_STATUS, out->status, sizeof out->status);
    copy_col(st, C_DIR, out->direction, sizeof out->direction);
    copy_col(st, C_ANSWERED_BY, out->answered_by, sizeof out->answered_by);
    out->date_created = sqlite3_column_int64(st, C_CREATED);
    out->date_updated = sqlite3_column_int64(st, C_UPDATED);
    out->start_time = sqlite3_column_int64(st, C_START);
    out->end_time = sqlite3_column_int64(st, C_END);
    out->answered_at = sqlite3_column_int64(st, C_ANSWERED_AT);
    out->duration = sqlite3_column_int(st, C_DURATION);
    out->queue_time = sqlite3_column_int(st, C_QUEUE);
    copy_col(st, C_KID, out->kaphila_id, sizeof out->kaphila_id);
    copy_col(st, C_TOKEN, out->token, sizeof out->token);
    out->cb_seq = sqlite3_column_int(st, C_CBSEQ);
    if (!with_params) return;
    const char *p = (const char *)sqlite3_column_text(st, C_PARAMS);
    out->params = p ? json_loads(p, 0, NULL) : NULL;
    if (!out->params) out->params = json_object();
}

store_status store_call_insert(store_conn *c, store_call *call)
{
    sqlite3_stmt *st = stmt_get(c, S_CALL_INSERT);
    char *params = NULL;
    store_status r;
    if (!st) return STORE_ERROR;
    /* "{}" for absent params, without a json_object() nobody would free */
    params = call->params ? json_dumps(call->params, JSON_COMPACT) : strdup("{}");
    if (!params) return STORE_ERROR;
    bind_text(st, 1, call->sid);
    bind_text(st, 2, call->account_sid);
    bind_text(st, 3, call->parent_call_sid);
    bind_text(st, 4, call->to);
    bind_text(st, 5, call->from);
    bind_text(st, 6, call->status);
    bind_text(st, 7, call->direction);
    bind_text(st, 8, call->answered_by);
    sqlite3_bind_int64(st, 9, call->date_created);
    sqlite3_bind_int64(st, 10, call->date_updated);
    sqlite3_bind_int64(st, 11, call->start_time);
    sqlite3_bind_int64(st, 12, call->end_time);
    sqlite3_bind_int64(st, 13, call->answered_at);
    sqlite3_bind_int(st, 14, call->duration);
    sqlite3_bind_int(st, 15, call->queue_time);
    bind_text(st, 16, call->kaphila_id);
    bind_text(st, 17, call->token);
    sqlite3_bind_int(st, 18, call->cb_seq);
    bind_text(st, 19, params);
    cc_write_begin(c, call->sid);
    r = step_done(c, st, "call insert");
    cc_write_end(c);
    if (r == STORE_OK) call->id = sqlite3_last_insert_rowid(c->db);
    free(params);
    return r;
}

static store_status get_one_call(store_conn *c, sqlite3_stmt *st, store_call *out)
{
    int rc = sqlite3_step(st);
    store_status r;
    if (rc == SQLITE_ROW) {
        read_call(st, out, false);
        r = STORE_OK;
    } else {
        r = rc == SQLITE_DONE ? STORE_NOTFOUND : map_rc_c(c, rc, "call get");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

store_status store_call_get(store_conn *c, const char *account_sid, const char *sid,
                            store_call *out)
{
    sqlite3_stmt *st = stmt_get(c, S_CALL_GET);
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    bind_text(st, 2, account_sid);
    return get_one_call(c, st, out);
}

store_status store_call_get_by_sid(store_conn *c, const char *sid, store_call *out)
{
    sqlite3_stmt *st = stmt_get(c, S_CALL_GET_SID);
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    return get_one_call(c, st, out);
}

store_status store_call_get_by_token(store_conn *c, const char *token, store_call *out)
{
    sqlite3_stmt *st = stmt_get(c, S_CALL_GET_TOKEN);
    if (!st) return STORE_ERROR;
    bind_text(st, 1, token);
    return get_one_call(c, st, out);
}

store_status store_call_update(store_conn *c, const store_call *call)
{
    sqlite3_stmt *st = stmt_get(c, S_CALL_UPDATE);
    char *params = NULL;
    store_status r;
    if (!st) return STORE_ERROR;
    /* "{}" for absent params, without a json_object() nobody would free */
    params = call->params ? json_dumps(call->params, JSON_COMPACT) : strdup("{}");
    if (!params) return STORE_ERROR;
    bind_text(st, 1, call->sid);
    bind_text(st, 2, call->status);
    bind_text(st, 3, call->answered_by);
    sqlite3_bind_int64(st, 4, call->date_updated);
    sqlite3_bind_int64(st, 5, call->start_time);
    sqlite3_bind_int64(st, 6, call->end_time);
    sqlite3_bind_int64(st, 7, call->answered_at);
    sqlite3_bind_int(st, 8, call->duration);
    bind_text(st, 9, call->kaphila_id);
    sqlite3_bind_int(st, 10, call->cb_seq);
    bind_text(st, 11, params);
    cc_write_begin(c, call->sid);
    r = step_done(c, st, "call update");
    cc_write_end(c);
    if (r == STORE_OK && sqlite3_changes(c->db) == 0) r = STORE_NOTFOUND;
    free(params);
    return r;
}

store_status store_call_delete(store_conn *c, const char *account_sid, const char *sid)
{
    sqlite3_stmt *st = stmt_get(c, S_CALL_DELETE);
    store_status r;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    bind_text(st, 2, account_sid);
    cc_write_begin(c, sid);
    r = step_done(c, st, "call delete");
    cc_write_end(c);
    if (r == STORE_OK && sqlite3_changes(c->db) == 0) r = STORE_NOTFOUND;
    return r;
}

store_status store_call_id(store_conn *c, const char *account_sid, const char *sid, int64_t *id)
{
    sqlite3_stmt *st = stmt_get(c, S_CALL_ID);
    store_status r;
    int rc;
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    bind_text(st, 2, account_sid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) { *id = sqlite3_column_int64(st, 0); r = STORE_OK; }
    else r = rc == SQLITE_DONE ? STORE_NOTFOUND : map_rc_c(c, rc, "call id");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

bool store_status_live(const char *status)
{
    return !strcmp(status, "queued") || !strcmp(status, "ringing") ||
           !strcmp(status, "in-progress");
}

/* Appends " AND <filter>" for every filter set, numbering parameters from
 * *idx; bind_filter binds them in the same order. */
static int filter_sql(char *sql, size_t cap, int len, const store_call_filter *f, int *idx)
{
#define ADD(cond) len += snprintf(sql + len, cap - (size_t)len, " AND " cond, (*idx)++)
    if (f->to && *f->to) ADD("to_num = ?%d");
    if (f->from && *f->from) ADD("from_num = ?%d");
    if (f->parent_call_sid && *f->parent_call_sid) ADD("parent_call_sid = ?%d");
    /* The partial index's own condition, then the status itself. */
    if (f->status && *f->status)
        len += snprintf(sql + len, cap - (size_t)len, " AND %s AND status = ?%d",
                        store_status_live(f->status) ? LIVE_CONDITION : ENDED_CONDITION, (*idx)++);
    if (f->start_from) ADD("start_time >= ?%d");
    if (f->start_to) ADD("start_time != 0 AND start_time < ?%d");
    if (f->end_from) ADD("end_time >= ?%d");
    if (f->end_to) ADD("end_time != 0 AND end_time < ?%d");
#undef ADD
    return len;
}

static int bind_filter(sqlite3_stmt *st, const store_call_filter *f)
{
    int idx = 1;
    bind_text(st, idx++, f->account_sid);
    if (f->to && *f->to) bind_text(st, idx++, f->to);
    if (f->from && *f->from) bind_text(st, idx++, f->from);
    if (f->parent_call_sid && *f->parent_call_sid) bind_text(st, idx++, f->parent_call_sid);
    if (f->status && *f->status) bind_text(st, idx++, f->status);
    if (f->start_from) sqlite3_bind_int64(st, idx++, f->start_from);
    if (f->start_to) sqlite3_bind_int64(st, idx++, f->start_to);
    if (f->end_from) sqlite3_bind_int64(st, idx++, f->end_from);
    if (f->end_to) sqlite3_bind_int64(st, idx++, f->end_to);
    return idx;
}

/* The id of the call `offset` places after the newest match (0: none).
 * Selecting only the id lets SQLite answer from the (account_sid, <filter>,
 * id) index alone; an OFFSET on the SELECT * of the page itself also reads
 * each skipped table row — measured on 1,000,000 calls, Status=busy, offset
 * 50,000: 3 ms instead of 5 ms. */
static store_status offset_anchor(store_conn *c, const store_call_filter *f, int64_t offset,
                                  int64_t *anchor)
{
    char sql[768];
    int idx = 1, rc;
    int len = snprintf(sql, sizeof sql, "SELECT id FROM calls WHERE account_sid = ?%d", idx++);
    len = filter_sql(sql, sizeof sql, len, f, &idx);
    snprintf(sql + len, sizeof sql - (size_t)len, " ORDER BY id DESC LIMIT 1 OFFSET ?%d", idx);
    sqlite3_stmt *st = store_stmt_get(c, sql);
    if (!st) return STORE_ERROR;
    sqlite3_bind_int64(st, bind_filter(st, f), offset);
    rc = sqlite3_step(st);
    *anchor = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    store_stmt_done(c, st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : map_rc_c(c, rc, "call list offset");
}

store_status store_call_list(store_conn *c, const store_call_filter *f, int64_t before_id,
                             int64_t offset, int limit, store_call *out, int *n_out)
{
    /* Built per request because the filter set varies; the WHERE clause
     * always leads with account_sid and orders by id, so SQLite walks one of
     * the (account_sid, <filter>, id) indexes backwards and stops after
     * `limit` rows: by token (before_id), the cost does not grow with the
     * page number. A bare offset is first turned into the id it lands on. */
    char sql[768];
    int n = 0, idx = 1, rc;
    sqlite3_stmt *st = NULL;
    store_status r = STORE_OK;
    bool inclusive = false;

    *n_out = 0;
    if (offset > 0) {
        int64_t anchor = 0;
        if ((r = offset_anchor(c, f, offset, &anchor)) != STORE_OK) return r;
        if (anchor == 0) return STORE_OK;        /* past the last match */
        before_id = anchor;
        inclusive = true;
    }
    int len = snprintf(sql, sizeof sql, "SELECT * FROM calls WHERE account_sid = ?%d", idx++);
    len = filter_sql(sql, sizeof sql, len, f, &idx);
    if (before_id > 0)
        len += snprintf(sql + len, sizeof sql - (size_t)len,
                        inclusive ? " AND id <= ?%d" : " AND id < ?%d", idx++);
    snprintf(sql + len, sizeof sql - (size_t)len, " ORDER BY id DESC LIMIT ?%d", idx);

    if (!(st = store_stmt_get(c, sql))) return STORE_ERROR;
    idx = bind_filter(st, f);
    if (before_id > 0) sqlite3_bind_int64(st, idx++, before_id);
    sqlite3_bind_int(st, idx, limit);

    while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) read_call(st, &out[n++], false);
    if (n < limit && rc != SQLITE_DONE) r = map_rc_c(c, rc, "call list");
    store_stmt_done(c, st);
    *n_out = n;
    return r;
}

store_status store_call_each_live(store_conn *c, void (*cb)(store_call *call, void *arg),
                                  void *arg)
{
    sqlite3_stmt *st = stmt_get(c, S_CALL_LIVE);
    int rc;
    if (!st) return STORE_ERROR;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_call call;
        read_call(st, &call, true);
        cb(&call, arg);
        store_call_fini(&call);
    }
    sqlite3_reset(st);
    return map_rc_c(c, rc, "live calls");
}

/* ---- raw Kaphila events ---- */

store_status store_kevent_insert(store_conn *c, const char *call_sid, const char *body,
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
    if (r == STORE_OK && id) *id = sqlite3_last_insert_rowid(c->db);
    return r;
}

store_status store_kevent_done(store_conn *c, int64_t id)
{
    sqlite3_stmt *st = stmt_get(c, S_KEV_DONE);
    if (!st) return STORE_ERROR;
    sqlite3_bind_int64(st, 1, id);
    return step_done(c, st, "kevent done");
}

store_status store_kevent_each_pending(store_conn *c,
        void (*cb)(int64_t id, const char *call_sid, const char *body, void *arg), void *arg)
{
    sqlite3_stmt *st = stmt_get(c, S_KEV_PENDING);
    int rc;
    if (!st) return STORE_ERROR;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
           (const char *)sqlite3_column_text(st, 2), arg);
    sqlite3_reset(st);
    return map_rc_c(c, rc, "pending kevents");
}

/* ---- outbox ---- */

void store_outbox_fini(store_outbox *o)
{
    if (!o) return;
    free(o->url);
    free(o->method);
    free(o->params);
    o->url = o->method = o->params = NULL;
}

store_status store_outbox_insert(store_conn *c, store_outbox *o)
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
    if (r == STORE_OK) o->id = sqlite3_last_insert_rowid(c->db);
    return r;
}

store_status store_outbox_finish(store_conn *c, int64_t id, const char *state, int attempts)
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

store_status store_outbox_each_pending(store_conn *c, void (*cb)(store_outbox *o, void *arg),
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
    return map_rc_c(c, rc, "pending outbox");
}

store_status store_outbox_stats(store_conn *c, int64_t *pending, int64_t *oldest_ms)
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
    return map_rc_c(c, rc, "outbox stats");
}

/* ---- call events ---- */

store_status store_event_insert(store_conn *c, const char *account_sid, const char *call_sid,
                                int64_t ts, json_t *request, const char *params, json_t *response)
{
    sqlite3_stmt *st = stmt_get(c, S_EV_INSERT);
    char *rq = NULL, *rs = NULL;
    store_status r = STORE_ERROR;
    if (!st) return STORE_ERROR;
    rq = json_dumps(request, JSON_COMPACT);
    rs = json_dumps(response, JSON_COMPACT);
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

/* Form-encoded request parameters as the JSON object the event log shows
 * (repeated keys: the last wins, as when they were logged as JSON). */
static json_t *params_object(const char *enc)
{
    json_t *o = json_object();
    form f;
    form_init(&f);
    if (o && form_parse(&f, enc, strlen(enc)) == FORM_OK)
        for (size_t i = 0; i < f.n; i++)
            json_object_set_new(o, f.pairs[i].key, json_string(f.pairs[i].value));
    form_fini(&f);
    return o;
}

store_status store_event_list(store_conn *c, const char *account_sid, const char *call_sid,
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
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        return map_rc_c(c, sqlite3_errcode(c->db), "event list prepare");
    bind_text(st, 1, call_sid);
    bind_text(st, 2, account_sid);
    sqlite3_bind_int(st, 3, limit);
    sqlite3_bind_int64(st, 4, offset > 0 ? offset : after_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *rq = json_loads((const char *)sqlite3_column_text(st, 1), 0, NULL);
        json_t *rs = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
        const char *params = (const char *)sqlite3_column_text(st, 3);
        if (params && json_is_object(rq)) json_object_set_new(rq, "parameters", params_object(params));
        *last_id = sqlite3_column_int64(st, 0);
        json_array_append_new(out_arr, json_pack("{s:I,s:o?,s:o?}", "id",
                                                 (json_int_t)*last_id, "request", rq,
                                                 "response", rs));
    }
    sqlite3_finalize(st);
    return map_rc_c(c, rc, "event list");
}

/* ---- notifications ---- */

store_status store_notification_insert(store_conn *c, const store_notification *n)
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

store_status store_notification_list(store_conn *c, const char *account_sid,
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
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        return map_rc_c(c, sqlite3_errcode(c->db), "notification list prepare");
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
    return map_rc_c(c, rc, "notification list");
}

store_status store_notification_get(store_conn *c, const char *account_sid, const char *sid,
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
    else r = rc == SQLITE_DONE ? STORE_NOTFOUND : map_rc_c(c, rc, "notification get");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}
