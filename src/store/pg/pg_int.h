/* pg_int.h — the PostgreSQL backend's internals, private to src/store/pg/:
 * shared by the pool (pg_conn.c), the schema (pg_schema.c) and the table
 * files (pg_calls.c, pg_log.c, pg_recordings.c). store.c reaches them only
 * through store_pg_backend (docs/scale-out.md §1, §2).
 *
 * What is here: the pool's and a connection's structures (struct pg_store,
 * struct pg_conn, each embedding store_backend.h's common part first), the
 * statement runner (pg_run: prepared per connection on first use, text
 * parameters), the mapping of SQLSTATEs onto store_status and the fault
 * counters (pg_status), the backend's entries (pg_*) and small column
 * helpers. Threads: a libpq connection is not thread-safe, so a pg_conn is
 * used by one thread at a time (store.h's rule); the free list is under the
 * store's lock. */
#ifndef TWIGATE_STORE_PG_INT_H
#define TWIGATE_STORE_PG_INT_H

#include "../store_backend.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

/* Connections a store opens at most (HTTP pool, engine, console, start-up). */
#define PG_MAX_CONNS 64
/* Statements prepared per connection: the fixed ones plus the few filter
 * combinations of the lists; past it a statement is run unprepared. */
#define PG_STMT_CACHE 96

/* Writes of the open batch sent ahead without waiting (pg_defer) before
 * their answers are read back. */
#define PG_PIPE_MAX 64

typedef struct pg_stmt {
    char    *sql;
    uint64_t hash;
} pg_stmt;

typedef struct pg_pending {
    const char *what;             /* static: for the log */
    int64_t    *id;               /* RETURNING id's destination, or NULL */
    bool        must_touch;       /* no row matched = refused (STORE_NOTFOUND) */
} pg_pending;

typedef struct pg_conn pg_conn;
struct pg_conn {
    store_conn base;              /* first: a store_conn * is a pg_conn * */
    PGconn    *pq;
    pg_stmt    stmts[PG_STMT_CACHE];   /* prepared as "t<index>" */
    /* Between a BEGIN that succeeded and its COMMIT/ROLLBACK: a connection
     * lost meanwhile is not reset under the transaction (its statements
     * would run one by one, committed each), only after it ends. */
    bool       in_batch;
    /* libpq's pipeline mode, on while deferred writes wait for their
     * answers (pg_defer; read back by the next statement that waits, the
     * commit at the latest). A deferred write that failed or matched
     * nothing poisons the batch: its COMMIT becomes a ROLLBACK. */
    bool       piped, poisoned;
    int        n_pend;
    int        idle_txn_ms;       /* the session's idle_in_transaction_session_timeout
                                     as set here (0: the server's own) */
    pg_pending pend[PG_PIPE_MAX];
    pg_conn   *next_free;
};

typedef struct pg_store {
    store           base;         /* first: a store * is a pg_store * */
    char           *url;
    pthread_mutex_t lock;
    pg_conn        *free_list;
    int             n_conns;
    char            session[33];     /* pg_cluster.c: this process's budget slots */
    /* A session idle inside a transaction this long is ended by the server
     * (pg_instance_join sets it to the lease; 0 until then). Read by every
     * thread as it takes or resets a connection. */
    _Atomic int     idle_txn_ms;
    bool            unowned_taken;   /* pg_cluster.c: rows from before owners were
                                        looked for once (engine thread only) */
} pg_store;

static inline pg_conn *PG(store_conn *c) { return (pg_conn *)c; }

/* Runs sql with n text parameters (NULL = SQL NULL) on the connection,
 * preparing it on the connection's first use of that text. Returns the
 * result (PQclear it) or NULL with *st set; *st is STORE_OK for a result
 * that succeeded, else the mapped failure (logged, counted). */
PGresult *pg_run(store_conn *c, const char *sql, int n, const char *const *vals,
                 store_status *st, const char *what);
/* An INSERT … RETURNING id: *id set when a row came back (id may be NULL).
 * No row from an `ON CONFLICT DO NOTHING` insert is STORE_CONFLICT: the
 * unique key was taken, and the transaction lives on (an error would abort
 * the engine's whole batch on PostgreSQL, where SQLite loses one statement). */
store_status pg_insert_id(store_conn *c, const char *sql, int n, const char *const *vals,
                          int64_t *id, const char *what);
/* pg_run for a statement whose rows are not wanted. */
store_status pg_do(store_conn *c, const char *sql, int n, const char *const *vals,
                   const char *what);
/* A write of the engine's batch whose outcome is only "done, or the batch
 * is lost": inside a transaction it is sent without waiting for the answer
 * (libpq's pipeline mode), so a batch of writes costs one round trip, read
 * back before the next statement that waits for its own answer or at the
 * commit. A write that fails, or with must_touch matches no row, turns the
 * commit into a rollback (store_commit fails); *id, for an INSERT …
 * RETURNING id, is set by then. Outside a transaction, or for a statement
 * not prepared on this connection yet, it runs at once as pg_do (with
 * must_touch: STORE_NOTFOUND when no row matched; with id: as
 * pg_insert_id). The parameters are copied when sent. */
store_status pg_defer(store_conn *c, const char *sql, int n, const char *const *vals,
                      int64_t *id, bool must_touch, const char *what);
/* The store_status of a failed result (NULL: the connection's state),
 * counting contention and faults on the connection's store. */
store_status pg_status(store_conn *c, const PGresult *r, const char *what);
/* The url with its password masked, for logs, into out. */
void pg_mask_url(const char *url, char *out, size_t outlen);

/* Schema (pg_schema.c): brings the database to the newest version under an
 * advisory lock; 0 or -1 with err. */
int pg_migrate(PGconn *pq, char *err, size_t errlen);

/* Integer parameters as text: a small buffer per parameter. */
typedef struct pg_num { char s[24]; } pg_num;
static inline const char *pg_i64(pg_num *b, int64_t v)
{
    snprintf(b->s, sizeof b->s, "%lld", (long long)v);
    return b->s;
}
static inline const char *pg_txt(const char *s) { return s ? s : ""; }

static inline int64_t col_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}
static inline void col_copy(const PGresult *r, int row, int col, char *out, size_t size)
{
    snprintf(out, size, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}
static inline char *col_dup(const PGresult *r, int row, int col)
{
    return strdup(PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

/* The backend's entries (store_backend.h has their contracts), by file. */
/* pg_calls.c */
store_status pg_call_insert(store_conn *c, store_call *call);
store_status pg_call_get(store_conn *c, const char *account_sid, const char *sid,
        store_call *out);
store_status pg_call_get_by_sid(store_conn *c, const char *sid, store_call *out);
store_status pg_call_get_by_token(store_conn *c, const char *token, store_call *out);
store_status pg_call_update(store_conn *c, const store_call *call);
store_status pg_call_delete(store_conn *c, const char *account_sid, const char *sid);
store_status pg_call_id(store_conn *c, const char *account_sid, const char *sid, int64_t *id);
store_status pg_call_list(store_conn *c, const store_call_filter *f, int64_t before_id,
        int64_t offset, int limit, store_call *out, int *n_out);
store_status pg_call_each_live(store_conn *c, void (*cb)(store_call *call, void *arg),
        void *arg);
store_status pg_call_live_kaphila(store_conn *c, const char *kaphila_id);
/* Each row of a `SELECT CALL_COLS …` result (params loaded) to cb. */
void pg_calls_each_row(const PGresult *r, void (*cb)(store_call *call, void *arg), void *arg);
/* The columns, in the order pg_calls_each_row reads them. */
#define PG_CALL_COLS                                                                    \
    "id, sid, account_sid, parent_call_sid, to_num, from_num, status, direction,"       \
    " answered_by, date_created, date_updated, start_time, end_time, answered_at,"      \
    " duration, queue_time, kaphila_id, token, cb_seq, params"
#define PG_LIVE_CONDITION \
    "(status = 'queued' OR status = 'ringing' OR status = 'in-progress')"
store_status pg_ckpt_put(store_conn *c, const char *call_sid, int64_t seq, const char *doc,
        const char *state, int64_t now_ms);
store_status pg_ckpt_get(store_conn *c, const char *call_sid, char **doc, char **state);
store_status pg_ckpt_delete(store_conn *c, const char *call_sid);
store_status pg_account_key_bind(store_conn *c, const char *sid, const char *key,
        int64_t now, bool *same);
store_status pg_account_key_each(store_conn *c, int max,
        bool (*cb)(const char *sid, const char *key, int64_t created, void *arg), void *arg);
/* pg_log.c */
store_status pg_kevent_insert(store_conn *c, const char *call_sid, const char *body,
        size_t len, bool done, int64_t *id);
store_status pg_kevent_done(store_conn *c, int64_t id);
store_status pg_kevent_each_pending(store_conn *c,
        void (*cb)(int64_t id, const char *call_sid, const char *body, void *arg), void *arg);
store_status pg_outbox_insert(store_conn *c, store_outbox *o);
store_status pg_outbox_finish(store_conn *c, int64_t id, const char *state, int attempts);
store_status pg_outbox_each_pending(store_conn *c, void (*cb)(store_outbox *o, void *arg),
        void *arg);
store_status pg_outbox_stats(store_conn *c, int64_t *pending, int64_t *oldest_ms);
/* Each row of a `SELECT id, call_sid, account_sid, kind, seq, url, method,
 * params, idem, created FROM outbox …` result to cb. */
void pg_outbox_each_row(const PGresult *r, void (*cb)(store_outbox *o, void *arg), void *arg);
store_status pg_event_insert(store_conn *c, const char *account_sid, const char *call_sid,
        int64_t ts, json_t *request, const char *params, json_t *response);
store_status pg_event_list(store_conn *c, const char *account_sid, const char *call_sid,
        int64_t after_id, int64_t offset, int limit, json_t *out_arr, int64_t *last_id);
store_status pg_notification_insert(store_conn *c, const store_notification *n);
store_status pg_notification_list(store_conn *c, const char *account_sid,
        const char *call_sid, int64_t before_id, int64_t offset, int limit, json_t *out_arr,
        int64_t *last_id);
store_status pg_notification_get(store_conn *c, const char *account_sid, const char *sid,
        json_t **out);
/* pg_cluster.c (store/cluster.h) */
store_status pg_instance_join(store *s, const char *id, const char *version, int lease_ms,
        int wait_ms, char *err, size_t errlen);
store_status pg_instance_renew(store_conn *c, int lease_ms);
store_status pg_instance_leave(store_conn *c);
store_status pg_adopt(store_conn *c, int max, const store_adopt_cbs *cbs, void *arg, int *n,
        int *fenced);
store_status pg_inbox_insert(store_conn *c, const char *call_sid, const char *kind,
        const char *body, size_t len);
store_status pg_inbox_each(store_conn *c, int max,
        void (*cb)(int64_t id, const char *call_sid, const char *kind, const char *body,
                   void *arg), void *arg);
store_status pg_inbox_done(store_conn *c, int64_t id);
store_status pg_budget_take(store_conn *c, const char *label, int limit, int64_t hold_ms,
        int reserve_per_live, int live, int pending_new, int64_t *wait_ms);
store_status pg_budget_live(store_conn *c, const char *label, int live);
store_listener *pg_listener_open(store *s);
int  pg_listener_fd(const store_listener *l);
int  pg_listener_drain(store_listener *l);
void pg_listener_close(store_listener *l);
/* pg_recordings.c */
store_status pg_rec_insert(store_conn *c, rec_row *r);
store_status pg_rec_get(store_conn *c, const char *account_sid, const char *sid, rec_row *out);
store_status pg_rec_get_id(store_conn *c, int64_t id, rec_row *out);
store_status pg_rec_update(store_conn *c, const rec_row *r);
store_status pg_rec_set_deleted(store_conn *c, const char *sid, int64_t now);
store_status pg_rec_list(store_conn *c, const rec_filter *f, int64_t before_id, int64_t offset,
        int limit, rec_row *out, int *n_out);
store_status pg_rec_for_call(store_conn *c, const char *call_sid, rec_row **out, int *n_out);
store_status pg_rec_pending_calls(store_conn *c, char (*out)[SID_SIZE], int max, int *n_out);

#endif
