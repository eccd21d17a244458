/* budget_int.h — Kaphila's per-key request budget (budget.c) and Twilio's
 * call queue on top of it (engine_dialq.c). Engine thread only, like the rest of
 * the engine; engine_budget_snapshot (engine.h) is the one read from other
 * threads, through a copy kept under a mutex.
 *
 * The model (docs/kaphila.md, "The request budget"):
 *   - one bkey per distinct Kaphila API key, shared by every account using
 *     it; its limit is the accounts' kaphila_rate_limit, or Kaphila's own
 *     rateLimit from GET /api/me when that is 0 (learned before the first
 *     counted request, refreshed every kaphila.me_interval_ms);
 *   - a sliding-window log: a counted request (/makecall, /batchcall,
 *     /voice, /play, /gather, /hangup) takes a slot when sent, and the slot
 *     frees kaphila.rate_window_ms after its ANSWER arrived (after send +
 *     timeout when none came). Kaphila counts it somewhere between the two,
 *     so twigate's count is never below Kaphila's sliding count;
 *   - three classes, served in order: hang-ups, commands of live calls, new
 *     calls. A new call is dialled only while the slots left exceed the
 *     reserve: BUDGET_RESERVE_PER_LIVE slots per live call that has not
 *     sent its /hangup (that hang-up and its next command), plus the
 *     commands already waiting;
 *   - a 429 that comes anyway re-queues the request at the head of its
 *     class (never a failure, never a hang-up) and closes the key for a
 *     backoff (1 s, doubling with each consecutive 429, at most one
 *     window), or until the key's oldest slot frees when that is sooner;
 *   - a 402 on /makecall pauses the key's dial queue until GET /api/me
 *     (polled every kaphila.credits_poll_ms while paused) shows credits
 *     again.
 *
 * Ownership: the budget owns its keys; a key's queued requests own a
 * reference to their body; the dial queue links calls of the engine's call
 * table without a reference of its own (call_unlink takes a call out). */
#ifndef TWIGATE_BUDGET_INT_H
#define TWIGATE_BUDGET_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include "engine_int.h"

/* Each live call keeps this many slots in reserve: its /hangup and the next
 * command of its program. */
#define BUDGET_RESERVE_PER_LIVE 2
/* Distinct Kaphila keys with a budget (accounts.kaphila_keys can make many);
 * beyond it requests go unbudgeted, counted in twigate_budget_overflow_total. */
#define BUDGET_MAX_KEYS 4096
/* Kaphila's documented default when neither config nor /api/me told us. */
#define BUDGET_DEFAULT_LIMIT 100
/* Requests per call assumed when estimating a queue's wait (/makecall, one
 * command, /hangup): the 22005 check. */
#define BUDGET_REQS_PER_CALL 3

enum { BUDGET_HANGUP, BUDGET_LIVE, BUDGET_NEW, BUDGET_CLASSES };
/* call.dq: where a call stands in its key's dial queue. */
enum { DQ_NONE, DQ_UNCOMMITTED, DQ_WAITING, DQ_DIALLING };

typedef struct breq breq;   /* a counted request waiting or in flight */
typedef struct budget budget;

typedef struct bkey {
    char       *api_key;          /* secret: never logged */
    char        label[9];         /* first 8 hex of its SHA-256: metrics, logs */
    budget     *b;
    int         limit;            /* per window; 0 = unlimited */
    bool        limit_known;      /* from config, or /api/me answered */
    int         cfg_limit;        /* the accounts' kaphila_rate_limit (0 = learn) */
    /* the window: free times (loop ms) of used slots, oldest first */
    int64_t    *free_at;
    size_t      fa_head, fa_n, fa_cap;
    int         inflight;         /* counted requests sent, no answer yet */
    int         reserved_new;     /* slots taken for /makecalls about to be sent */
    int         live;             /* dialled calls that have not sent /hangup */
    int64_t     closed_until;     /* after a 429, or the shared log full (loop ms) */
    int64_t     shared_until_new; /* the shared log has no room for a new call before */
    int         backoff_ms;       /* the next 429's minimum close */
    breq       *qh[BUDGET_CLASSES], *qt[BUDGET_CLASSES];
    int         qn[BUDGET_CLASSES];
    loop_timer *wake;
    int64_t     wake_at;
    /* /api/me */
    bool        me_inflight;
    loop_timer *me_timer;
    long long   credits;          /* -1 = unknown */
    bool        paused;           /* a 402: the dial queue waits for credits */
    int64_t     n429;
    int64_t     published_ms;     /* loop ms of the last publish_key */
    /* the dial queue (engine_dialq.c): calls in creation order */
    call       *dq_head, *dq_tail;
    int         dq_n;
    int64_t     last_dial_ms;     /* cps pacing */
    int         cps;              /* of the account at the queue's head (0 = none) */
    loop_timer *dq_timer;
    int64_t     dq_timer_at;
    struct bkey *next;
} bkey;

/* ---- budget.c ---- */
budget *budget_create(engine *e);
/* Stops: queued requests get their callback with an aborted result (no
 * HTTP answer, CURLE_ABORTED_BY_CALLBACK), before the loop is destroyed. */
void    budget_abort(budget *b);
void    budget_destroy(budget *b);   /* accepts NULL */
/* The key's budget (made on first use; the first GET /api/me starts then).
 * NULL: out of memory or BUDGET_MAX_KEYS reached (requests go unbudgeted). */
bkey   *budget_key(budget *b, const config_account *acct);
/* A Kaphila request on k's budget (k NULL: straight through with acct's
 * key; no budget at all in an engine without one). Uncounted
 * endpoints go at once; counted ones go when the window and their class
 * allow, else wait in order. BUDGET_NEW consumes a slot taken with
 * budget_take_new. body is borrowed. 0 = the callback will run once (a 429
 * never reaches it: the request is retried); -1 = nothing attempted. */
__attribute__((warn_unused_result))
int     budget_send(engine *e, bkey *k, const config_account *acct, int cls,
                    const char *method, const char *path, json_t *body, kaphila_cb cb, void *arg);
/* Takes a slot for a new call if the key has room beyond the reserve, is
 * open and not paused. */
bool    budget_take_new(bkey *k);
void    budget_release_new(bkey *k);       /* the call was not dialled after all */
/* Slots a new call may take now (0 when none). */
int     budget_room_new(bkey *k);
/* Calls per second the key's budget allows to be dialled (0 = unlimited). */
double  budget_dial_rate(const bkey *k);
/* Reserve bookkeeping: a dialled call counts until its /hangup goes. */
void    budget_live(bkey *k, int delta);
/* A 402 on /makecall: pause the dial queue and poll /api/me. */
void    budget_pause(bkey *k);
/* GET …/Balance.json: answers r from a fresh GET /api/me. */
void    budget_balance(budget *b, engine_reply r, const char *account_sid);
/* Publishes the keys' figures (metrics and the snapshot). */
void    budget_publish(budget *b);
/* Wakes every key with dials waiting (at the loop's next turn): calls were
 * put in the queues by a recovery or an adoption, with no request of the
 * key's own to come back and dial them. Accepts NULL. */
void    budget_kick(budget *b);

/* ---- engine_dialq.c ---- */
/* A new call's row is in the open batch: dial it now (a slot taken, false
 * = queued: the row carries the "dq" mark, never dialled) */
bool    dialq_admit(engine *e, bkey *k, call *c);
/* The create's batch committed: queued calls become dialable. */
void    dialq_committed(engine *e, call *c);
/* The create's batch was lost / the call ends or is unlinked. */
void    dialq_remove(call *c);
/* Dial what the key's budget, cps and credits allow. */
void    dialq_kick(engine *e, bkey *k);
/* The batch that took c out of the queue to dial it was lost: back in. */
void    dialq_unstart(call *c);
/* Sends c's /makecall (body borrowed) on its key's budget. */
__attribute__((warn_unused_result))
int     dialq_send(engine *e, call *c, json_t *body, kaphila_cb cb, void *arg);
/* The estimated wait (ms) of a call added now to k's queue. */
int64_t dialq_wait_estimate(const bkey *k);
/* Start-up: a recovered row with the "dq" mark goes back in its queue, in
 * the order of its mark (sorted on insert). */
void    dialq_recover(engine *e, call *c);
/* Oldest wait (ms) in k's queue; 0 when empty. */
int64_t dialq_oldest_ms(engine *e, const bkey *k);

#endif
