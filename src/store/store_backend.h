/* store_backend.h — the storage vtable, private to src/store/ (docs/scale-out.md
 * §1): one entry per operation of store.h and recstore.h, plus open/close,
 * the connection pool and transactions. store.c is the dispatcher: it picks
 * a backend by db.url (empty: SQLite at db.path, src/store/sqlite/) and keeps
 * what does not depend on one — the call cache's write protocol, the change
 * signal and the fault/contention counters, in the structures below that
 * every backend embeds first in its own (struct sq_store, struct sq_conn).
 *
 * Threads and ownership are store.h's: a store_conn is used by one thread at
 * a time; struct store's counters are atomics a backend bumps through
 * store_count_busy/store_count_fault from any thread. An entry has its
 * store.h function's contract exactly, minus what store.c does around it:
 * call writes (call_insert/update/delete) never touch the call cache, and
 * begin/commit/rollback never clear write_failing nor bump the change
 * signal. Nothing outside src/store/ includes this file. */
#ifndef TWIGATE_STORE_BACKEND_H
#define TWIGATE_STORE_BACKEND_H

#include <stdatomic.h>

#include "store/cluster.h"
#include "store/recstore.h"
#include "store/store.h"

typedef struct store_backend store_backend;

/* The part of a store every backend has; first member of the backend's own. */
struct store {
    const store_backend *be;
    atomic_uint_fast64_t busy;                      /* store_busy_count */
    /* Storage faults (store_faults): writes refused by the disk (or the
     * server), by kind, and whether the last one is still unresolved (no
     * commit has succeeded since); the integrity check at open. */
    atomic_uint_fast64_t faults[STORE_FAULT_KINDS];
    atomic_bool     write_failing;
    atomic_bool     integrity_failed;
    callcache      *callcache;   /* told of every call row write; may be NULL */
    atomic_uint_fast64_t call_changes;   /* store_call_changes */
    store_change_hook *change_hook;      /* set before the writers run */
    void           *change_arg;
    /* store/cluster.h: this instance's name, set once by store_instance_join
     * before other threads use the store; "" = not joined (SQLite, tools). */
    char            instance[STORE_INSTANCE_LEN];
};

/* The part of a connection every backend has; first member of its own. */
struct store_conn {
    store               *owner;
    const store_backend *be;       /* owner->be, one load less per call */
    callcache_writes     cc_writes;     /* call rows written in the open transaction */
    bool                 calls_written; /* ditto, for the change signal */
};

struct store_backend {
    const char *name;                                  /* "sqlite", "postgresql" */
    /* path: the SQLite file (":memory:" allowed); url: the server's. The
     * backend allocates its store (calloc: the common part zeroed), brings
     * the schema to the newest version and sets nothing else of the
     * common part but integrity_failed. */
    store *(*open)(const char *url, const char *path, char *err, size_t errlen);
    void (*close)(store *s);                           /* s not NULL */
    store_conn *(*conn_acquire)(store *s);             /* sets owner; NULL on failure */
    void (*conn_release)(store_conn *c);               /* c not NULL */
    bool (*in_txn)(store_conn *c);                     /* a transaction is open */
    store_status (*check_writable)(store_conn *c);
    store_status (*begin)(store_conn *c);              /* CONFLICT when in one already */
    store_status (*commit)(store_conn *c);
    void (*rollback)(store_conn *c);                   /* no-op outside a transaction */
    store_status (*write_probe)(store_conn *c);
    void (*checkpoint_stats)(const store *s, store_ckpt_stats *out);

    store_status (*call_insert)(store_conn *c, store_call *call);
    store_status (*call_get)(store_conn *c, const char *account_sid, const char *sid,
                             store_call *out);
    store_status (*call_get_by_sid)(store_conn *c, const char *sid, store_call *out);
    store_status (*call_get_by_token)(store_conn *c, const char *token, store_call *out);
    store_status (*call_update)(store_conn *c, const store_call *call);
    store_status (*call_delete)(store_conn *c, const char *account_sid, const char *sid);
    store_status (*call_list)(store_conn *c, const store_call_filter *f, int64_t before_id,
                              int64_t offset, int limit, store_call *out, int *n_out);
    store_status (*call_id)(store_conn *c, const char *account_sid, const char *sid,
                            int64_t *id);
    store_status (*call_each_live)(store_conn *c, void (*cb)(store_call *call, void *arg),
                                   void *arg);
    store_status (*ckpt_put)(store_conn *c, const char *call_sid, int64_t seq,
                             const char *doc, const char *state, int64_t now_ms);
    store_status (*ckpt_get)(store_conn *c, const char *call_sid, char **doc, char **state);
    store_status (*ckpt_delete)(store_conn *c, const char *call_sid);

    store_status (*kevent_insert)(store_conn *c, const char *call_sid, const char *body,
                                  size_t len, bool done, int64_t *id);
    store_status (*kevent_done)(store_conn *c, int64_t id);
    store_status (*kevent_each_pending)(store_conn *c,
        void (*cb)(int64_t id, const char *call_sid, const char *body, void *arg), void *arg);
    store_status (*outbox_insert)(store_conn *c, store_outbox *o);
    store_status (*outbox_finish)(store_conn *c, int64_t id, const char *state, int attempts);
    store_status (*outbox_each_pending)(store_conn *c,
        void (*cb)(store_outbox *o, void *arg), void *arg);
    store_status (*outbox_stats)(store_conn *c, int64_t *pending, int64_t *oldest_ms);
    store_status (*event_insert)(store_conn *c, const char *account_sid, const char *call_sid,
                                 int64_t ts, json_t *request, const char *params,
                                 json_t *response);
    store_status (*event_list)(store_conn *c, const char *account_sid, const char *call_sid,
                               int64_t after_id, int64_t offset, int limit, json_t *out_arr,
                               int64_t *last_id);
    store_status (*notification_insert)(store_conn *c, const store_notification *n);
    store_status (*notification_list)(store_conn *c, const char *account_sid,
                                      const char *call_sid, int64_t before_id, int64_t offset,
                                      int limit, json_t *out_arr, int64_t *last_id);
    store_status (*notification_get)(store_conn *c, const char *account_sid, const char *sid,
                                     json_t **out);
    store_status (*account_key_bind)(store_conn *c, const char *sid, const char *key,
                                     int64_t now, bool *same);
    store_status (*account_key_each)(store_conn *c, int max,
        bool (*cb)(const char *sid, const char *key, int64_t created, void *arg), void *arg);

    store_status (*rec_insert)(store_conn *c, rec_row *r);
    store_status (*rec_get)(store_conn *c, const char *account_sid, const char *sid,
                            rec_row *out);
    store_status (*rec_get_id)(store_conn *c, int64_t id, rec_row *out);
    store_status (*rec_update)(store_conn *c, const rec_row *r);
    store_status (*rec_set_deleted)(store_conn *c, const char *sid, int64_t now);
    store_status (*rec_list)(store_conn *c, const rec_filter *f, int64_t before_id,
                             int64_t offset, int limit, rec_row *out, int *n_out);
    store_status (*rec_for_call)(store_conn *c, const char *call_sid, rec_row **out,
                                 int *n_out);
    store_status (*rec_pending_calls)(store_conn *c, char (*out)[SID_SIZE], int max,
                                      int *n_out);

    /* store/cluster.h. A backend that one process owns (SQLite) leaves
     * instance_join … inbox_done NULL (store_cluster.c answers for it);
     * call_live_kaphila every backend has. */
    store_status (*instance_join)(store *s, const char *id, const char *version, int lease_ms,
                                  int wait_ms, char *err, size_t errlen);
    store_status (*instance_renew)(store_conn *c, int lease_ms);
    store_status (*instance_leave)(store_conn *c);
    store_status (*adopt)(store_conn *c, int max, const store_adopt_cbs *cbs, void *arg,
                          int *n, int *fenced);
    store_status (*inbox_insert)(store_conn *c, const char *call_sid, const char *kind,
                                 const char *body, size_t len);
    store_status (*inbox_each)(store_conn *c, int max,
        void (*cb)(int64_t id, const char *call_sid, const char *kind, const char *body,
                   void *arg), void *arg);
    store_status (*inbox_done)(store_conn *c, int64_t id);
    store_status (*budget_take)(store_conn *c, const char *label, int limit, int64_t hold_ms,
                                int reserve_per_live, int live, int pending_new, int64_t *wait_ms);
    store_status (*budget_live)(store_conn *c, const char *label, int live);
    store_listener *(*listener_open)(store *s);
    int  (*listener_fd)(const store_listener *l);
    int  (*listener_drain)(store_listener *l);
    void (*listener_close)(store_listener *l);
    store_status (*call_live_kaphila)(store_conn *c, const char *kaphila_id);
};

/* The backends (src/store/sqlite/, src/store/pg/). */
extern const store_backend store_sqlite_backend;
extern const store_backend store_pg_backend;

/* A call row's params as the text both backends store: "{}" when absent
 * (no json_object() nobody would free). New string for free(); NULL on
 * out of memory. store.c. */
char *store_call_params_text(const store_call *call);

/* The event log's `parameters`: a stored form-encoded request body as a
 * JSON object (repeated keys: the last wins, as when they were logged as
 * JSON). New reference; store.c, for every backend's event list. */
json_t *store_event_params_object(const char *enc);

/* Counters a backend bumps from its status mapping (store.c): a statement
 * that met contention, and a write the storage refused (STORE_FAULT_*),
 * which also marks writes failing until the next successful commit. */
static inline void store_count_busy(store *s) { atomic_fetch_add(&s->busy, 1); }
static inline void store_count_fault(store *s, int kind)
{
    atomic_fetch_add(&s->faults[kind], 1);
    atomic_store(&s->write_failing, true);
}

#endif
