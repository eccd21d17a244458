/* engine_int.h — the engine's private interface between the call state
 * machine (engine.c) and the TwiML executor (exec.c). Everything here runs
 * on the engine's loop thread only.
 *
 * A `call` lives while its Twilio status is not terminal, plus as long as
 * any asynchronous operation still holds a reference (call_ref/call_unref):
 * every Kaphila request, webhook or timer callback that receives a call
 * pointer owns one reference and must check call_is_over() first. */
#ifndef TWIGATE_ENGINE_INT_H
#define TWIGATE_ENGINE_INT_H

#include <stdbool.h>
#include <jansson.h>
#include "conf/config.h"
#include "engine/engine.h"
#include "base/form.h"
#include "net/kaphila.h"
#include "net/loop.h"
#include "store/store.h"
#include "net/webhook.h"

typedef struct call call;
typedef struct exec exec;   /* the executor's per-call state (exec.c) */

struct call {
    engine     *e;
    store_call  row;          /* authoritative copy; persisted by the engine */
    int         refs;
    int         rank;         /* progress: see engine.c (never moves backwards) */
    bool        over;         /* terminal status reached */
    bool        hangup_sent;  /* /hangup requested once */
    bool        cancel_requested;
    bool        pending_fail;     /* recovery: dialled state unknown */
    bool        pending_hangup;   /* recovery: answered, program lost */
    bool        ckpt_dirty;       /* in the engine's list of checkpoints to write */
    char       *resume_doc;       /* recovery: the checkpoint to resume from, once */
    char       *resume_state;     /*   Kaphila confirms the call (reconcile.c) */
    engine_reply create_req;  /* REST create waiting for /makecall (ops NULL = none) */
    exec       *x;            /* NULL until the executor starts */
    loop_timer *time_limit;   /* TimeLimit timer */
    int         redirects;    /* TwiML documents fetched (cap: limits.max_redirects) */
    /* The reconciler's (reconcile.c) view of the call. */
    int64_t     last_event_ms;    /* loop clock of the last Kaphila event; 0 = none since start */
    int64_t     lost_since_ms;    /* loop clock when /makecall's answer was lost; 0 = not lost */
    bool        checking;         /* a GET /calls/:callId is in flight */
    bool        hangup_wanted;    /* a /hangup failed for good: the sweep retries it */
    int         hangup_tries;     /* failed /hangup attempts so far */
    loop_timer *hangup_retry;     /* the backoff timer (holds a reference) */
    /* The key's budget and Twilio's call queue (budget_int.h, engine_dialq.c). */
    struct bkey *bk;          /* the Kaphila key's budget; NULL = unbudgeted */
    call       *dq_next, *dq_prev;   /* the key's dial queue, creation order */
    int64_t     dq_seq;       /* queue order, also the row's "dq" mark; 0 = not queued */
    int64_t     dq_since_ms;  /* wall ms the call entered the queue (queue_time) */
    unsigned char dq;         /* DQ_* in engine_dialq.c */
    bool        bud_live;     /* counted in bk->live until its /hangup goes */
    bool        bud_reserved; /* holds a slot from budget_take_new */
    call       *hnext;        /* hash chain by CallSid */
    call       *tnext;        /* hash chain by token (Kaphila's events find calls by it) */
};

/* ---- the call's row, read-only: the engine alone writes it (engine.c) ---- */
const char *call_row_sid(const call *c);
const char *call_row_account_sid(const call *c);
const char *call_row_kaphila_id(const call *c);   /* "" until Kaphila named the call */
const char *call_row_status(const call *c);
int64_t     call_row_answered_at(const call *c);  /* ms since the epoch, 0 = not answered */
/* One of the create/update parameters (params.c names): borrowed, NULL = absent. */
json_t     *call_row_param(const call *c, const char *key);
json_t     *call_row_params(const call *c);   /* all of them, borrowed: read, never change */

/* ---- services of the engine for the executor ---- */
loop                 *call_loop(call *c);
const config         *call_config(call *c);
const config_account *call_account(call *c);     /* NULL if removed by a reload */
void call_ref(call *c);
void call_unref(call *c);
bool call_is_over(const call *c);

/* A Kaphila command for this call (body stolen; "callId" is added). cb may
 * be NULL; when set it runs once, and the call holds a reference until
 * then. Failures (including 429, and requests that could not even start)
 * are logged in the call's event log and returned to cb; a failure with no
 * cb ends the call with a notification. Returns -1 only when nothing was
 * attempted (no account any more, out of memory): then cb does not run. */
int call_kaphila(call *c, const char *path, json_t *body, kaphila_cb cb, void *arg);

/* Fills f with the standard voice request parameters of contract §8.1 for
 * this call (CallSid, AccountSid, From, To, Called, Caller, CallStatus,
 * ApiVersion, Direction, the geo fields as empty strings, AnsweredBy when
 * AMD ran …). */
void call_voice_params(call *c, form *f);

/* A signed request to a customer URL on the call's behalf; the call's event
 * log gets the request/response, and a failure gets a notification with the
 * webhook's error code (11200, 11205 …). cb runs once with the call held.
 * The pairs of params are moved into the request, not copied (params may be
 * left empty; form_fini on it stays the caller's job). */
int call_webhook(call *c, const char *url, const char *method, form *params,
                 bool twiml_fetch, webhook_cb cb, void *arg);

/* Ends the call on Kaphila (idempotent). The terminal status arrives with
 * Kaphila's call.ended event. */
void call_hangup(call *c, const char *why);

/* A notification (Twilio debugger entry) for this call plus an event-log
 * line. level: 0 ERROR, 1 WARNING. */
void call_notify(call *c, int code, int level, const char *message, const char *url,
                 const char *method);

/* An event-log line for something twigate decided on its own (not an HTTP
 * exchange): request {method:"TWIGATE", url:what, parameters:detail}. */
void call_log(call *c, const char *what, json_t *detail /* stolen, may be NULL */);

/* Public URL of twigate (for RecordingUrl values). */
const char *call_public_url(call *c);

/* <Play> URL → Kaphila sound name settings (config play.sound_map and
 * play.sound_prefix; see docs/twiml.md). Never NULL. */
const char *call_sound_map(call *c);
const char *call_sound_prefix(call *c);

/* Milliseconds since the call was answered (0 before). Recording windows
 * of <Record> are expressed on this clock. */
int64_t call_answered_ms(call *c);

/* ---- engine-level services (no live call needed) ---- */
engine       *call_engine(call *c);
store_conn   *engine_db(engine *e);              /* the engine thread's connection */
/* Whether other instances share the database (PostgreSQL): then a live
 * call may be another instance's, not in this one's memory. */
bool          engine_db_shared(engine *e);
loop         *engine_loop(engine *e);
/* The engine's background thread (net/bio.h): recordings' file work, and
 * the reconciler's parse of a GET /calls listing. */
struct bio   *engine_bio(engine *e);
const config *engine_config(engine *e);
const char   *engine_public_url(engine *e);
const char   *engine_kaphila_url(engine *e);
/* Adds a delivery to the outbox inside the engine's open write batch
 * (opening one when none is): the row becomes durable with that batch's
 * group commit and is started after it, ordered after the call's earlier
 * deliveries. kind: "status", "amd", "recording". Must not be called while
 * the caller holds a store transaction of its own on engine_db (the batch
 * could not open, and the delivery would be lost). */
void engine_enqueue_callback(engine *e, const char *account_sid, const char *call_sid,
                             const char *kind, const char *url, const char *method,
                             const form *params);
/* A Kaphila request with an account's key, not tied to a live call. */
int engine_kaphila(engine *e, const char *account_sid, const char *method, const char *path,
                   json_t *body, kaphila_cb cb, void *arg);
/* kaphila_get_raw with an account's key: the answer is left unparsed for
 * the caller to parse off the engine thread (the reconciler's GET /calls). */
int engine_kaphila_get_raw(engine *e, const char *account_sid, const char *path, kaphila_cb cb,
                           void *arg);
/* A notification not tied to a live call (call_sid may be NULL). */
void engine_notify(engine *e, const char *account_sid, const char *call_sid, int code,
                   int level, const char *message, const char *url);

/* ---- the reconciler (reconcile.c) and the engine's services for it ---- */
typedef struct reconciler reconciler;
/* The engine's one reconciler (NULL before reconcile_start); the engine
 * frees it with reconcile_destroy after its loop, whose cancelled
 * transfers still call back into it. */
reconciler **engine_reconciler_slot(engine *e);
bool engine_is_stopping(engine *e);
metrics *engine_metrics(engine *e);
void reconcile_destroy(reconciler *r);
/* After start-up recovery: every live call is checked with Kaphila at once,
 * then the sweep runs every kaphila.reconcile_interval_ms. */
void reconcile_start(engine *e);
/* Checks at once the calls that carry last_event_ms = 0 (adopted ones,
 * engine_cluster.c), as the first sweep does after a start. */
void reconcile_check_now(engine *e);
/* A /hangup for c failed (not a 404): retry with backoff, then reconcile. */
void reconcile_hangup_failed(call *c);
/* Frees what the reconciler keeps for c (engine_destroy, retire). */
void reconcile_forget(call *c);
/* An event for a token whose call has ended (row: the ended call): if the
 * event shows the Kaphila call alive, hang it up with the account's key. */
void reconcile_stray_event(engine *e, const char *account_sid, const char *call_sid, json_t *ev);

/* After a lost write batch: re-sync memory and the store once writes work
 * (no-op otherwise; see engine.c). */
void engine_resync(engine *e);
/* Every live call, in no particular order. fn must not retire calls. */
void engine_each_live(engine *e, void (*fn)(call *c, void *arg), void *arg);
/* Ends c because Kaphila no longer has it or reports it ended (kstatus:
 * Kaphila's status, NULL when it has no such call; kduration: seconds
 * Kaphila reported, -1 unknown): the Twilio terminal status, Duration,
 * the completed callback, a 20500 warning and an event-log line. */
void call_end_reconciled(call *c, const char *kstatus, int kduration, const char *why);
/* Kaphila says c is up and c has a checkpoint from before a restart: its
 * TwiML goes on (the TimeLimit re-armed from the answer time). */
void call_resume(call *c);
/* Kaphila reports c answered but its call.answered never arrived: apply
 * it as if it had. */
void call_answered_reconciled(call *c);
/* /makecall's answer for c was lost and an event has now named its callId:
 * its first events were missed, so hang it up and mark it failed. */
void call_adopt_lost(call *c);
/* /makecall's answer for c was lost and nothing came for it: the call is
 * failed (notification 20503, callbacks); its create was answered 201. */
void call_drop_lost(call *c);

/* ---- recordings (recordings.c), called by the engine after commits ---- */
/* The call was answered: with Record=true the call's recording starts
 * (a Recording resource, source OutboundAPI, status in-progress). */
void rec_call_answered(call *c);
/* The completed status callback of a Record=true call: adds RecordingUrl,
 * RecordingSid and RecordingDuration (duration_s: the call's, used while
 * Kaphila has not reported the recording's own) when the call's OutboundAPI
 * recording exists and is not absent or deleted, as Twilio sends them.
 * Inside the engine's transaction. False only when f could not grow. */
bool rec_status_params(call *c, form *f, int duration_s);
/* Kaphila's recording.* events, and call.ended (whose "recording" object
 * names the file), whether or not the call is still live. */
void rec_kaphila_event(engine *e, const char *account_sid, const char *call_sid,
                       const char *name, json_t *ev);
/* A <Record> window of the call's bridge recording ended: persist a
 * Recording resource (source RecordVerb, sid re_sid), and send the
 * recordingStatusCallback the verb asked for. start/end are
 * call_answered_ms() values. */
void call_record_window(call *c, const char *re_sid, int64_t start_ms, int64_t end_ms,
                        const char *rsc_url, const char *rsc_method, int rsc_events);

/* ---- the executor (exec.c), called by the engine ---- */
/* The call was answered: fetch the Url (or run the inline Twiml) and go. */
void exec_start(call *c);
/* A Kaphila event for an answered call: dtmf.received, gather.*, tts.played,
 * recording.*. ev is borrowed. */
void exec_event(call *c, const char *name, json_t *ev);
/* REST update with Url (+method) or Twiml on a live call: abandon the
 * current verb and run the new document. */
void exec_replace(call *c, const char *url, const char *method, const char *twiml);
/* The call ended (far-end hang-up, Kaphila failure, time limit): stop
 * everything, send what Twilio sends on hang-up (e.g. a <Record> action
 * with Digits=hangup), release resources. Called once. */
void exec_call_ended(call *c);
/* Frees c->x (the engine calls it when the call is freed). */
void exec_free(call *c);
/* Checkpoints (exec_ckpt.c). The executor marks a call whose position
 * moved; the engine writes its checkpoint in the open batch just before the
 * commit (false: the write failed, the batch is lost). */
void call_ckpt_mark(call *c);
bool exec_ckpt_write(call *c, store_conn *db);
/* Start-up: an answered call with a checkpoint (doc, state as stored) goes
 * on from it, once Kaphila has said the call is still up. */
void exec_resume(call *c, const char *doc, const char *state);

#endif
