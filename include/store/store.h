/* store — twigate's database: calls, the call event log, notifications,
 * the webhook outbox, raw Kaphila events, account keys, executor
 * checkpoints and recordings (whose rows and calls are in store/recstore.h).
 *
 * One interface, more than one backend (docs/scale-out.md §1):
 * src/store/store.c dispatches every call below to the backend
 * store_open_url picked (src/store/store_backend.h): SQLite by default
 * (src/store/sqlite/: WAL mode, synchronous=NORMAL — a committed row
 * survives kill -9 of twigate; see docs/architecture.md for the power-loss
 * trade-off —, versioned schema migrations in PRAGMA user_version, foreign
 * keys off: rows are deleted by explicit statements), or PostgreSQL when
 * db.url is set (src/store/pg/, libpq; schema_version at the same version
 * numbers). Both pass tests/unit/store/test_store_conformance*.c.
 *
 * Threads: a `store` is shared by all threads; each thread takes a
 * connection with store_conn_acquire and gives it back with
 * store_conn_release, so no connection is used by two threads at once.
 * Prepared statements are cached per connection. The counters (busy,
 * faults, changes) are atomics, readable from any thread. */
#ifndef TWIGATE_STORE_H
#define TWIGATE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "store/callcache.h"
#include "base/sid.h"
#include "base/phone.h"

typedef struct store store;
typedef struct store_conn store_conn;

typedef enum {
    STORE_OK = 0,
    STORE_NOTFOUND,
    STORE_CONFLICT,    /* unique constraint, or a conditional update that matched nothing */
    STORE_BUSY,        /* lock contention beyond the busy timeout */
    STORE_ERROR,       /* anything else; logged */
} store_status;

#define STORE_STATUS_LEN 16
#define STORE_KID_LEN    64     /* Kaphila callId, e.g. "1720012345.88" */

/* A call row. Times are ms since the epoch, 0 = null. */
typedef struct store_call {
    int64_t id;                          /* rowid: list order, newest = largest */
    char    sid[SID_SIZE];
    char    account_sid[SID_SIZE];
    char    parent_call_sid[SID_SIZE];   /* "" = null */
    char    to[PHONE_MAX];
    char    from[PHONE_MAX];
    char    status[STORE_STATUS_LEN];    /* queued ringing in-progress completed busy failed no-answer canceled */
    char    direction[STORE_STATUS_LEN];
    char    answered_by[24];             /* "" = null */
    int64_t date_created, date_updated, start_time, end_time, answered_at;
    int     duration;                    /* seconds, -1 = null */
    int     queue_time;                  /* ms */
    char    kaphila_id[STORE_KID_LEN];   /* "" until known */
    char    token[TOKEN_SIZE];           /* the per-call secret in Kaphila's webhookUrl */
    int     cb_seq;                      /* next status-callback SequenceNumber */
    json_t *params;                      /* owned: create/update parameters (see engine);
                                            NULL when read by store_call_get, _by_sid, _by_token or list
                                            (only store_call_each_live loads them) */
} store_call;

void store_call_fini(store_call *c);     /* frees params */

/* True for the statuses of a live call (queued, ringing, in-progress); the
 * rest are terminal. The store's indexes split calls the same way
 * (calls_live, calls_acct_ended). */
bool store_status_live(const char *status);

/* List filters; empty strings / 0 mean "no filter". Time bounds are
 * half-open [from, to) in ms. */
typedef struct store_call_filter {
    const char *account_sid;
    const char *to, *from, *parent_call_sid, *status;
    int64_t start_from, start_to, end_from, end_to;
} store_call_filter;

/* Opens the database and brings its schema to the newest version.
 * store_open_url: url empty or NULL = SQLite at path (":memory:" allowed);
 * otherwise a server URL for a backend built in (docs/scale-out.md §1).
 * store_open(path) = store_open_url(NULL, path). */
store *store_open(const char *path, char *err, size_t errlen);
store *store_open_url(const char *url, const char *path, char *err, size_t errlen);
/* "sqlite" or "postgresql" (logs, metrics). */
const char *store_backend_name(const store *s);
/* Times a statement gave up on a lock after the busy timeout (metrics). */
uint64_t store_busy_count(const store *s);
/* The checkpointer's passes (metrics): woken by the WAL's growth, or by its
 * one-second timer; and the WAL's length in pages at the last pass. */
typedef struct store_ckpt_stats {
    uint64_t by_volume, by_timer;
    int64_t  wal_pages;
} store_ckpt_stats;
void store_checkpoint_stats(const store *s, store_ckpt_stats *out);
/* Storage faults (/readyz, metrics): statements the disk refused, by kind
 * (disk full, read-only, I/O error, corrupt page), whether writes are
 * failing now (set by a refusal, cleared by the next successful commit),
 * and whether store_open's PRAGMA quick_check failed. Any thread. */
enum { STORE_FAULT_FULL, STORE_FAULT_READONLY, STORE_FAULT_IO, STORE_FAULT_CORRUPT,
       STORE_FAULT_KINDS };
typedef struct store_fault_stats {
    uint64_t count[STORE_FAULT_KINDS];
    bool     write_failing;
    bool     integrity_failed;
} store_fault_stats;
void store_faults(const store *s, store_fault_stats *out);
/* A write that costs one page, inside the caller's transaction: its commit
 * proves the disk takes writes again (the engine's re-sync after a fault). */
__attribute__((warn_unused_result)) store_status store_write_probe(store_conn *c);
void   store_close(store *s);                 /* accepts NULL; all conns released */

/* Every insert, update and delete of a call row tells cc (callcache.h:
 * before the statement, and after its transaction ends). Set it once, before
 * other threads use s; cc must outlive s. NULL (the default) = no cache. */
void store_set_callcache(store *s, callcache *cc);

/* The change signal (docs/console.md, "The stream"): a count of the ended
 * transactions that wrote call rows (a commit, or a rollback: a spurious
 * change costs a reader one look), bumped on the writer's thread after the
 * transaction ends, then hook(arg) runs there too. The hook must be cheap and
 * never block (the console's sets a flag and writes an eventfd only when its
 * thread is waiting for it). Set it before the writers start and clear it
 * (NULL) after they stop. */
typedef void store_change_hook(void *arg);
uint64_t store_call_changes(const store *s);
void store_set_change_hook(store *s, store_change_hook *hook, void *arg);

store_conn *store_conn_acquire(store *s);     /* NULL on failure (logged) */
void        store_conn_release(store_conn *c);

/* store_begin returns STORE_CONFLICT, quietly, when the connection is
 * already inside a transaction: the caller's writes then join it and it
 * must not commit (see the engine's write batch in engine.c). */
/* Takes and releases the write lock: the database is writable now. */
__attribute__((warn_unused_result)) store_status store_check_writable(store_conn *c);
/* Inside a transaction PostgreSQL sends the plain writes of the engine's
 * batch (a call's update, its event log, outbox rows and their outcome,
 * checkpoints, done marks) ahead without waiting for their answers
 * (pg_defer in src/store/pg/pg_int.h): such a write answers STORE_OK and
 * a refusal of it (a failure, or a call update that matched no row: the
 * call is another instance's) comes from the next statement that waits,
 * or from store_commit, which then rolls the whole transaction back. So a
 * writer inside a transaction treats any failure as the loss of all of it,
 * as the engine's batch does. An outbox row's id is set by the commit. */
__attribute__((warn_unused_result)) store_status store_begin(store_conn *c);
__attribute__((warn_unused_result)) store_status store_commit(store_conn *c);
void store_rollback(store_conn *c);

/* Calls */
__attribute__((warn_unused_result))
store_status store_call_insert(store_conn *c, store_call *call);   /* sets call->id */
__attribute__((warn_unused_result))
store_status store_call_get(store_conn *c, const char *account_sid, const char *sid, store_call *out);
/* By SID alone, for internal use (the engine); REST uses store_call_get. */
__attribute__((warn_unused_result))
store_status store_call_get_by_sid(store_conn *c, const char *sid, store_call *out);
__attribute__((warn_unused_result))
store_status store_call_get_by_token(store_conn *c, const char *token, store_call *out);
/* Writes every mutable column of call (status, times, duration, answered_by,
 * kaphila_id, cb_seq, params, date_updated). */
__attribute__((warn_unused_result))
store_status store_call_update(store_conn *c, const store_call *call);
__attribute__((warn_unused_result))
store_status store_call_delete(store_conn *c, const char *account_sid, const char *sid);
/* Keyset page: rows with id < before_id (0 = from the newest), newest first,
 * at most limit rows. When offset > 0 it is applied instead of before_id
 * (clients that ask for Page=N without a token). Returns the number of rows
 * written to out (caller frees each with store_call_fini). */
__attribute__((warn_unused_result))
store_status store_call_list(store_conn *c, const store_call_filter *f, int64_t before_id,
                             int64_t offset, int limit, store_call *out, int *n_out);
/* id of a call (for page tokens). */
__attribute__((warn_unused_result))
store_status store_call_id(store_conn *c, const char *account_sid, const char *sid, int64_t *id);
/* Calls not yet in a terminal state (for recovery at start-up). Calls cb for each. */
__attribute__((warn_unused_result))
store_status store_call_each_live(store_conn *c, void (*cb)(store_call *call, void *arg), void *arg);

/* Executor checkpoints (call_checkpoints; engine thread): a live call's
 * position in its TwiML, written in the engine's write batch. doc NULL
 * keeps the stored document (only the state changed). get: *doc and
 * *state are malloc'd, STORE_NOTFOUND when the call has none. */
__attribute__((warn_unused_result))
store_status store_call_ckpt_put(store_conn *c, const char *call_sid, int64_t seq,
                                 const char *doc, const char *state, int64_t now_ms);
__attribute__((warn_unused_result))
store_status store_call_ckpt_get(store_conn *c, const char *call_sid, char **doc, char **state);
__attribute__((warn_unused_result))
store_status store_call_ckpt_delete(store_conn *c, const char *call_sid);

/* Raw Kaphila events. A posted event is applied in the engine's write
 * batch and acknowledged after its commit, so its effects are its record;
 * raw rows are kept for events twigate does not act on (done = true, for
 * the record) and for events whose batch was lost (done = false: replayed
 * at the next start). */
__attribute__((warn_unused_result))
store_status store_kevent_insert(store_conn *c, const char *call_sid, const char *body,
                                 size_t len, bool done, int64_t *id);
__attribute__((warn_unused_result))
store_status store_kevent_done(store_conn *c, int64_t id);
/* Unprocessed events in arrival order (start-up recovery). */
__attribute__((warn_unused_result))
store_status store_kevent_each_pending(store_conn *c,
        void (*cb)(int64_t id, const char *call_sid, const char *body, void *arg), void *arg);

/* Webhook outbox: a delivery owed to a customer (status callback, AMD
 * callback, recording callback). Written in the transaction that causes it. */
typedef struct store_outbox {
    int64_t id;
    char    call_sid[SID_SIZE];
    char    account_sid[SID_SIZE];
    char    kind[16];          /* status | amd | recording */
    int     seq;               /* per call order */
    char   *url;               /* as configured, fragment included */
    char   *method;            /* GET | POST */
    char   *params;            /* form-encoded */
    char    idem[TOKEN_SIZE];  /* I-Twilio-Idempotency-Token, same on every retry */
    int64_t created;
} store_outbox;
void store_outbox_fini(store_outbox *o);
__attribute__((warn_unused_result))
store_status store_outbox_insert(store_conn *c, store_outbox *o);       /* sets id (in a
                                                    transaction on PostgreSQL: by its commit) */
/* state: "done" or "failed". */
__attribute__((warn_unused_result))
store_status store_outbox_finish(store_conn *c, int64_t id, const char *state, int attempts);
__attribute__((warn_unused_result))
store_status store_outbox_each_pending(store_conn *c,
        void (*cb)(store_outbox *o, void *arg), void *arg);
/* Depth and age of the oldest pending row (metrics). */
__attribute__((warn_unused_result))
store_status store_outbox_stats(store_conn *c, int64_t *pending, int64_t *oldest_ms);

/* The call's live event log (Twilio's Call Event resource): one row per
 * request twigate made on the call's behalf (webhooks and Kaphila commands).
 * params, when not NULL, are the request's parameters form-encoded: stored
 * as they are and read back as request.parameters (a webhook is logged
 * without building a JSON object of its ~30 parameters). */
__attribute__((warn_unused_result))
store_status store_event_insert(store_conn *c, const char *account_sid, const char *call_sid,
                                int64_t ts, json_t *request, const char *params,
                                json_t *response);
/* Page of a call's events oldest first; appends {id, request, response}
 * objects to out_arr. */
__attribute__((warn_unused_result))
store_status store_event_list(store_conn *c, const char *account_sid, const char *call_sid,
                              int64_t after_id, int64_t offset, int limit, json_t *out_arr,
                              int64_t *last_id);

/* Notifications (Twilio's debugger entries). */
typedef struct store_notification {
    char    sid[SID_SIZE];          /* NO… */
    char    account_sid[SID_SIZE];
    char    call_sid[SID_SIZE];     /* "" = none */
    int     error_code;
    int     log;                    /* 0 = ERROR, 1 = WARNING (Twilio's numbering) */
    int64_t date;
    const char *message_text;       /* form-encoded, as Twilio's */
    const char *request_method, *request_url, *request_variables;
    const char *response_body, *response_headers;
} store_notification;
__attribute__((warn_unused_result))
store_status store_notification_insert(store_conn *c, const store_notification *n);
/* Lists newest first into a JSON array of rows as objects (raw columns). */
__attribute__((warn_unused_result))
store_status store_notification_list(store_conn *c, const char *account_sid, const char *call_sid,
                                     int64_t before_id, int64_t offset, int limit,
                                     json_t *out_arr, int64_t *last_id);
__attribute__((warn_unused_result))
store_status store_notification_get(store_conn *c, const char *account_sid, const char *sid,
                                    json_t **out);

/* Kaphila-key accounts (keyauth.c; the account_keys table): binds sid to key
 * unless sid is bound already, then *same says whether the stored key is
 * key (compared in constant time). */
__attribute__((warn_unused_result))
store_status store_account_key_bind(store_conn *c, const char *sid, const char *key,
                                    int64_t now, bool *same);
/* Every binding, oldest first, at most max; cb returning false (out of
 * memory) stops the walk with STORE_ERROR. */
__attribute__((warn_unused_result))
store_status store_account_key_each(store_conn *c, int max,
        bool (*cb)(const char *sid, const char *key, int64_t created, void *arg), void *arg);

#endif
