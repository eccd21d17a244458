/* store_schema.c — the database file: a connection's pragmas, the
 * versioned schema migrations (PRAGMA user_version) and the start-up
 * integrity check. Runs at store_open and when the pool opens a connection. */
#include "sqlite_int.h"

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
    /* Recordings (store_recordings.c owns the SQL). A RecordVerb recording is a
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
    /* 4. Kaphila-key accounts (store_keys.c owns the SQL, for keyauth.c): the SID each key
     * was bound to on first use. The key itself is kept, as the config file
     * keeps a file account's: after a restart, live calls and pending
     * webhooks of the account need it to sign and to drive Kaphila.
     * IF NOT EXISTS: a database rolled back to an older user_version by hand
     * (test_a_schema_2_database_is_migrated) may have it already. */
    ("CREATE TABLE IF NOT EXISTS account_keys("
     "  account_sid TEXT PRIMARY KEY, kaphila_key TEXT NOT NULL, created INTEGER NOT NULL);"),
    /* 5. Executor checkpoints (store_ckpt.c owns the SQL; docs/scale-out.md
     * §3): a live call's position in its TwiML, so a restart resumes the
     * call instead of hanging it up. doc is the document being run (its
     * body as received, re-parsed on resume), rewritten only when the
     * document changes; state the small JSON of cursors, digits and due
     * times, rewritten at every verb boundary. One row per live call,
     * deleted when the call ends. */
    ("CREATE TABLE IF NOT EXISTS call_checkpoints("
     "  call_sid TEXT PRIMARY KEY, seq INTEGER NOT NULL, doc TEXT NOT NULL DEFAULT '',"
     "  state TEXT NOT NULL, updated_ms INTEGER NOT NULL);"),
    /* 6. Instances sharing a database (docs/scale-out.md §4, §5): only a
     * PostgreSQL database is shared, but the tables are here too so that
     * both backends hold one schema (test_store_pg.py compares them). On
     * SQLite owner stays '' and instances and call_inbox stay empty;
     * calls_kaphila serves the reconciler on both. calls.owner is added by
     * added_columns below, before this runs. */
    "CREATE TABLE IF NOT EXISTS instances("
    "  id TEXT PRIMARY KEY, lease_until_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL,"
    "  version TEXT NOT NULL, state TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS calls_owner ON calls(owner)"
    "  WHERE status = 'queued' OR status = 'ringing' OR status = 'in-progress';"
    "CREATE INDEX IF NOT EXISTS calls_kaphila ON calls(kaphila_id) WHERE kaphila_id != '';"
    "CREATE TABLE IF NOT EXISTS call_inbox("
    "  id INTEGER PRIMARY KEY, call_sid TEXT NOT NULL, owner TEXT NOT NULL,"
    "  kind TEXT NOT NULL, body TEXT NOT NULL, received_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS call_inbox_call ON call_inbox(call_sid, id);"
    "CREATE INDEX IF NOT EXISTS call_inbox_owner ON call_inbox(owner, id);",
    /* 7. The shared budget (docs/scale-out.md §7): PostgreSQL's, here for
     * the one schema; unused on SQLite, where budget.c's log in memory is
     * the only one. */
    "CREATE TABLE IF NOT EXISTS budget_keys(label TEXT PRIMARY KEY,"
    "  used INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS budget_slots(label TEXT NOT NULL, free_at_ms INTEGER NOT NULL,"
    "  session TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS budget_slots_label ON budget_slots(label, free_at_ms);"
    "CREATE TABLE IF NOT EXISTS budget_usage(label TEXT NOT NULL, instance TEXT NOT NULL,"
    "  live INTEGER NOT NULL, PRIMARY KEY(label, instance));",
    /* 8. calls_owner and calls_kaphila (6) serve instances sharing a
     * PostgreSQL database: adoption by owner, and the reconciler asking
     * whether a call it does not hold is another instance's. One SQLite
     * process holds every live call in memory, so it reads neither; and
     * SQLite rewrites an index entry whenever an UPDATE names one of its
     * columns, so each status write of a call paid for both (measured: CPU
     * per relayed event +15 %, per create +10 %, bench cpu section against
     * 6a7c21d). */
    "DROP INDEX IF EXISTS calls_owner;"
    "DROP INDEX IF EXISTS calls_kaphila;",
};
#define N_MIGRATIONS (sizeof migrations / sizeof migrations[0])

/* Columns a migration adds, added before its SQL runs and only when missing:
 * SQLite has no ADD COLUMN IF NOT EXISTS, and a database whose user_version
 * was set back by hand (test_a_schema_2_database_is_migrated) already has
 * them, as the IF NOT EXISTS of the tables and indexes above allow for. */
static const struct { size_t version; const char *table, *column, *decl; } added_columns[] = {
    {6, "calls", "owner", "TEXT NOT NULL DEFAULT ''"},
};

static bool has_column(sqlite3 *db, const char *table, const char *column)
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, column, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

/* PRAGMA quick_check at start: a database with corrupt pages loads what it
 * can, but must not say it is ready (the live calls it lost are unknown). */
void store_integrity_check(store *s, sqlite3 *db)
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

sqlite3 *store_open_db(const char *path, char *err, size_t errlen)
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

int store_migrate(sqlite3 *db, char *err, size_t errlen)
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
        int rc = SQLITE_OK;
        for (size_t k = 0; rc == SQLITE_OK && k < sizeof added_columns / sizeof added_columns[0];
             k++) {
            char sql_add[160];
            if (added_columns[k].version != i + 1 ||
                has_column(db, added_columns[k].table, added_columns[k].column))
                continue;
            snprintf(sql_add, sizeof sql_add, "ALTER TABLE %s ADD COLUMN %s %s",
                     added_columns[k].table, added_columns[k].column, added_columns[k].decl);
            rc = exec_sql(db, sql_add, err, errlen);
        }
        if (rc != SQLITE_OK || exec_sql(db, migrations[i], err, errlen)) {
            char ignore[16];
            exec_sql(db, "ROLLBACK", ignore, sizeof ignore);
            return -1;
        }
        snprintf(sql, sizeof sql, "PRAGMA user_version=%zu", i + 1);
        if (exec_sql(db, sql, err, errlen) || exec_sql(db, "COMMIT", err, errlen)) return -1;
    }
    return 0;
}

