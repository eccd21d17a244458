/* console_queue.c — GET /console/api/queue, the figures behind the console's
 * "Queue & budget" panel (docs/console.md): the logged-in account's Kaphila
 * key's budget, as the engine last published it (engine_budget_snapshot,
 * matched by the key's non-secret label: never the key itself), and the
 * account's own queued calls, oldest first, with their wait so far.
 *
 * Runs on an HTTP thread: a copy of the snapshot (a lock held for a memcpy)
 * and an indexed read of the account's queued rows with a pooled store
 * connection; the engine is neither asked nor slowed. The store lists
 * newest first only (keyset by rowid), so the oldest calls are found by
 * walking the account's queued rows, at most CONSOLE_QUEUE_SCAN of them. */
#include "console_int.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/signature.h"
#include "base/timefmt.h"
#include "engine/engine.h"
#include "store/store.h"

#define CONSOLE_QUEUE_SHOW  100    /* calls listed: the next ones to be dialled */
#define CONSOLE_QUEUE_PAGE  500    /* rows per store read while walking */
/* Rows walked at most per request: the panel asks every 2 s, and a day of
 * queue at Twilio's 1 CPS would be 86,400 rows; past this the list says it
 * is not the whole queue. */
#define CONSOLE_QUEUE_SCAN  5000
#define CONSOLE_BUDGET_KEYS 256    /* snapshot entries read; more keys than the engine keeps */

/* The account's key's figures as JSON, or JSON null when the engine has not
 * made the key's budget yet (no Kaphila request on it since start). */
static json_t *budget_json(app *a, const char *label)
{
    engine_budget_key *snap = calloc(CONSOLE_BUDGET_KEYS, sizeof *snap);
    json_t *j = NULL;
    size_t n = snap ? engine_budget_snapshot(a->engine, snap, CONSOLE_BUDGET_KEYS) : 0;
    for (size_t i = 0; i < n && !j; i++) {
        const engine_budget_key *k = &snap[i];
        if (strcmp(k->label, label)) continue;
        j = json_pack("{s:i, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:b, s:I, s:I}",
                      "limit", k->limit, "window_ms", (json_int_t)k->window_ms,
                      "used", k->used, "left", k->left, "live", k->live,
                      "waiting_commands", k->waiting_commands, "reserved", k->reserved,
                      "queued_calls", k->queued_calls,
                      "oldest_wait_ms", (json_int_t)k->oldest_wait_ms,
                      "credits", (json_int_t)k->credits, "paused", k->paused,
                      "closed_ms", (json_int_t)k->closed_ms,
                      "received_429", (json_int_t)k->received_429);
    }
    free(snap);
    return j ? j : json_null();
}

/* The accounts of the loaded file that use key (the budget is the key's,
 * shared by all of them). A Kaphila-key account is its key's only one. */
static int key_accounts(app *a, const config_account *acct)
{
    const config *cfg = app_config(a);
    int n = 0;
    if (acct->kaphila_key_account) return 1;
    for (size_t i = 0; i < cfg->n_accounts; i++)
        if (cfg->accounts[i].kaphila_key && !strcmp(cfg->accounts[i].kaphila_key, acct->kaphila_key))
            n++;
    return n ? n : 1;
}

/* The account's queued calls, oldest first: the walk keeps the last
 * CONSOLE_QUEUE_SHOW rows it sees in a ring. */
static store_status queued_json(app *a, const char *account_sid, int64_t now, json_t *calls,
                                int *count, bool *complete)
{
    store_call *page = calloc(CONSOLE_QUEUE_PAGE, sizeof *page);
    store_call *ring = calloc(CONSOLE_QUEUE_SHOW, sizeof *ring);
    store_conn *c = NULL;
    store_call_filter f = {.account_sid = account_sid, .status = "queued"};
    store_status st = STORE_ERROR;
    int64_t before = 0;
    int seen = 0, n = 0;

    *complete = true;
    if (!page || !ring || !(c = store_conn_acquire(a->store))) goto out;
    for (;;) {
        n = 0;
        if ((st = store_call_list(c, &f, before, 0, CONSOLE_QUEUE_PAGE, page, &n)) != STORE_OK)
            goto out;
        for (int i = 0; i < n; i++) {
            ring[seen % CONSOLE_QUEUE_SHOW] = page[i];
            ring[seen % CONSOLE_QUEUE_SHOW].params = NULL;   /* NULL from a list anyway */
            seen++;
            store_call_fini(&page[i]);
        }
        if (n < CONSOLE_QUEUE_PAGE) break;
        before = page[n - 1].id;
        if (seen >= CONSOLE_QUEUE_SCAN) {
            *complete = false;
            break;
        }
    }
    int shown = seen < CONSOLE_QUEUE_SHOW ? seen : CONSOLE_QUEUE_SHOW;
    for (int i = 0; i < shown; i++) {
        const store_call *q = &ring[(seen - 1 - i) % CONSOLE_QUEUE_SHOW];
        char created[TIMEFMT_RFC2822_LEN];
        timefmt_rfc2822(q->date_created, created);
        json_array_append_new(calls, json_pack("{s:s, s:s, s:s, s:s, s:I}", "sid", q->sid,
                                               "to", q->to, "from", q->from,
                                               "date_created", created, "wait_ms",
                                               (json_int_t)(now > q->date_created ?
                                                            now - q->date_created : 0)));
    }
    *count = seen;
    st = STORE_OK;
out:
    store_conn_release(c);
    free(ring);
    free(page);
    return st;
}

void console_queue(void *ctx, http_req *r, const http_match *m)
{
    (void)m;
    app *a = ctx;
    const config_account *acct = console_auth(a, r);
    json_t *calls = NULL, *j = NULL, *key = NULL;
    char *s = NULL;
    int count = 0;
    bool complete = true;
    int64_t now = timefmt_now_ms();

    if (!acct) return;
    if (!(calls = json_array())) goto fail;
    if (queued_json(a, acct->sid, now, calls, &count, &complete) != STORE_OK) {
        json_decref(calls);
        http_reply_error(r, 20503, 503, NULL);
        return;
    }
    if (acct->kaphila_key && *acct->kaphila_key) {
        char hex[65], label[9];
        signature_body_sha256(acct->kaphila_key, strlen(acct->kaphila_key), hex);
        memcpy(label, hex, 8);
        label[8] = '\0';
        key = json_pack("{s:s, s:i, s:o}", "label", label, "accounts", key_accounts(a, acct),
                        "budget", budget_json(a, label));
    } else {
        key = json_null();
    }
    j = json_pack("{s:s, s:I, s:o, s:{s:o, s:i, s:b, s:i}}", "account_sid", acct->sid,
                  "now_ms", (json_int_t)now, "key", key, "queue", "calls", calls,
                  "count", count, "complete", complete, "shown_max", CONSOLE_QUEUE_SHOW);
    calls = NULL;   /* stolen by json_pack, also on failure */
    s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) goto fail;
    http_reply_owned(r, 200, "application/json", s, strlen(s), console_no_store);
    return;
fail:
    json_decref(calls);
    http_reply_error(r, 20500, 500, NULL);
}
