/* sqlite_int.h — the SQLite backend's internals, private to src/store/sqlite/:
 * shared by the pool (sqlite_store.c), the schema (store_schema.c) and every
 * table file (store_calls.c, store_log.c, store_keys.c, store_recordings.c,
 * store_ckpt.c). store.c reaches them only through store_sqlite_backend.
 *
 * What is here: the pool's and a connection's structures (struct sq_store,
 * struct sq_conn, each embedding store_backend.h's common part first), the
 * fixed statements' ids and their per-connection cache (stmt_get), the
 * status mapping that counts contention and storage faults
 * (store_map_rc_c), the backend's entries (sq_*), and the small
 * bind/column helpers. Threads: a connection is used by one thread at a
 * time (store.h); the common counters are atomics, the free list is under
 * the store's lock. */
#ifndef TWIGATE_STORE_SQLITE_INT_H
#define TWIGATE_STORE_SQLITE_INT_H

#include "../store_backend.h"

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
    S_CALL_LIVE_KID,
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

typedef struct sq_conn sq_conn;
struct sq_conn {
    store_conn    base;           /* first: a store_conn * is a sq_conn * */
    sqlite3      *db;
    sqlite3_stmt *stmts[S_COUNT];
    sql_cached    cache[STORE_SQL_CACHE];
    sq_conn      *next_free;
};

typedef struct sq_store {
    store           base;            /* first: a store * is a sq_store * */
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
    sq_conn        *free_list;
    int             n_conns;
} sq_store;

static inline sq_conn *SQ(store_conn *c) { return (sq_conn *)c; }

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

/* The backend's entries (store_backend.h has their contracts), by file. */
/* store_calls.c */
store_status sq_call_insert(store_conn *c, store_call *call);
store_status sq_call_get(store_conn *c, const char *account_sid, const char *sid,
        store_call *out);
store_status sq_call_get_by_sid(store_conn *c, const char *sid, store_call *out);
store_status sq_call_get_by_token(store_conn *c, const char *token, store_call *out);
store_status sq_call_update(store_conn *c, const store_call *call);
store_status sq_call_delete(store_conn *c, const char *account_sid, const char *sid);
store_status sq_call_id(store_conn *c, const char *account_sid, const char *sid, int64_t *id);
store_status sq_call_live_kaphila(store_conn *c, const char *kaphila_id);
store_status sq_call_list(store_conn *c, const store_call_filter *f, int64_t before_id,
        int64_t offset, int limit, store_call *out, int *n_out);
store_status sq_call_each_live(store_conn *c, void (*cb)(store_call *call, void *arg),
        void *arg);
/* store_ckpt.c */
store_status sq_call_ckpt_put(store_conn *c, const char *call_sid, int64_t seq,
        const char *doc, const char *state, int64_t now_ms);
store_status sq_call_ckpt_get(store_conn *c, const char *call_sid, char **doc, char **state);
store_status sq_call_ckpt_delete(store_conn *c, const char *call_sid);
/* store_log.c */
store_status sq_kevent_insert(store_conn *c, const char *call_sid, const char *body,
        size_t len, bool done, int64_t *id);
store_status sq_kevent_done(store_conn *c, int64_t id);
store_status sq_kevent_each_pending(store_conn *c,
        void (*cb)(int64_t id, const char *call_sid, const char *body, void *arg), void *arg);
store_status sq_outbox_insert(store_conn *c, store_outbox *o);
store_status sq_outbox_finish(store_conn *c, int64_t id, const char *state, int attempts);
store_status sq_outbox_each_pending(store_conn *c, void (*cb)(store_outbox *o, void *arg),
        void *arg);
store_status sq_outbox_stats(store_conn *c, int64_t *pending, int64_t *oldest_ms);
store_status sq_event_insert(store_conn *c, const char *account_sid, const char *call_sid,
        int64_t ts, json_t *request, const char *params, json_t *response);
store_status sq_event_list(store_conn *c, const char *account_sid, const char *call_sid,
        int64_t after_id, int64_t offset, int limit, json_t *out_arr,
        int64_t *last_id);
store_status sq_notification_insert(store_conn *c, const store_notification *n);
store_status sq_notification_list(store_conn *c, const char *account_sid,
        const char *call_sid, int64_t before_id, int64_t offset,
        int limit, json_t *out_arr, int64_t *last_id);
store_status sq_notification_get(store_conn *c, const char *account_sid, const char *sid,
        json_t **out);
/* store_keys.c */
store_status sq_account_key_bind(store_conn *c, const char *sid, const char *key,
        int64_t now, bool *same);
store_status sq_account_key_each(store_conn *c, int max,
        bool (*cb)(const char *sid, const char *key, int64_t created, void *arg), void *arg);
/* store_recordings.c */
store_status sq_rec_insert(store_conn *c, rec_row *r);
store_status sq_rec_get(store_conn *c, const char *account_sid, const char *sid, rec_row *out);
store_status sq_rec_get_id(store_conn *c, int64_t id, rec_row *out);
store_status sq_rec_update(store_conn *c, const rec_row *r);
store_status sq_rec_set_deleted(store_conn *c, const char *sid, int64_t now);
store_status sq_rec_list(store_conn *c, const rec_filter *f, int64_t before_id, int64_t offset,
        int limit, rec_row *out, int *n_out);
store_status sq_rec_for_call(store_conn *c, const char *call_sid, rec_row **out, int *n_out);
store_status sq_rec_pending_calls(store_conn *c, char (*out)[SID_SIZE], int max, int *n_out);

/* A fixed statement from the connection's cache, prepared on first use. */
static inline sqlite3_stmt *stmt_get(store_conn *base, enum stmt_id id)
{
    sq_conn *c = SQ(base);
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
