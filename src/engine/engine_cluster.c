/* engine_cluster.c — the engine among instances sharing one database
 * (store/cluster.h; docs/scale-out.md §4, §5). Nothing here runs unless the
 * database is shared (PostgreSQL): on SQLite the engine is alone and every
 * call is its own.
 *
 * Three timers on the engine loop, each a statement or two on the engine's
 * connection, outside its write batch:
 *   renew  (cluster.renew_ms)  moves this instance's lease ahead; finding
 *          itself fenced (another instance saw the lease run out and may be
 *          running its calls now) the process exits at once, status 3,
 *          sending nothing more: a supervisor starts it again, and the
 *          restart joins under the same name once the others are done.
 *          The lease is trusted for cluster.lease_ms - cluster.renew_ms
 *          after the start of the last renewal that succeeded (this host's
 *          monotonic clock): past that, a command for Kaphila (anything but
 *          a GET) is held, not sent (eng_kaphila_send), until a renewal
 *          succeeds (then it goes) or finds the instance fenced (then the
 *          process exits, and it never goes). So an instance that was
 *          paused, or cut off from the database, has been silent towards
 *          Kaphila for at least one renewal interval when another may adopt
 *          its calls (the lease ran out on the database's clock);
 *   adopt  (cluster.adopt_ms)  fences instances whose lease ran out and
 *          takes calls whose owner is not up, then loads each as start-up
 *          recovery does (engine.c) and has the reconciler ask Kaphila about
 *          it at once: ended there → ended here; up → resumed from its
 *          checkpoint; still ringing → waits for its events;
 *   poll   (cluster.poll_ms)   applies the inbox: the Kaphila events and REST
 *          updates other instances received for this instance's calls, each
 *          row deleted in the batch that applies it. The poll is the
 *          guarantee; the hint is a notification on a connection of its own
 *          (store_listener, its socket watched by the loop), on which the
 *          inbox is read at once.
 * And eng_cluster_forward, on the receiving side: a posted event or a REST
 * update for a live call this instance does not hold goes into the inbox in
 * the open batch, answered once it commits.
 *
 * Engine loop thread only (eng_cluster_destroy: the main thread, after the
 * loop has stopped, as engine_destroy). */
#include "engine_core_int.h"
#include "budget_int.h"

#include <time.h>
#include <unistd.h>


/* Calls taken per adoption pass: a dead instance's calls are shared among
 * the survivors pass by pass rather than all taken by the first. */
#define CLUSTER_ADOPT_BATCH 100
/* Inbox rows applied per poll; more wait for the next. */
#define CLUSTER_INBOX_BATCH 256
/* The exit status of an instance that finds itself fenced. */
#define CLUSTER_FENCED_EXIT 3

/* How often a lost notification connection is opened again (from the
 * poll): connecting blocks the loop, so not at every poll. */
#define CLUSTER_LISTEN_RETRY_MS 5000

/* A Kaphila command held while the lease is not known to be good. */
typedef struct held_cmd {
    struct held_cmd *next;
    char       *api_key, *method, *path;
    json_t     *body;
    kaphila_cb  cb;
    void       *arg;
} held_cmd;

struct eng_cluster {
    loop_timer *renew, *adopt, *poll;
    store_listener *lis;          /* the inbox's wake-up; NULL: polled only */
    int64_t     lis_retry_at;     /* loop ms of the next attempt to reopen it */
    held_cmd   *held, **held_tail;/* in the order they were to be sent */
    size_t      n_held;
};

static const config *ccfg(engine *e) { return app_config(e->a); }

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The reply of an update taken from the inbox: the instance that received
 * it has answered already, so what the handler answers is only logged. */
static void nr_bytes(void *req, int status, const char *ctype, const char *body, size_t len)
{
    (void)req; (void)ctype; (void)body; (void)len;
    if (status >= 400) log_info("cluster", "a forwarded update was refused (%d)", status);
}
static void nr_owned(void *req, int status, const char *ctype, char *body, size_t len)
{
    nr_bytes(req, status, ctype, body, len);
    free(body);
}
static void nr_json(void *req, int status, json_t *j)
{
    nr_bytes(req, status, NULL, NULL, 0);
    json_decref(j);
}
static void nr_error(void *req, int code, int status, const char *message,
                     const char *const *headers)
{
    (void)req; (void)headers;
    log_info("cluster", "a forwarded update was refused (%d, %d%s%s)", status, code,
             message ? ": " : "", message ? message : "");
}
static bool nr_file(void *req, const char *path, const char *range, const char *ctype)
{
    (void)req; (void)path; (void)range; (void)ctype;
    return false;
}
static const buf *nr_body(const void *req)
{
    (void)req;
    static const buf empty;
    return &empty;
}
static const char *nr_request_id(const void *req) { (void)req; return "inbox"; }
static void nr_suspend(void *req) { (void)req; }
static const engine_reply_ops no_reply_ops = {
    nr_bytes, nr_owned, nr_json, nr_error, nr_file, nr_body, nr_request_id, nr_suspend,
};

static void renew_tick(loop *l, void *arg);
static void adopt_tick(loop *l, void *arg);
static void poll_tick(loop *l, void *arg);

/* Work that must not join the open batch (its own transaction, or reads
 * that must see the batch's effects) runs once it is committed. */
static bool batch_closed(engine *e)
{
    return !e->batch || eng_batch_flush(e);
}

static void held_free(held_cmd *h)
{
    free(h->api_key);
    free(h->method);
    free(h->path);
    json_decref(h->body);
    free(h);
}

/* Sends (ok) or fails (!ok: the engine stops) every held command, in order. */
static void held_release(engine *e, bool ok)
{
    held_cmd *h = e->cl->held;
    size_t n = e->cl->n_held;
    e->cl->held = NULL;
    e->cl->held_tail = &e->cl->held;
    e->cl->n_held = 0;
    if (n && ok) log_info("cluster", "lease renewed: %zu held Kaphila command(s) sent", n);
    while (h) {
        held_cmd *next = h->next;
        if (!ok || kaphila_call(e->l, &e->kc, h->api_key, h->method, h->path, h->body, h->cb,
                                h->arg) != 0) {
            kaphila_result res = {.endpoint = "other",
                                  .curl_rc = ok ? CURLE_FAILED_INIT : CURLE_ABORTED_BY_CALLBACK};
            h->cb(e->l, h->arg, &res);
        }
        held_free(h);
        h = next;
    }
}

static void renew_tick(loop *l, void *arg)
{
    engine *e = arg;
    e->cl->renew = NULL;
    if (e->stopping) return;
    const config *cfg = ccfg(e);
    /* Outside the batch: a renewal rolled back with it would be believed. */
    int64_t t0 = mono_us();
    store_status st = batch_closed(e) ? store_instance_renew(e->db, cfg->cluster_lease_ms)
                                      : STORE_ERROR;
    if (st == STORE_CONFLICT) {
        log_error("cluster", "instance %s was fenced (its lease ran out): its calls are run"
                  " by other instances now; exiting%s", store_instance(e->a->store),
                  e->cl->n_held ? ", its held Kaphila commands unsent" : "");
        _exit(CLUSTER_FENCED_EXIT);
    }
    if (st != STORE_OK) {
        metrics_inc(e->a->metrics, "twigate_cluster_lease_renewals_total", "outcome=\"failed\"", 1);
        log_warn("cluster", "the lease could not be renewed; trying again");
    } else {
        metrics_inc(e->a->metrics, "twigate_cluster_lease_renewals_total", "outcome=\"ok\"", 1);
        atomic_store(&e->lease_trusted_until_us,
                     t0 + (int64_t)(cfg->cluster_lease_ms - cfg->cluster_renew_ms) * 1000);
        held_release(e, true);
    }
    e->cl->renew = loop_timer_add(l, cfg->cluster_renew_ms, renew_tick, e);
}

int eng_kaphila_send(engine *e, const char *api_key, const char *method, const char *path,
                     json_t *body, kaphila_cb cb, void *arg)
{
    if (!e->cl || e->stopping || !strcmp(method, "GET") || engine_lease_ok(e))
        return kaphila_call(e->l, &e->kc, api_key, method, path, body, cb, arg);
    held_cmd *h = calloc(1, sizeof *h);
    if (!h || !(h->api_key = strdup(api_key)) || !(h->method = strdup(method)) ||
        !(h->path = strdup(path))) {
        if (h) held_free(h);
        return -1;
    }
    h->body = json_incref(body);
    h->cb = cb;
    h->arg = arg;
    *e->cl->held_tail = h;
    e->cl->held_tail = &h->next;
    if (e->cl->n_held++ == 0)
        log_warn("cluster", "the lease was last renewed too long ago to be trusted: Kaphila"
                 " commands wait for the next renewal");
    metrics_inc(e->a->metrics, "twigate_cluster_commands_held_total", NULL, 1);
    return 0;
}

typedef struct adopt_ctx {
    engine *e;
    call  **calls;
    size_t  n, cap;
} adopt_ctx;

static void adopted_call(store_call *row, void *arg)
{
    adopt_ctx *x = arg;
    eng_recover_call(row, x->e);
    call *c = call_find(x->e, row->sid);
    if (!c) return;
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 16;
        call **grown = realloc(x->calls, cap * sizeof *grown);
        if (!grown) return;   /* not settled now: the reconciler still checks it */
        x->calls = grown;
        x->cap = cap;
    }
    call_ref(c);
    x->calls[x->n++] = c;
    log_context(NULL, c->row.account_sid, c->row.sid);
    log_info("cluster", "call adopted from an instance that is no longer up");
}

static void adopted_kevent(int64_t id, const char *call_sid, const char *body, void *arg)
{
    eng_recover_kevent(id, call_sid, body, ((adopt_ctx *)arg)->e);
}

static void adopted_outbox(store_outbox *o, void *arg)
{
    eng_recover_outbox(o, ((adopt_ctx *)arg)->e);
}

/* An ended call taken for what it still owes: its recordings waiting for
 * media are fetched and cut here now, as a start-up does (rec_recover). */
static void adopted_ended(const char *call_sid, void *arg)
{
    engine *e = ((adopt_ctx *)arg)->e;
    log_context(NULL, NULL, call_sid);
    rec_recover_call(e, call_sid);
    log_context_clear();
}

static void adopt_tick(loop *l, void *arg)
{
    engine *e = arg;
    e->cl->adopt = NULL;
    if (e->stopping) return;
    adopt_ctx x = {.e = e};
    int n = 0, fenced = 0;
    static const store_adopt_cbs cbs = {adopted_call, adopted_kevent, adopted_outbox,
                                        adopted_ended};
    int64_t t0 = mono_us();
    if (batch_closed(e)) {
        int room = CLUSTER_ADOPT_BATCH;
        size_t cap = (size_t)ccfg(e)->max_live_calls, live = atomic_load(&e->live);
        if (live >= cap) room = 0;   /* full: the others take them */
        else if (cap - live < (size_t)room) room = (int)(cap - live);
        if (room > 0 && store_adopt(e->db, room, &cbs, &x, &n, &fenced) != STORE_OK)
            log_warn("cluster", "adoption failed; trying again");
    }
    metrics_observe(e->a->metrics, "twigate_cluster_adopt_seconds", NULL,
                    (double)(mono_us() - t0) / 1e6);
    if (fenced) metrics_inc(e->a->metrics, "twigate_cluster_fenced_total", NULL, fenced);
    if (n) {
        metrics_inc(e->a->metrics, "twigate_cluster_adopted_total", NULL, n);
        log_context_clear();
        log_info("cluster", "adopted %d call(s)", n);
    }
    for (size_t i = 0; i < x.n; i++) {
        eng_settle_recovered(e, x.calls[i]);
        call_unref(x.calls[i]);
    }
    free(x.calls);
    if (x.n) {
        budget_publish(e->bud);
        budget_kick(e->bud);        /* adopted queued calls dial in their turn */
        reconcile_check_now(e);     /* each adopted call is asked about at once */
    }
    /* A full batch: there may be more at once. */
    int next = n >= CLUSTER_ADOPT_BATCH ? 0 : ccfg(e)->cluster_adopt_ms;
    e->cl->adopt = loop_timer_add(l, next, adopt_tick, e);
}

/* One inbox row: a Kaphila event applied as a replayed one is (its row
 * deleted in the same batch, -id), or a REST update applied with nobody
 * waiting for the answer (the receiver answered when it stored it). */
static void inbox_row(int64_t id, const char *call_sid, const char *kind, const char *body,
                      void *arg)
{
    engine *e = arg;
    json_t *j = json_loads(body, 0, NULL);
    emsg m = {.kid = -id, .j = j};
    snprintf(m.sid, sizeof m.sid, "%s", call_sid);
    if (j && !strcmp(kind, "kevent") && json_is_string(json_object_get(j, "event"))) {
        m.k = M_KEVENT;
        eng_handle_kevent(e, &m);
    } else if (j && !strcmp(kind, "update") && json_is_object(json_object_get(j, "update")) &&
               json_is_string(json_object_get(j, "account_sid"))) {
        m.k = M_UPDATE;
        m.r = (engine_reply){&no_reply_ops, NULL};
        m.j = json_incref(json_object_get(j, "update"));
        snprintf(m.account_sid, sizeof m.account_sid, "%s",
                 json_string_value(json_object_get(j, "account_sid")));
        /* Deleted first, in the same batch as the update's effects. */
        if (eng_txn_begin(e) && store_inbox_done(e->db, id) == STORE_OK)
            eng_handle_update(e, &m);   /* takes m.j */
        else
            json_decref(m.j);
    } else {
        log_warn("cluster", "inbox row %lld (%s) is not readable; dropped", (long long)id, kind);
        if (eng_txn_begin(e) && store_inbox_done(e->db, id) != STORE_OK)
            log_warn("cluster", "inbox row %lld could not be deleted", (long long)id);
    }
    metrics_inc(e->a->metrics, "twigate_cluster_inbox_total", "dir=\"applied\"", 1);
    json_decref(j);
    log_context_clear();
}

/* Applies what the inbox holds for this instance's calls, now. */
static void inbox_read(engine *e, const char *by)
{
    char label[24];
    snprintf(label, sizeof label, "by=\"%s\"", by);
    metrics_inc(e->a->metrics, "twigate_cluster_inbox_reads_total", label, 1);
    /* A row applied in the open batch is deleted only when it commits: read
     * the inbox again only once it has, or the row would be applied twice. */
    if (batch_closed(e) &&
        store_inbox_each(e->db, CLUSTER_INBOX_BATCH, inbox_row, e) != STORE_OK)
        log_warn("cluster", "the inbox could not be read; trying again");
    if (e->batch) (void)eng_batch_flush(e);
}

static void listen_close(engine *e)
{
    if (!e->cl->lis) return;
    (void)loop_watch(e->l, -1, NULL, NULL);   /* before its fd is closed */
    store_listener_close(e->cl->lis);
    e->cl->lis = NULL;
}

/* A notification arrived (or the connection broke): one for this instance
 * means rows in its inbox, read at once rather than at the next poll. */
static void on_notify(loop *l, void *arg)
{
    engine *e = arg;
    int n = store_listener_drain(e->cl->lis);
    if (n < 0) {
        log_warn("cluster", "the inbox notifications were cut; polling until they are back");
        listen_close(e);
        e->cl->lis_retry_at = loop_now_ms(l) + CLUSTER_LISTEN_RETRY_MS;
        return;
    }
    if (n > 0 && !e->stopping) inbox_read(e, "notify");
}

static void listen_open(engine *e)
{
    e->cl->lis = store_listener_open(e->a->store);
    if (e->cl->lis &&
        loop_watch(e->l, store_listener_fd(e->cl->lis), on_notify, e) != 0) {
        store_listener_close(e->cl->lis);
        e->cl->lis = NULL;
    }
    if (!e->cl->lis) e->cl->lis_retry_at = loop_now_ms(e->l) + CLUSTER_LISTEN_RETRY_MS;
}

static void poll_tick(loop *l, void *arg)
{
    engine *e = arg;
    e->cl->poll = NULL;
    if (e->stopping) return;
    if (!e->cl->lis && loop_now_ms(l) >= e->cl->lis_retry_at) {
        listen_open(e);
        /* Rows that came while nobody listened are read by this poll. */
    }
    inbox_read(e, "poll");
    e->cl->poll = loop_timer_add(l, ccfg(e)->cluster_poll_ms, poll_tick, e);
}

int eng_cluster_forward(engine *e, const char *call_sid, const char *kind, const char *body,
                        size_t len)
{
    if (!e->cl) return 0;
    if (!eng_txn_begin(e)) return -1;
    if (store_inbox_insert(e->db, call_sid, kind, body, len) != STORE_OK) {
        eng_batch_failed(e);
        return -1;
    }
    metrics_inc(e->a->metrics, "twigate_cluster_inbox_total", "dir=\"forwarded\"", 1);
    log_debug("cluster", "%s stored for the call's owner", kind);
    return 1;
}

void eng_cluster_start(engine *e)
{
    if (!store_shared(e->a->store) || !store_instance(e->a->store)[0]) return;
    e->cl = calloc(1, sizeof *e->cl);
    if (!e->cl) {
        log_error("cluster", "out of memory: this instance neither renews its lease nor adopts");
        return;
    }
    const config *cfg = ccfg(e);
    e->cl->held_tail = &e->cl->held;
    atomic_store(&e->leased, true);
    /* Renewed at once: until then commands are held (the join's lease is
     * not timed here). */
    e->cl->renew = loop_timer_add(e->l, 0, renew_tick, e);
    e->cl->adopt = loop_timer_add(e->l, 0, adopt_tick, e);
    e->cl->poll = loop_timer_add(e->l, cfg->cluster_poll_ms, poll_tick, e);
    listen_open(e);
    log_info("cluster", "instance %s: lease %d ms, renewed every %d ms; inbox %s, polled"
             " every %d ms", store_instance(e->a->store), cfg->cluster_lease_ms,
             cfg->cluster_renew_ms, e->cl->lis ? "woken by notifications" : "not notified",
             cfg->cluster_poll_ms);
}

bool engine_lease_ok(engine *e)
{
    return !e || !atomic_load(&e->leased) || mono_us() < atomic_load(&e->lease_trusted_until_us);
}

void eng_cluster_abort(engine *e)
{
    if (e->cl) held_release(e, false);
}

void eng_cluster_destroy(engine *e)
{
    if (!e->cl) return;
    /* The loop is gone (its timers with it). A clean stop ends the lease
     * now, so the others adopt the calls left without waiting it out. */
    if (e->db && store_instance_leave(e->db) != STORE_OK)
        log_warn("cluster", "could not mark this instance as gone; its lease runs out instead");
    store_listener_close(e->cl->lis);   /* the loop and its epoll are gone already */
    free(e->cl);
    e->cl = NULL;
}
