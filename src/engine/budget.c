/* budget.c — Kaphila's per-key request budget: the sliding-window log, the
 * three classes of waiting requests, 429s, GET /api/me (limit, credits) and
 * the figures it publishes. The model is in budget_int.h and docs/kaphila.md.
 *
 * Map:
 *   keys        budget_key: one per distinct API key, made on first use;
 *   the window  used(): slots whose free time has not come + requests in
 *               flight + slots taken for /makecalls about to go;
 *   the pump    pump(): hang-ups, then live calls' commands, then the dial
 *               queue (dialq_kick), each while the window has room; rearm()
 *               sets the one timer that wakes the key when room comes back;
 *   answers     on_answer(): the slot's free time is the answer's arrival +
 *               the window; a 429 puts the request back at its class's head;
 *   /api/me     me_fetch()/on_me(): the limit when configured as 0 (at
 *               the key's first use, every kaphila.me_interval_ms and at
 *               once after a 429), the credits (Balance.json, the 402 pause);
 *   figures     publish_key(): metrics and the snapshot other threads read;
 *   shared      shared_take(): with instances sharing a database
 *               (store/cluster.h), each counted request of a limited key
 *               also takes a slot in the key's log in the database, so that
 *               together they stay within the limit (docs/scale-out.md §7).
 * Engine thread only, but engine_budget_snapshot (any thread). */
#include "budget_int.h"
#include "engine_core_int.h"

#include "base/signature.h"
#include "store/cluster.h"

struct breq {
    breq       *next;
    bkey       *k;
    int         cls;
    char        method[8];
    char        path[96];
    json_t     *body;       /* a reference (NULL for GET) */
    kaphila_cb  cb;
    void       *arg;
};

struct budget {
    engine          *e;
    store_conn      *db;         /* the shared log's own connection (NULL until used) */
    bkey            *keys;
    size_t           n_keys;
    bool             stopping;
    loop_timer      *tick;
    pthread_mutex_t  mu;         /* guards snap: read by engine_budget_snapshot */
    engine_budget_key *snap;
    size_t           n_snap, cap_snap;
};

/* The figures are refreshed this often even when nothing happens (the
 * queue's oldest wait grows by itself), and at most every
 * BUDGET_PUBLISH_MS by the pump (four gauges and a lock per request would
 * show on an unlimited key's hot path). */
#define BUDGET_TICK_MS 1000
#define BUDGET_PUBLISH_MS 100

static const char *const counted[] = {"/makecall", "/batchcall", "/voice", "/play", "/gather",
                                      "/hangup"};

static bool is_counted(const char *path)
{
    for (size_t i = 0; i < sizeof counted / sizeof counted[0]; i++) {
        size_t n = strlen(counted[i]);
        if (!strncmp(path, counted[i], n) && (path[n] == '\0' || path[n] == '/' || path[n] == '?'))
            return true;
    }
    return false;
}

static const config *cfg_of(const bkey *k) { return app_config(k->b->e->a); }
static int64_t window_ms(const bkey *k) { return cfg_of(k)->kaphila_rate_window_ms; }
static loop *loop_of(const bkey *k) { return k->b->e->l; }

static int used(bkey *k, int64_t now)
{
    while (k->fa_n && k->free_at[k->fa_head] <= now) {
        k->fa_head = (k->fa_head + 1) % k->fa_cap;
        k->fa_n--;
    }
    return (int)k->fa_n + k->inflight + k->reserved_new;
}

static void slot_used(bkey *k, int64_t free_at)
{
    if (k->fa_n == k->fa_cap) {
        size_t ncap = k->fa_cap ? k->fa_cap * 2 : 64;
        int64_t *nv = malloc(ncap * sizeof *nv);
        if (!nv) return;   /* out of memory: forget the slot (counted too low, once) */
        for (size_t i = 0; i < k->fa_n; i++) nv[i] = k->free_at[(k->fa_head + i) % k->fa_cap];
        free(k->free_at);
        k->free_at = nv;
        k->fa_cap = ncap;
        k->fa_head = 0;
    }
    k->free_at[(k->fa_head + k->fa_n) % k->fa_cap] = free_at;
    k->fa_n++;
}

/* What live calls may still need: BUDGET_RESERVE_PER_LIVE slots each, plus
 * the hang-ups and commands already waiting. A dial needs more room than this. */
static int reserve(const bkey *k)
{
    /* A call counts live from its /makecall's turn (dialq_send); while that
     * /makecall waits in the class (put back by a 429, or by the shared
     * log), the call needs no reserve yet: counting it made a queue of such
     * calls reserve the very room they wait for, and nothing was dialled.
     * A call admitted but not yet sent (its slot taken, reserved_new, its
     * /makecall leaving after the batch commits) will be live: it reserves
     * now, or a burst of creates in one loop turn each saw the room the
     * others had taken for their own later commands, and all were dialled
     * at once with none left for their <Say>s. */
    int live = k->live + k->reserved_new - k->qn[BUDGET_NEW];
    return BUDGET_RESERVE_PER_LIVE * (live > 0 ? live : 0) + k->qn[BUDGET_HANGUP] +
           k->qn[BUDGET_LIVE];
}

static bool is_open(const bkey *k, int64_t now)
{
    return k->limit_known && now >= k->closed_until;
}

int budget_room_new(bkey *k)
{
    int64_t now = loop_now_ms(loop_of(k));
    if (!is_open(k, now) || k->paused || now < k->shared_until_new) return 0;
    int u = used(k, now);
    if (k->limit <= 0) return 1 << 20;
    int room = k->limit - u - reserve(k);
    return room > 0 ? room : 0;
}

bool budget_take_new(bkey *k)
{
    if (budget_room_new(k) < 1) return false;
    k->reserved_new++;
    return true;
}

void budget_release_new(bkey *k)
{
    if (k->reserved_new > 0) k->reserved_new--;
}

double budget_dial_rate(const bkey *k)
{
    if (!k->limit_known || k->limit <= 0) return 0;
    return (double)k->limit / BUDGET_REQS_PER_CALL / ((double)window_ms(k) / 1000.0);
}

/* The connection the shared log is kept through, when the database is
 * shared (NULL otherwise, or when none can be had: then the key's budget
 * is this instance's alone, as on SQLite). */
static store_conn *shared_db(budget *b)
{
    store *st = b->e->a->store;
    if (!store_shared(st) || !store_instance(st)[0]) return NULL;
    if (!b->db) b->db = store_conn_acquire(st);
    return b->db;
}

static void publish_key(bkey *k);
static void tick_fired(loop *l, void *arg);
static void pump(bkey *k);
static void fire(bkey *k, breq *q);
static void me_fetch(bkey *k);

static void wake_fired(loop *l, void *arg)
{
    (void)l;
    bkey *k = arg;
    k->wake = NULL;
    pump(k);
}

/* The key's one wake-up timer, at loop ms `at`, unless it is due by then
 * already. */
static void wake_at(bkey *k, int64_t at)
{
    int64_t now = loop_now_ms(loop_of(k));
    if (k->wake && k->wake_at <= at) return;
    if (k->wake) loop_timer_cancel(loop_of(k), k->wake);
    k->wake_at = at;
    k->wake = loop_timer_add(loop_of(k), at > now ? at - now : 0, wake_fired, k);
}

/* Room may have come without an answer to wake the key, and a dial waits:
 * a live call ended on Kaphila's word (no /hangup of ours), calls were
 * adopted or recovered into the queue. The pump runs at the loop's next
 * turn, not inside the caller (which may be in a call's teardown). */
static void pump_soon(bkey *k)
{
    if (k->b->stopping) return;
    if (k->dq_n || k->qn[BUDGET_NEW]) wake_at(k, loop_now_ms(loop_of(k)));
}

void budget_live(bkey *k, int delta)
{
    k->live += delta;
    if (k->live < 0) k->live = 0;
    store_conn *db = k->limit > 0 ? shared_db(k->b) : NULL;
    /* Those whose /makecall waits in the class need no reserve yet. */
    int reserved = k->live - k->qn[BUDGET_NEW];
    if (db && store_budget_live(db, k->label, reserved > 0 ? reserved : 0) != STORE_OK)
        log_warn("budget", "key %s: the live calls could not be shared", k->label);
    /* One live call fewer is room its reserve held: a dial waiting on it
     * goes now, not when some later answer or slot wakes the key. */
    if (delta < 0) pump_soon(k);
}

void budget_kick(budget *b)
{
    for (bkey *k = b ? b->keys : NULL; k; k = k->next) pump_soon(k);
}

/* The one timer that brings the key back when room may have come: the end
 * of a 429's close, else the oldest slot's free time. */
static void rearm(bkey *k)
{
    int64_t now = loop_now_ms(loop_of(k)), at;
    bool waiting = k->qn[BUDGET_HANGUP] || k->qn[BUDGET_LIVE] || k->qn[BUDGET_NEW] || k->dq_n;
    if (!waiting || !k->limit_known || k->b->stopping) return;
    used(k, now);
    if (now < k->closed_until) at = k->closed_until;
    else if (k->fa_n) at = k->free_at[k->fa_head];
    else if (now < k->shared_until_new) at = k->shared_until_new;
    else return;   /* only in-flight requests: their answers call back here */
    if (now >= k->closed_until && now < k->shared_until_new && k->shared_until_new < at)
        at = k->shared_until_new;
    wake_at(k, at);
}

static void q_push(bkey *k, breq *q, bool head)
{
    int c = q->cls;
    q->next = NULL;
    if (head) {
        q->next = k->qh[c];
        k->qh[c] = q;
        if (!k->qt[c]) k->qt[c] = q;
    } else {
        if (k->qt[c]) k->qt[c]->next = q;
        else k->qh[c] = q;
        k->qt[c] = q;
    }
    k->qn[c]++;
}

static breq *q_pop(bkey *k, int c)
{
    breq *q = k->qh[c];
    if (!q) return NULL;
    k->qh[c] = q->next;
    if (!k->qh[c]) k->qt[c] = NULL;
    k->qn[c]--;
    q->next = NULL;
    return q;
}

static void breq_free(breq *q)
{
    json_decref(q->body);
    free(q);
}

static void pump(bkey *k)
{
    int64_t now = loop_now_ms(loop_of(k));
    if (k->b->stopping) return;
    if (is_open(k, now)) {
        /* Hang-ups, then live calls' commands: each waits for the one before. */
        for (int c = BUDGET_HANGUP; c <= BUDGET_LIVE; c++) {
            while (k->qh[c] && (k->limit <= 0 || used(k, now) < k->limit) && is_open(k, now))
                fire(k, q_pop(k, c));
            if (k->qh[c]) break;
        }
        /* /makecalls put back by a 429 go before the queue's next dial. */
        while (k->qh[BUDGET_NEW] && !k->qh[BUDGET_HANGUP] && !k->qh[BUDGET_LIVE] &&
               budget_room_new(k) >= 1 && is_open(k, now))
            fire(k, q_pop(k, BUDGET_NEW));
        if (!k->qh[BUDGET_NEW]) dialq_kick(k->b->e, k);
    }
    rearm(k);
    if (now - k->published_ms >= BUDGET_PUBLISH_MS) publish_key(k);
}

static void on_answer(loop *l, void *arg, const kaphila_result *res)
{
    breq *q = arg;
    bkey *k = q->k;
    int64_t now = loop_now_ms(l);
    k->inflight--;
    /* An unlimited key keeps no log: at 1,000 requests/s an hour's
     * window would hold millions of entries for nothing. */
    if (k->limit > 0) slot_used(k, now + window_ms(k));
    if (res->http_status == 429 && !k->b->stopping) {
        /* Someone else spent the key (or Kaphila counts otherwise): the key
         * is closed for a backoff (1 s, doubling with each 429 in a row, at
         * most a window), or until its oldest slot frees if that is sooner
         * (Kaphila's oldest counted request is at least as old). Kaphila does
         * not count a refused request, so a retry that is refused again costs
         * nothing but its round trip. */
        int64_t until = now + k->backoff_ms;
        used(k, now);
        if (k->fa_n > 1 && k->free_at[k->fa_head] < until) until = k->free_at[k->fa_head];
        if (until > k->closed_until) k->closed_until = until;
        k->backoff_ms = k->backoff_ms * 2 < window_ms(k) ? k->backoff_ms * 2 : (int)window_ms(k);
        k->n429++;
        char labels[64];
        snprintf(labels, sizeof labels, "key=\"%s\",endpoint=\"%s\"", k->label, res->endpoint);
        metrics_inc(k->b->e->a->metrics, "twigate_kaphila_429_total", labels, 1);
        log_warn("budget", "key %s: 429 on %s; retried in %lld ms", k->label, res->endpoint,
                 (long long)(k->closed_until - now));
        /* Kaphila may have lowered the key's limit since the last GET /api/me
         * (every kaphila.me_interval_ms): ask now, so the budget runs on the
         * new figure from the first refusal on. /api/me is not counted. */
        if (!k->cfg_limit) me_fetch(k);
        q_push(k, q, true);
        rearm(k);
        publish_key(k);
        return;
    }
    k->backoff_ms = 1000;
    q->cb(l, q->arg, res);
    breq_free(q);
    rearm(k);
}

/* The key's slot in the shared log, taken before the request leaves (true:
 * send it). None free: the request goes back to its class's head and the
 * key (for a new call: its dial queue) waits until the log's oldest slot
 * frees. The database not answering: sent on this instance's count alone
 * (a 429 would still be retried), said in the log. */
static bool shared_take(bkey *k, breq *q)
{
    store_conn *db = k->limit > 0 ? shared_db(k->b) : NULL;
    if (!db) return true;
    int64_t wait = 0;
    const config *cfg = cfg_of(k);
    int64_t hold = window_ms(k) + cfg->kaphila_timeout_ms;
    /* A dialled call counts live from its /makecall's turn (dialq_send):
     * those whose /makecall waits in the class, and this one, need no
     * reserve yet. */
    bool is_new = q->cls == BUDGET_NEW;
    store_status st = store_budget_take(db, k->label, k->limit, hold,
                                        is_new ? BUDGET_RESERVE_PER_LIVE : 0, k->live,
                                        is_new ? k->qn[BUDGET_NEW] + 1 : 0, &wait);
    if (st == STORE_OK) return true;
    if (st != STORE_CONFLICT) {
        metrics_inc(k->b->e->a->metrics, "twigate_budget_shared_errors_total", NULL, 1);
        log_warn("budget", "key %s: the shared budget did not answer; sent on this"
                 " instance's count", k->label);
        return true;
    }
    int64_t until = loop_now_ms(loop_of(k)) + wait;
    if (q->cls == BUDGET_NEW) {
        if (until > k->shared_until_new) k->shared_until_new = until;
    } else if (until > k->closed_until) {
        k->closed_until = until;
    }
    metrics_inc(k->b->e->a->metrics, "twigate_budget_shared_waits_total", NULL, 1);
    log_debug("budget", "key %s: %s waits %lld ms for the shared log", k->label, q->path,
              (long long)wait);
    q_push(k, q, true);
    rearm(k);
    return false;
}

static void fire(bkey *k, breq *q)
{
    engine *e = k->b->e;
    if (q->cls == BUDGET_NEW) budget_release_new(k);   /* the slot becomes in flight */
    if (!shared_take(k, q)) return;
    k->inflight++;
    if (eng_kaphila_send(e, k->api_key, q->method, q->path, q->body, on_answer, q) != 0) {
        kaphila_result res = {.endpoint = "other", .curl_rc = CURLE_FAILED_INIT};
        k->inflight--;
        q->cb(e->l, q->arg, &res);
        breq_free(q);
    }
}

int budget_send(engine *e, bkey *k, const config_account *acct, int cls, const char *method,
                const char *path, json_t *body, kaphila_cb cb, void *arg)
{
    budget *b = e->bud;
    if (!b || !k || !is_counted(path) || b->stopping) {
        if (k && cls == BUDGET_NEW) budget_release_new(k);
        const char *key = k ? k->api_key : acct ? acct->kaphila_key : NULL;
        if (!key) return -1;
        return eng_kaphila_send(e, key, method, path, body, cb, arg);
    }
    breq *q = calloc(1, sizeof *q);
    if (!q) return -1;
    q->k = k;
    q->cls = cls;
    q->cb = cb;
    q->arg = arg;
    q->body = json_incref(body);
    snprintf(q->method, sizeof q->method, "%s", method);
    snprintf(q->path, sizeof q->path, "%s", path);
    if (cls == BUDGET_NEW || (k->limit_known && k->limit <= 0 && !k->qn[cls] &&
                              loop_now_ms(e->l) >= k->closed_until)) {
        /* A dial's slot was taken by budget_take_new; an unlimited key
         * with nothing waiting in the class sends at once. */
        fire(k, q);
        return 0;
    }
    q_push(k, q, false);
    pump(k);
    return 0;
}

/* ---- GET /api/me ---------------------------------------------------- */

static void me_timer_fired(loop *l, void *arg)
{
    (void)l;
    bkey *k = arg;
    k->me_timer = NULL;
    me_fetch(k);
}

static void me_schedule(bkey *k)
{
    const config *cfg = cfg_of(k);
    if (k->b->stopping || k->me_timer) return;
    k->me_timer = loop_timer_add(loop_of(k), k->paused ? cfg->kaphila_credits_poll_ms
                                                       : cfg->kaphila_me_interval_ms,
                                 me_timer_fired, k);
}

/* Reads apiKey.rateLimit and apiKey.credits; false when absent. */
static bool me_read(const kaphila_result *res, json_t **rl, long long *credits)
{
    json_t *ak = json_object_get(res->body, "apiKey");
    json_t *cr = json_object_get(ak, "credits");
    *rl = json_object_get(ak, "rateLimit");
    if (!kaphila_ok(res) || !json_is_object(ak)) return false;
    *credits = json_is_number(cr) ? (long long)json_number_value(cr) : -1;
    return true;
}

static void on_me(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    bkey *k = arg;
    json_t *rl;
    long long credits;
    k->me_inflight = false;
    if (k->b->stopping) return;
    if (me_read(res, &rl, &credits)) {
        if (!k->cfg_limit && json_is_integer(rl) && json_integer_value(rl) >= 0) {
            int v = (int)json_integer_value(rl);
            if (!k->limit_known || v != k->limit)
                log_info("budget", "key %s: Kaphila's rate limit is %d per %d ms", k->label, v,
                         (int)window_ms(k));
            k->limit = v;
            k->limit_known = true;
        }
        if (credits >= 0) {
            if (k->paused && credits > 0 && credits != k->credits) {
                log_info("budget", "key %s: credits back (%lld); the dial queue resumes",
                         k->label, credits);
                k->paused = false;
            }
            k->credits = credits;
        }
    } else if (!k->limit_known) {
        log_warn("budget", "key %s: GET /api/me failed (HTTP %d); assuming Kaphila's default"
                 " of %d requests per window until it answers", k->label, res->http_status,
                 BUDGET_DEFAULT_LIMIT);
        k->limit = BUDGET_DEFAULT_LIMIT;
        k->limit_known = true;
    }
    if (!k->limit_known) k->limit_known = true;   /* answered without a limit: config's */
    me_schedule(k);
    pump(k);
}

static void me_fetch(bkey *k)
{
    engine *e = k->b->e;
    if (k->me_inflight || k->b->stopping) return;
    k->me_inflight = true;
    if (kaphila_call(e->l, &e->kc, k->api_key, "GET", "/api/me", NULL, on_me, k) != 0) {
        k->me_inflight = false;
        me_schedule(k);
    }
}

void budget_pause(bkey *k)
{
    if (!k->paused)
        log_warn("budget", "key %s: Kaphila reports no credits (402); the dial queue waits"
                 " for credits", k->label);
    k->paused = true;
    k->credits = 0;
    if (k->me_timer) {
        loop_timer_cancel(loop_of(k), k->me_timer);
        k->me_timer = NULL;
    }
    me_schedule(k);
    publish_key(k);
}

/* ---- keys ------------------------------------------------------------ */

static int acct_limit(const config_account *a)
{
    return a->kaphila_rate_limit ? atoi(a->kaphila_rate_limit) : 0;
}

bkey *budget_key(budget *b, const config_account *acct)
{
    bkey *k;
    if (!acct || !acct->kaphila_key) return NULL;
    for (k = b->keys; k; k = k->next)
        if (!strcmp(k->api_key, acct->kaphila_key)) break;
    if (!k) {
        char hex[65];
        if (b->n_keys >= BUDGET_MAX_KEYS || !(k = calloc(1, sizeof *k))) {
            metrics_inc(b->e->a->metrics, "twigate_budget_overflow_total", NULL, 1);
            return NULL;
        }
        if (!(k->api_key = strdup(acct->kaphila_key))) {
            free(k);
            return NULL;
        }
        signature_body_sha256(k->api_key, strlen(k->api_key), hex);
        memcpy(k->label, hex, 8);
        k->b = b;
        k->credits = -1;
        k->backoff_ms = 1000;
        k->next = b->keys;
        b->keys = k;
        b->n_keys++;
        if (!b->tick) b->tick = loop_timer_add(b->e->l, BUDGET_TICK_MS, tick_fired, b);
    }
    /* A configured limit wins (reloads take effect on the next request);
     * 0 = Kaphila's, learned before the first counted request. */
    int cl = acct_limit(acct);
    if (cl > 0) {
        k->cfg_limit = k->limit = cl;
        k->limit_known = true;
    } else if (k->cfg_limit) {
        k->cfg_limit = 0;
        k->limit_known = false;
    }
    if (!k->me_inflight && !k->me_timer) me_fetch(k);
    return k;
}

/* ---- figures ----------------------------------------------------------- */

static void publish_key(bkey *k)
{
    budget *b = k->b;
    metrics *m = b->e->a->metrics;
    int64_t now = loop_now_ms(loop_of(k));
    int u = used(k, now);
    char lb[32];
    engine_budget_key s = {0};
    memcpy(s.label, k->label, sizeof s.label);
    s.limit = k->limit_known ? k->limit : -1;
    s.window_ms = window_ms(k);
    s.used = u;
    s.left = k->limit > 0 ? (k->limit > u ? k->limit - u : 0) : -1;
    s.live = k->live;
    s.waiting_commands = k->qn[BUDGET_HANGUP] + k->qn[BUDGET_LIVE];
    s.reserved = reserve(k);
    s.queued_calls = k->dq_n;
    s.oldest_wait_ms = dialq_oldest_ms(b->e, k);
    s.credits = k->credits;
    s.paused = k->paused;
    s.closed_ms = now < k->closed_until ? k->closed_until - now : 0;
    s.received_429 = k->n429;
    k->published_ms = now;
    snprintf(lb, sizeof lb, "key=\"%s\"", k->label);
    metrics_gauge(m, "twigate_budget_used", lb, u);
    metrics_gauge(m, "twigate_budget_left", lb, s.left);
    metrics_gauge(m, "twigate_dial_queue_depth", lb, k->dq_n);
    metrics_gauge(m, "twigate_dial_queue_oldest_seconds", lb, (double)s.oldest_wait_ms / 1000.0);
    pthread_mutex_lock(&b->mu);
    size_t i;
    for (i = 0; i < b->n_snap && strcmp(b->snap[i].label, s.label); i++) {}
    if (i == b->n_snap && b->n_snap == b->cap_snap) {
        size_t ncap = b->cap_snap ? b->cap_snap * 2 : 8;
        engine_budget_key *nv = realloc(b->snap, ncap * sizeof *nv);
        if (nv) { b->snap = nv; b->cap_snap = ncap; }
    }
    if (i < b->cap_snap) {
        b->snap[i] = s;
        if (i == b->n_snap) b->n_snap++;
    }
    pthread_mutex_unlock(&b->mu);
}

void budget_publish(budget *b)
{
    for (bkey *k = b->keys; k; k = k->next) publish_key(k);
}

static void tick_fired(loop *l, void *arg)
{
    budget *b = arg;
    b->tick = NULL;
    if (b->stopping) return;
    budget_publish(b);
    b->tick = loop_timer_add(l, BUDGET_TICK_MS, tick_fired, b);
}

size_t engine_budget_snapshot(engine *e, engine_budget_key *out, size_t max)
{
    budget *b = e ? e->bud : NULL;
    size_t n = 0;
    if (!b) return 0;
    pthread_mutex_lock(&b->mu);
    for (; n < b->n_snap && n < max; n++) out[n] = b->snap[n];
    pthread_mutex_unlock(&b->mu);
    return n;
}

/* ---- Balance.json ---------------------------------------------------- */

typedef struct bal_ctx {
    engine_reply r;
    bkey        *k;
    char         account_sid[SID_SIZE];
} bal_ctx;

static void on_balance(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    bal_ctx *x = arg;
    json_t *rl;
    long long credits = -1;
    if (!me_read(res, &rl, &credits) || credits < 0) {
        int code, status;
        char msg[400];
        kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
        if (res->http_status >= 200 && res->http_status < 300) {
            code = 20500;
            status = 500;
            snprintf(msg, sizeof msg, "Kaphila's /api/me reported no credits");
        }
        engine_reply_error(x->r, code, status, msg);
    } else {
        char bal[32];
        snprintf(bal, sizeof bal, "%lld", credits);
        if (x->k) {
            if (x->k->paused && credits > 0 && credits != x->k->credits) x->k->paused = false;
            x->k->credits = credits;
        }
        engine_reply_json(x->r, 200, json_pack("{s:s,s:s,s:s}", "account_sid", x->account_sid,
                                               "balance", bal, "currency", "USD"));
        if (x->k && !x->k->b->stopping) pump(x->k);
    }
    free(x);
}

void budget_balance(budget *b, engine_reply r, const char *account_sid)
{
    const config_account *acct = config_account_by_sid(app_config(b->e->a), account_sid);
    bal_ctx *x = calloc(1, sizeof *x);
    if (!acct || !x) {
        free(x);
        engine_reply_error(r, acct ? 20500 : 20404, acct ? 500 : 404, NULL);
        return;
    }
    x->r = r;
    x->k = budget_key(b, acct);
    snprintf(x->account_sid, sizeof x->account_sid, "%s", account_sid);
    if (kaphila_call(b->e->l, &b->e->kc, acct->kaphila_key, "GET", "/api/me", NULL, on_balance,
                     x) != 0) {
        free(x);
        engine_reply_error(r, 20503, 503, NULL);
    }
}

/* ---- lifecycle ----------------------------------------------------------- */

budget *budget_create(engine *e)
{
    budget *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->e = e;
    pthread_mutex_init(&b->mu, NULL);
    return b;   /* the tick starts with the first key, on the engine thread */
}

void budget_abort(budget *b)
{
    if (!b) return;
    b->stopping = true;
    if (b->tick) loop_timer_cancel(b->e->l, b->tick);
    b->tick = NULL;
    for (bkey *k = b->keys; k; k = k->next) {
        if (k->wake) loop_timer_cancel(b->e->l, k->wake);
        if (k->me_timer) loop_timer_cancel(b->e->l, k->me_timer);
        if (k->dq_timer) loop_timer_cancel(b->e->l, k->dq_timer);
        k->wake = k->me_timer = k->dq_timer = NULL;
        for (int c = 0; c < BUDGET_CLASSES; c++) {
            breq *q;
            while ((q = q_pop(k, c))) {
                kaphila_result res = {.endpoint = "other", .curl_rc = CURLE_ABORTED_BY_CALLBACK};
                q->cb(b->e->l, q->arg, &res);
                breq_free(q);
            }
        }
    }
}

void budget_destroy(budget *b)
{
    if (!b) return;
    store_conn_release(b->db);
    while (b->keys) {
        bkey *k = b->keys;
        b->keys = k->next;
        free(k->free_at);
        free(k->api_key);
        free(k);
    }
    pthread_mutex_destroy(&b->mu);
    free(b->snap);
    free(b);
}

/* ---- the engine's public face (engine.h) ---- */

typedef struct bal_msg { engine_reply r; char account_sid[SID_SIZE]; } bal_msg;

static void balance_on_engine(engine *e, void *arg)
{
    bal_msg *m = arg;
    if (e->bud) budget_balance(e->bud, m->r, m->account_sid);
    else engine_reply_error(m->r, 20503, 503, NULL);
    free(m);
}

bool engine_balance(engine *e, engine_reply r, const char *account_sid)
{
    bal_msg *m = calloc(1, sizeof *m);
    if (!m) return false;
    m->r = r;
    snprintf(m->account_sid, sizeof m->account_sid, "%s", account_sid);
    if (!engine_submit(e, balance_on_engine, m)) {
        free(m);
        return false;
    }
    return true;
}
