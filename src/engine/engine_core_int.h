/* engine_core_int.h — what the engine core's files share (engine.c,
 * engine_outbox.c, engine_events.c, engine_services.c): the engine struct,
 * its messages, acks and outbox queues, and the functions one file calls in
 * another. Engine thread only, like everything in them. The executor and
 * the other engine modules use engine_int.h instead.
 *
 * Files:
 *   engine.c          the call table, transactions (group commit, acks),
 *                     message dispatch, start-up recovery, start/stop;
 *   engine_outbox.c   status and AMD callbacks, the per-call outbox queues,
 *                     the event log and notifications;
 *   engine_events.c   Kaphila events → the Twilio status ladder, and the
 *                     REST messages: originate, update;
 *   engine_services.c services for the executor and the reconciler
 *                     (engine_int.h), resync;
 *   engine_dialq.c    Twilio's call queue on each Kaphila key's budget
 *                     (budget.c; both declared in budget_int.h);
 *   engine_cluster.c  instances sharing one database: the lease, adoption
 *                     of calls whose owner is gone, the inbox. */
#ifndef TWIGATE_ENGINE_CORE_INT_H
#define TWIGATE_ENGINE_CORE_INT_H

#include "engine_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "store/calljson.h"
#include "base/errors.h"
#include "net/kevent.h"
#include "store/cluster.h"
#include "net/bio.h"
#include "net/netpolicy.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/phone.h"
#include "engine/recordings.h"
#include "base/sid.h"
#include "base/timefmt.h"
#include "sim/sim.h"

enum { RANK_QUEUED, RANK_INITIATED, RANK_RINGING, RANK_ANSWERED, RANK_OVER };
enum { CB_INITIATED = 1, CB_RINGING = 2, CB_ANSWERED = 4, CB_COMPLETED = 8 };

/* Hash buckets for live calls and outbox queues (power of two). Chains stay
 * short up to limits.max_live_calls (20,000 by default). */
#define ENGINE_BUCKETS 16384
/* Outbox rows a call can have queued; a call produces at most a dozen. */
#define ENGINE_MAX_OUTBOX_PER_CALL 256

typedef enum { M_ORIGINATE, M_UPDATE, M_DELETE, M_KEVENT, M_RECOVER, M_CALLBACK } mkind;

typedef struct emsg {
    mkind      k;
    engine_reply r;           /* ops NULL: nothing to answer (start-up replay) */
    store_call call;          /* M_ORIGINATE */
    json_t    *j;             /* update or event */
    int64_t    kid;           /* kevent id (a stored event replayed at start-up), 0 = posted,
                                 < 0: the inbox row -kid (engine_cluster.c) */
    char       token[TOKEN_SIZE];   /* M_KEVENT posted by Kaphila */
    char       sid[SID_SIZE];
    char       account_sid[SID_SIZE];
    void     (*fn)(engine *e, void *arg);   /* M_CALLBACK */
    void      *arg;
} emsg;

typedef struct ob_item {
    store_outbox    o;
    form            params;   /* o.params as pairs, when queued in this run (n = 0:
                                 recovered from the store, parsed when sent) */
    struct ob_item *next;
} ob_item;

/* A reply that waits for the open batch to commit: a Kaphila event applied
 * in it (json NULL: 200, or its rescue), or a REST reply showing state
 * written in it. */
typedef struct ack {
    engine_reply r;
    char     *json;     /* REST body (owned), NULL for a Kaphila event */
    int       status;   /* REST status */
    char      call_sid[SID_SIZE];
} ack;

typedef struct obq {
    char        call_sid[SID_SIZE];
    ob_item    *head, *tail;
    int         n;
    bool        busy;
    struct obq *hnext;
} obq;

struct engine {
    app           *a;
    loop          *l;
    bio           *bio;                       /* file work off this thread (recordings) */
    store_conn    *db;
    kaphila_client kc;
    call          *calls[ENGINE_BUCKETS];
    call          *by_token[ENGINE_BUCKETS];
    obq           *queues[ENGINE_BUCKETS];
    ob_item       *kick_head, *kick_tail;     /* committed in this step, to deliver */
    ack           *acks;                      /* answered when the batch commits */
    size_t         n_acks, cap_acks;
    call         **origs;                     /* created in the batch: /makecall after it commits */
    size_t         n_origs, cap_origs;
    call         **ckpts;                     /* checkpoints to write before the commit (refs) */
    size_t         n_ckpts, cap_ckpts;
    atomic_size_t  live;
    atomic_int     inflight_deliveries;
    atomic_bool    kaphila_ok;     /* last /health probe answered 2xx */
    /* Shared database only (engine_cluster.c writes; its command hold and
     * /readyz read, through engine_lease_ok): the monotonic µs until which
     * this instance's lease is trusted. */
    atomic_bool    leased;
    atomic_llong   lease_trusted_until_us;
    bool           probing;
    bool           started;
    bool           recovered;      /* start-up recovery has run (on_msg, first message) */
    bool           stopping;       /* engine_destroy: start nothing new */
    bool           batch;          /* a write transaction is open (see txn_begin) */
    const kevent  *ending;         /* the call.ended being applied, for finish_call's log line */
    netpolicy     *policy;         /* customer destinations; see engine_policy */
    const config  *policy_cfg;     /* the config policy was last checked against */
    reconciler    *rc;             /* reconcile.c's state */
    bool           resync;         /* a batch was lost: memory is ahead of the store */
    struct budget *bud;            /* per-key budgets and dial queues (budget_int.h) */
    struct eng_cluster *cl;        /* engine_cluster.c; NULL unless the database is shared */
};

/* /readyz reports Kaphila's reachability from this probe, so the endpoint
 * itself never waits on the network; a few seconds of staleness is fine. */
#define ENGINE_HEALTH_PROBE_MS 2000

/* Hot helpers, inline (they were static in the one engine.c). */
static inline size_t eng_bucket(const char *sid)
{
    size_t h = 2166136261u;
    for (; *sid; sid++) h = (h ^ (unsigned char)*sid) * 16777619u;
    return h & (ENGINE_BUCKETS - 1);
}

static inline const char *eng_param_str(const call *c, const char *key)
{
    return json_string_value(json_object_get(c->row.params, key));
}

static inline int eng_cb_done(const call *c)
{
    return (int)json_integer_value(json_object_get(c->row.params, "cb_done"));
}

/* ---- shared between the core files (defined in the file named) ---- */
/* engine.c */
extern const char eng_kev_unavailable[];   /* Kaphila's 503 body */
bool eng_ack_add(engine *e, engine_reply r, const char *call_sid, int status, char *json);
void eng_batch_failed(engine *e);
bool eng_batch_flush(engine *e);
bool eng_txn_begin(engine *e);
bool eng_txn_commit(engine *e, call *c, int64_t kid);
call *call_find(engine *e, const char *sid);
call *call_find_token(engine *e, const char *token);
call *call_new(engine *e, store_call *row);
void call_unlink(engine *e, call *c);
/* engine_outbox.c */
void eng_amd_callback(engine *e, call *c);
void eng_log_exchange(engine *e, const char *account_sid, const char *call_sid,
                      const char *method, const char *url, const form *params,
                      const webhook_result *res);
void eng_notify(engine *e, const char *account_sid, const char *call_sid, int code, int level,
                const char *message, const char *url, const char *method, const char *vars,
                const webhook_result *res);
/* params: its pairs move into the queued item (params is left empty) once
 * the row is written, so the delivery signs them without parsing the row
 * back; the caller still finis it. */
void eng_outbox_add(engine *e, call *c, const char *kind, const char *url, const char *method,
                    form *params);
void eng_ob_item_free(ob_item *it);
void eng_outbox_enqueue(engine *e, ob_item *it);
void eng_status_callback(engine *e, call *c, const char *event, int bit);
void eng_deliver_kicked(engine *e);
netpolicy *engine_policy(engine *e);
/* engine_events.c */
void eng_apply_event(engine *e, call *c, json_t *ev, int64_t kid, const buf *raw);
void eng_finish_call(engine *e, call *c, const char *status, int duration);
void eng_handle_kevent(engine *e, emsg *m);
void eng_handle_kevent_post(engine *e, emsg *m);
void eng_handle_originate(engine *e, emsg *m);
void eng_handle_update(engine *e, emsg *m);
void eng_kev_reply(engine_reply r, int status, const char *body);
void eng_reply_call(engine_reply r, int status, const call *c);
void eng_retire(engine *e, call *c);
void eng_start_time_limit(engine *e, call *c);
void eng_origs_start(engine *e);
void eng_origs_fail(engine *e);
/* Adds c to the calls dialled after the open batch commits (a reference). */
bool eng_origs_add(engine *e, call *c);
/* engine_services.c */
void eng_time_limit_fired(loop *l, void *arg);
/* engine.c: start-up recovery, which adoption (engine_cluster.c) repeats
 * for the calls it takes: load a live call (arg = the engine), replay a
 * stored event, queue a pending delivery, then settle each loaded call. */
void eng_recover_call(store_call *row, void *arg);
void eng_recover_kevent(int64_t id, const char *call_sid, const char *body, void *arg);
void eng_recover_outbox(store_outbox *o, void *arg);
void eng_settle_recovered(engine *e, call *c);
/* engine_cluster.c (nothing happens unless the database is shared) */
void eng_cluster_start(engine *e);
/* The engine stops: held Kaphila commands' callbacks run now, failed. */
void eng_cluster_abort(engine *e);
void eng_cluster_destroy(engine *e);
/* Every Kaphila request goes out through here: sent now, or, for a command
 * (not a GET) while this instance's lease is not known to be good, held
 * until the next renewal (engine_cluster.c). As kaphila_call. */
int eng_kaphila_send(engine *e, const char *api_key, const char *method, const char *path,
                     json_t *body, kaphila_cb cb, void *arg);
/* A posted Kaphila event or a REST update for a live call that is not in
 * this instance's memory, so another instance's: stored in the inbox for
 * its owner, in the open batch (the caller answers after the commit).
 * 1 stored; -1 not stored (the batch was rolled back, its acks answered);
 * 0 the database is not shared (nothing done). */
int eng_cluster_forward(engine *e, const char *call_sid, const char *kind, const char *body,
                        size_t len);


#endif
