/* engine_dialq.c — Twilio's call queue on a Kaphila key's budget: a created call
 * is answered 201 `queued` at once and dialled in creation order when the
 * key's budget (budget.c), its credits and the account's cps allow.
 *
 * A call enters the queue only when it cannot be dialled at once (the
 * queue is empty and a slot is free: the fast path of an unlimited key
 * writes nothing more). A queued call's row carries the "dq" mark in its
 * params (its queue order, wall-clock based), written with the row; the
 * mark is removed in the batch that also decides to dial the call, and
 * /makecall goes out only after that batch commits (the engine's origs
 * list), so after a restart a row with the mark was never dialled and goes
 * back in the queue in order (dialq_recover), while a row without it and
 * without a Kaphila callId stays what it was: unknown, failed by recovery,
 * or a lost answer left to the reconciler.
 *
 * The queue links calls of the engine's call table (call.dq_next/dq_prev):
 * call_unlink takes a call out (dialq_remove), so a canceled queued call
 * leaves without any Kaphila request. Engine thread only. */
#include "budget_int.h"
#include "engine_core_int.h"

static int acct_cps(const config_account *a)
{
    return a && a->cps ? atoi(a->cps) : 0;
}

static void list_insert(bkey *k, call *c)
{
    call *after = k->dq_tail;
    while (after && after->dq_seq > c->dq_seq) after = after->dq_prev;
    c->dq_prev = after;
    c->dq_next = after ? after->dq_next : k->dq_head;
    if (c->dq_next) c->dq_next->dq_prev = c;
    else k->dq_tail = c;
    if (after) after->dq_next = c;
    else k->dq_head = c;
    k->dq_n++;
}

static void list_remove(bkey *k, call *c)
{
    if (c->dq_prev) c->dq_prev->dq_next = c->dq_next;
    else k->dq_head = c->dq_next;
    if (c->dq_next) c->dq_next->dq_prev = c->dq_prev;
    else k->dq_tail = c->dq_prev;
    c->dq_next = c->dq_prev = NULL;
    k->dq_n--;
}

/* Queue order: wall-clock µs, strictly increasing per key, so calls of
 * the same millisecond keep their order and the mark survives restarts. */
static int64_t next_seq(bkey *k)
{
    int64_t s = timefmt_now_ms() * 1000;
    if (k->dq_tail && s <= k->dq_tail->dq_seq) s = k->dq_tail->dq_seq + 1;
    return s;
}

/* cps: the ms until the account may dial again (0 = now). */
static int64_t cps_wait(bkey *k, const config_account *acct, int64_t now)
{
    int cps = acct_cps(acct);
    k->cps = cps;
    if (cps <= 0 || !k->last_dial_ms) return 0;
    int64_t gap = (1000 + cps - 1) / cps;
    return now - k->last_dial_ms >= gap ? 0 : gap - (now - k->last_dial_ms);
}

bool dialq_admit(engine *e, bkey *k, call *c)
{
    int64_t now = loop_now_ms(e->l);
    c->bk = k;
    if (!k) return true;   /* no budget (out of keys): dialled at once, as before */
    if (!k->dq_n && !cps_wait(k, call_account(c), now) && budget_take_new(k)) {
        c->bud_reserved = true;
        k->last_dial_ms = now;
        return true;
    }
    c->dq_seq = next_seq(k);
    c->dq_since_ms = c->row.date_created ? c->row.date_created : timefmt_now_ms();
    c->dq = DQ_UNCOMMITTED;
    json_object_set_new(c->row.params, "dq", json_integer(c->dq_seq));
    list_insert(k, c);
    return false;
}

void dialq_committed(engine *e, call *c)
{
    if (c->dq != DQ_UNCOMMITTED) return;
    c->dq = DQ_WAITING;
    dialq_kick(e, c->bk);
}

void dialq_remove(call *c)
{
    bkey *k = c->bk;
    if (!k) return;
    if (c->dq == DQ_UNCOMMITTED || c->dq == DQ_WAITING) list_remove(k, c);
    c->dq = DQ_NONE;
    if (c->bud_reserved) {
        budget_release_new(k);
        c->bud_reserved = false;
    }
    if (c->bud_live) {
        budget_live(k, -1);
        c->bud_live = false;
    }
}

static void dq_timer_fired(loop *l, void *arg)
{
    (void)l;
    bkey *k = arg;
    k->dq_timer = NULL;
    dialq_kick(k->dq_head ? k->dq_head->e : NULL, k);
}

void dialq_kick(engine *e, bkey *k)
{
    if (!e || !k || k->paused || engine_is_stopping(e)) return;
    int64_t now = loop_now_ms(e->l);
    while (k->dq_head && k->dq_head->dq == DQ_WAITING) {
        call *c = k->dq_head;
        int64_t w = cps_wait(k, call_account(c), now);
        if (w > 0) {
            if (!k->dq_timer || k->dq_timer_at > now + w) {
                if (k->dq_timer) loop_timer_cancel(e->l, k->dq_timer);
                k->dq_timer_at = now + w;
                k->dq_timer = loop_timer_add(e->l, w, dq_timer_fired, k);
            }
            break;
        }
        if (!budget_take_new(k)) break;   /* the budget's timer kicks again */
        c->bud_reserved = true;
        if (!eng_txn_begin(e) || !eng_origs_add(e, c)) {
            budget_release_new(k);
            c->bud_reserved = false;
            break;
        }
        list_remove(k, c);
        c->dq = DQ_DIALLING;
        k->last_dial_ms = now;
        json_object_del(c->row.params, "dq");
        int64_t waited = timefmt_now_ms() - c->dq_since_ms;
        c->row.queue_time = waited > 0 ? (int)(waited < INT32_MAX ? waited : INT32_MAX) : 1;
        log_context(NULL, c->row.account_sid, c->row.sid);
        log_info("engine", "call leaves the queue after %d ms", c->row.queue_time);
        (void)eng_txn_commit(e, c, 0);   /* a lost batch puts it back (dialq_unstart) */
    }
}

/* The batch that took c out of the queue was lost: it goes back, in order. */
void dialq_unstart(call *c)
{
    bkey *k = c->bk;
    if (!k || c->dq != DQ_DIALLING) return;
    if (c->bud_reserved) {
        budget_release_new(k);
        c->bud_reserved = false;
    }
    json_object_set_new(c->row.params, "dq", json_integer(c->dq_seq));
    c->row.queue_time = 0;
    c->dq = DQ_WAITING;
    list_insert(k, c);
}

/* The /makecall of c goes now: its reserved slot becomes in flight and it
 * counts toward the key's reserve until its /hangup. */
int dialq_send(engine *e, call *c, json_t *body, kaphila_cb cb, void *arg)
{
    bkey *k = c->bk;
    int cls = c->bud_reserved ? BUDGET_NEW : BUDGET_LIVE;
    c->dq = DQ_NONE;
    c->bud_reserved = false;
    if (k && !c->bud_live) {
        budget_live(k, 1);
        c->bud_live = true;
    }
    return budget_send(e, k, call_account(c), cls, "POST", "/makecall", body, cb, arg);
}

int64_t dialq_wait_estimate(const bkey *k)
{
    double rate = budget_dial_rate(k);   /* calls/s; 0 = unlimited */
    if (k->cps > 0 && (rate <= 0 || k->cps < rate)) rate = k->cps;
    if (rate <= 0) return 0;
    return (int64_t)((double)(k->dq_n + 1) / rate * 1000.0);
}

void dialq_recover(engine *e, call *c)
{
    const config_account *acct = call_account(c);
    bkey *k = e->bud ? budget_key(e->bud, acct) : NULL;
    c->bk = k;
    if (!k) return;
    c->dq_seq = json_integer_value(json_object_get(c->row.params, "dq"));
    c->dq_since_ms = c->row.date_created;
    c->dq = DQ_WAITING;
    list_insert(k, c);
}

int64_t dialq_oldest_ms(engine *e, const bkey *k)
{
    (void)e;
    if (!k->dq_head) return 0;
    int64_t w = timefmt_now_ms() - k->dq_head->dq_since_ms;
    return w > 0 ? w : 0;
}
