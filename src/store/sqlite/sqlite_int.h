/* sqlite_int.h — the store's internals, private to src/store/: shared by
 * the pool (store.c), the schema (store_schema.c) and every table file
 * (store_calls.c, store_log.c, store_keys.c, store_recordings.c).
 *
 * What is here: the pool's and a connection's structures (struct store,
 * struct store_conn), the fixed statements' ids and their per-connection
 * cache (stmt_get), the status mapping that counts contention and storage
 * faults (store_map_rc_c), the call cache's write protocol, and the small
 * bind/column helpers. Threads: a store_conn is used by one thread at a
 * time (store.h); struct store's counters are atomics, its free list is
 * under its lock. Nothing outside src/store/ includes this file. */
#ifndef TWIGATE_STORE_SQLITE_INT_H
#define TWIGATE_STORE_SQLITE_INT_H

#include "store/store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"

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

/* The fixed statements' SQL, by stmt_id (store.c). */
extern const char *const store_stmt_sql[S_COUNT];

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
    bool          calls_written;  /* ditto, for the change signal (store_call_changes) */
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
    atomic_uint_fast64_t call_changes;   /* store_call_changes */
    store_change_hook *change_hook;      /* set before the writers run */
    void           *change_arg;
};

/* A prepared statement for sql (any text, built at run time or not) from
 * the connection's cache; give it back with store_stmt_done, which resets
 * it. NULL on error (logged). */
sqlite3_stmt *store_stmt_get(store_conn *c, const char *sql);
void store_stmt_done(store_conn *c, sqlite3_stmt *st);

/* Maps a statement's result code to a store_status, counting contention
 * (SQLITE_BUSY) and storage faults on the connection's store (store.c). */
store_status store_map_rc_c(store_conn *c, int rc, const char *what);

/* Schema (store_schema.c): opens one connection with the store's pragmas;
 * brings the schema to the newest version; checks the file's pages. */
sqlite3 *store_open_db(const char *path, char *err, size_t errlen);
int store_migrate(sqlite3 *db, char *err, size_t errlen);
void store_integrity_check(store *s, sqlite3 *db);

/* A fixed statement from the connection's cache, prepared on first use. */
static inline sqlite3_stmt *stmt_get(store_conn *c, enum stmt_id id)
{
    if (!c->stmts[id] &&
        sqlite3_prepare_v3(c->db, store_stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                           &c->stmts[id], NULL) != SQLITE_OK) {
        log_error("store", "prepare %d: %s", (int)id, sqlite3_errmsg(c->db));
        return NULL;
    }
    return c->stmts[id];
}

/* Runs a statement that returns no rows; always resets it. */
static inline store_status step_done(store_conn *c, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    store_status r = store_map_rc_c(c, rc == SQLITE_ROW ? SQLITE_DONE : rc, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

/* The call cache's side of a write to the calls table (callcache.h has the
 * protocol and why it is correct): cc_write_begin before the statement;
 * cc_write_end after it, which releases the written shards once no
 * transaction is open any more — at once for a statement outside a
 * transaction (its own commit), else at store_commit/store_rollback. SQLite
 * may also end a transaction by itself (an automatic rollback after an I/O
 * or full-disk error), which the autocommit check catches too. */
/* Bumps the change signal once the transaction that wrote call rows ended (store.c). */
void store_calls_changed(store_conn *c);

static inline void cc_write_begin(store_conn *c, const char *sid)
{
    callcache_write(c->owner->callcache, &c->cc_writes, sid);
    c->calls_written = true;
}

static inline void cc_write_end(store_conn *c)
{
    if (!sqlite3_get_autocommit(c->db)) return;
    callcache_writes_done(c->owner->callcache, &c->cc_writes);
    if (c->calls_written) store_calls_changed(c);
}

/* ---- binding helpers ---- */

static inline void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_STATIC);
}

static inline void copy_col(sqlite3_stmt *st, int i, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

#endif
