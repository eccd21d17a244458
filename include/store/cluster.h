/* store/cluster.h — instances sharing one database (docs/scale-out.md §4, §5):
 * who owns each live call, the leases that say an owner is alive, the
 * adoption of a dead owner's calls, and the inbox that carries a Kaphila
 * event from the instance that received it to the call's owner.
 *
 * Only PostgreSQL is shared (store_shared): on SQLite one process owns the
 * file, every operation below answers STORE_OK doing nothing (adoption finds
 * nothing, the inbox is empty) and the engine never starts its cluster
 * timers. The tables exist on both backends so their schemas stay equal.
 *
 * Ownership: store_instance_join names the store's instance, once, before
 * other threads use the store. From then on the backend stamps that name as
 * the owner of each call it inserts, and the start-up reads (live calls,
 * pending Kaphila events, pending deliveries: store.h's *_each_*) return
 * this instance's rows only. Leases and due times are compared on the
 * database's clock (twigate_now_ms()), never an instance's.
 *
 * Threads: store_instance_join and store_instance_leave on the main thread;
 * the rest on the engine loop, with the engine's connection, outside its
 * write batch except store_inbox_insert and store_inbox_done, which are in
 * it. */
#ifndef TWIGATE_STORE_CLUSTER_H
#define TWIGATE_STORE_CLUSTER_H

#include "store/store.h"

/* An instance's name: [A-Za-z0-9._:-], at most this long (config.c checks
 * cluster.instance_id against it). */
#define STORE_INSTANCE_LEN 72

/* True when other instances may share the database (PostgreSQL). */
bool store_shared(const store *s);
/* The name store_instance_join gave; "" before (and always on SQLite). */
const char *store_instance(const store *s);

/* Registers the instance as up, its lease lease_ms ahead. The same name
 * still up elsewhere (its lease running) is waited for, up to wait_ms: a
 * restart under the same name (kill -9, then start) takes its calls back
 * once the old lease has run out; two live processes under one name never
 * run together. STORE_CONFLICT: still held after wait_ms (err says so). */
__attribute__((warn_unused_result))
store_status store_instance_join(store *s, const char *id, const char *version, int lease_ms,
                                 int wait_ms, char *err, size_t errlen);
/* Moves the lease lease_ms ahead. STORE_CONFLICT: another instance fenced
 * this one (its lease had run out): its calls may be run elsewhere now. */
__attribute__((warn_unused_result))
store_status store_instance_renew(store_conn *c, int lease_ms);
/* A clean exit: the lease ends now, so the others adopt the calls left at
 * once instead of after the lease. */
store_status store_instance_leave(store_conn *c);

/* Adoption, one transaction: instances whose lease ran out are fenced
 * (marked dead; *fenced counts them), then this instance takes up to max of
 * the live calls whose owner is not up (dead, gone, or none), and every
 * ended call of such an owner that still owes a delivery, has rows in the
 * inbox or recordings still to fetch or cut. After the commit, for what was taken: call for each live call
 * (params loaded, as store_call_each_live), kevent for each of their
 * pending raw events, outbox for each pending delivery. *n = calls taken. */
typedef struct store_adopt_cbs {
    void (*call)(store_call *call, void *arg);
    void (*kevent)(int64_t id, const char *call_sid, const char *body, void *arg);
    void (*outbox)(store_outbox *o, void *arg);
    /* each ended call taken (its recordings may wait for media); may be NULL */
    void (*ended)(const char *call_sid, void *arg);
} store_adopt_cbs;
__attribute__((warn_unused_result))
store_status store_adopt(store_conn *c, int max, const store_adopt_cbs *cbs, void *arg,
                         int *n, int *fenced);

/* The inbox (call_inbox): what an instance received for a live call that
 * another instance owns, written in the receiver's batch so that its answer
 * (Kaphila's 200, the REST reply) still means it is stored. kind "kevent":
 * a Kaphila event as posted; "update": a REST update of the call as JSON.
 * The owner reads its calls' rows oldest first and deletes each in the
 * batch that applies it. */
__attribute__((warn_unused_result))
store_status store_inbox_insert(store_conn *c, const char *call_sid, const char *kind,
                                const char *body, size_t len);
__attribute__((warn_unused_result))
store_status store_inbox_each(store_conn *c, int max,
        void (*cb)(int64_t id, const char *call_sid, const char *kind, const char *body,
                   void *arg), void *arg);
__attribute__((warn_unused_result))
store_status store_inbox_done(store_conn *c, int64_t id);

/* The inbox's wake-up (a hint; the owner's poll is the guarantee):
 * store_inbox_insert also notifies the call's owner when its batch commits,
 * and an instance listens on a connection of its own. The listener's fd is
 * readable when something arrived; store_listener_drain reads it and
 * answers how many notifications were for this instance, -1 when the
 * connection is lost (close it; open another later). NULL from open on
 * SQLite or when it cannot connect. Engine loop thread only. */
typedef struct store_listener store_listener;
store_listener *store_listener_open(store *s);
int  store_listener_fd(const store_listener *l);
int  store_listener_drain(store_listener *l);
void store_listener_close(store_listener *l);   /* accepts NULL */

/* The shared budget (docs/scale-out.md §7): Kaphila's sliding window of a
 * key (label: budget_int.h's, never the key) kept in the database, so that
 * instances sharing the key together stay within its limit. Takes one slot
 * until hold_ms from now (the latest the request could free it: its
 * timeout plus the window), in its own transaction, before the request is
 * sent: STORE_OK taken; STORE_CONFLICT none free (*wait_ms until one frees,
 * at least 1), where a new call (reserve_per_live > 0) also leaves
 * reserve_per_live slots for each live call of every instance up. A new
 * call's take first records the caller's own live calls on the key: live,
 * less pending_new of them (counted live while their /makecall has not
 * left yet, this one's among them: they need no reserve).
 * Separate connection from the engine's batch: the slot must be visible to
 * the others before the request leaves. */
__attribute__((warn_unused_result))
store_status store_budget_take(store_conn *c, const char *label, int limit, int64_t hold_ms,
                               int reserve_per_live, int live, int pending_new, int64_t *wait_ms);
/* This instance's live calls on the key, for the others' reserve. */
__attribute__((warn_unused_result))
store_status store_budget_live(store_conn *c, const char *label, int live);

/* Whether a live call row names this Kaphila callId, whoever owns it
 * (STORE_OK: yes, STORE_NOTFOUND: no): the reconciler judges a call Kaphila
 * lists against the database, which holds every instance's calls, rather
 * than against its own memory. Both backends. */
__attribute__((warn_unused_result))
store_status store_call_live_kaphila(store_conn *c, const char *kaphila_id);

#endif
