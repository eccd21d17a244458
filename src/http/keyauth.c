/* keyauth.c — Kaphila-key accounts: bindings, the /api/me verdict cache,
 * failed-attempt counts, and the asynchronous look-up.
 *
 * Map: the tables (bound accounts by SID, verdicts by key digest, failures
 * by client address); the store's account_keys rows; the look-up on the
 * engine thread and its answer; keyauth_auth, the MHD-thread entry;
 * create/destroy. */
#include "http/keyauth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/sid.h"
#include "store/store.h"
#include "base/timefmt.h"

#define BOUND_BUCKETS 4096
#define DIGEST_LEN 32
/* Kaphila's keys are short ("ak_live_…"); a "password" longer than this is
 * not one and is refused without asking. */
#define KEYAUTH_MAX_KEY_LEN 256

static const char *const www_auth[] = {"WWW-Authenticate", "Basic realm=\"Twilio API\"", NULL};
static const char *const retry_after[] = {"Retry-After", "60", NULL};
static const char *const retry_soon[] = {"Retry-After", "1", NULL};

typedef struct bound {
    struct bound  *next;
    config_account acct;                 /* sid, auth_token = kaphila_key = the key */
    char           sid[SID_SIZE];
    unsigned char  digest[DIGEST_LEN];
} bound;

typedef struct verdict {
    unsigned char digest[DIGEST_LEN];
    int64_t       expires_ms;            /* monotonic; 0 = empty slot */
    bool          ok;
} verdict;

typedef struct fails {
    unsigned char addr[16];
    int64_t       window_ms;             /* start of the counting window */
    int           n;
} fails;

struct keyauth {
    app            *a;
    pthread_mutex_t lock;
    bound          *bound[BOUND_BUCKETS];
    size_t          n_bound;
    verdict         cache[KEYAUTH_CACHE_SLOTS];
    fails           clients[KEYAUTH_CLIENT_SLOTS];
    int             pending;
};

/* A look-up in flight: owned by the engine thread from engine_submit until
 * its answer. */
typedef struct ask {
    keyauth      *k;
    http_req     *r;
    char         *key;
    unsigned char digest[DIGEST_LEN];
} ask;

/* ---- tables (callers hold k->lock) ---- */

static size_t str_hash(const char *s, size_t mod)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h % mod);
}

static size_t bytes_hash(const unsigned char *b, size_t n, size_t mod)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return (size_t)(h % mod);
}

static bound *bound_find(keyauth *k, const char *sid)
{
    for (bound *b = k->bound[str_hash(sid, BOUND_BUCKETS)]; b; b = b->next)
        if (strcmp(b->sid, sid) == 0) return b;
    return NULL;
}

static bool digest_of(const char *key, unsigned char out[DIGEST_LEN])
{
    unsigned int n = 0;
    return EVP_Digest(key, strlen(key), out, &n, EVP_sha256(), NULL) == 1 && n == DIGEST_LEN;
}

static bound *bound_add(keyauth *k, const char *sid, const char *key, int64_t created_ms)
{
    bound *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    snprintf(b->sid, sizeof b->sid, "%s", sid);
    b->acct.sid = b->sid;
    b->acct.name = b->sid;
    b->acct.friendly_name = b->sid;
    b->acct.auth_token = strdup(key);
    b->acct.kaphila_key = b->acct.auth_token;
    b->acct.created_at = created_ms;
    b->acct.kaphila_key_account = true;
    if (!b->acct.auth_token || !digest_of(key, b->digest)) {
        free(b->acct.auth_token);
        free(b);
        return NULL;
    }
    size_t h = str_hash(sid, BOUND_BUCKETS);
    b->next = k->bound[h];
    k->bound[h] = b;
    k->n_bound++;
    return b;
}

static verdict *verdict_slot(keyauth *k, const unsigned char d[DIGEST_LEN])
{
    return &k->cache[bytes_hash(d, DIGEST_LEN, KEYAUTH_CACHE_SLOTS)];
}

/* 1 = Kaphila accepted the key, 0 = refused it, -1 = not known (fresh). */
static int verdict_get(keyauth *k, const unsigned char d[DIGEST_LEN], int64_t now)
{
    verdict *v = verdict_slot(k, d);
    if (!v->expires_ms || now >= v->expires_ms || CRYPTO_memcmp(v->digest, d, DIGEST_LEN) != 0)
        return -1;
    return v->ok ? 1 : 0;
}

static fails *fails_slot(keyauth *k, const unsigned char addr[16])
{
    return &k->clients[bytes_hash(addr, 16, KEYAUTH_CLIENT_SLOTS)];
}

/* True when the address has used up its failed attempts for the window. */
static bool fails_blocked(keyauth *k, const unsigned char addr[16], int64_t now)
{
    fails *f = fails_slot(k, addr);
    return memcmp(f->addr, addr, 16) == 0 && now - f->window_ms < KEYAUTH_FAIL_WINDOW_MS &&
           f->n >= KEYAUTH_FAIL_LIMIT;
}

static void fails_add(keyauth *k, const unsigned char addr[16], int64_t now)
{
    fails *f = fails_slot(k, addr);
    if (memcmp(f->addr, addr, 16) != 0 || now - f->window_ms >= KEYAUTH_FAIL_WINDOW_MS) {
        memcpy(f->addr, addr, 16);
        f->window_ms = now;
        f->n = 0;
    }
    f->n++;
}

/* ---- the store's rows ---- */

/* Binds sid to key in the store unless it is bound already; then *same says
 * whether the stored key is this one. */
static store_status store_bind(keyauth *k, const char *sid, const char *key, int64_t now,
                               bool *same)
{
    store_conn *c = store_conn_acquire(k->a->store);
    store_status r;
    *same = false;
    if (!c) return STORE_ERROR;
    r = store_account_key_bind(c, sid, key, now, same);
    if (r != STORE_OK) log_error("keyauth", "cannot bind an account to its key");
    store_conn_release(c);
    return r;
}

static bool load_one(const char *sid, const char *key, int64_t created, void *arg)
{
    if (!sid_valid(sid, "AC")) return true;
    return bound_add(arg, sid, key, created) != NULL;
}

static int load_bindings(keyauth *k, char *err, size_t errlen)
{
    store_conn *c = store_conn_acquire(k->a->store);
    store_status r;
    if (!c) {
        snprintf(err, errlen, "no database connection");
        return -1;
    }
    r = store_account_key_each(c, KEYAUTH_MAX_ACCOUNTS, load_one, k);
    store_conn_release(c);
    if (r != STORE_OK) {
        snprintf(err, errlen, "cannot read account_keys (or out of memory)");
        return -1;
    }
    return 0;
}

/* ---- the look-up (engine thread) ---- */

static void ask_free(ask *q)
{
    if (!q) return;
    if (q->key) OPENSSL_cleanse(q->key, strlen(q->key));
    free(q->key);
    free(q);
}

static void on_me(loop *l, void *arg, const kaphila_result *res)
{
    ask *q = arg;
    keyauth *k = q->k;
    int verdict_now = -1;
    (void)l;
    /* Kaphila's /api/me: 200 {success: true, apiKey: {…}} for a good key,
     * 401 for an unknown one. Anything else (5xx, no answer) says nothing
     * about the key and is not cached. */
    if (res->http_status == 200 && kaphila_ok(res) && res->body &&
        json_is_object(json_object_get(res->body, "apiKey")))
        verdict_now = 1;
    else if (res->http_status == 401 || res->http_status == 403)
        verdict_now = 0;
    pthread_mutex_lock(&k->lock);
    k->pending--;
    if (verdict_now >= 0) {
        verdict *v = verdict_slot(k, q->digest);
        memcpy(v->digest, q->digest, DIGEST_LEN);
        v->ok = verdict_now == 1;
        v->expires_ms = timefmt_mono_ms() + (v->ok ? KEYAUTH_OK_TTL_MS : KEYAUTH_BAD_TTL_MS);
    }
    pthread_mutex_unlock(&k->lock);
    metrics_inc(k->a->metrics, "twigate_kaphila_key_checks_total",
                verdict_now == 1 ? "outcome=\"accepted\"" : verdict_now == 0 ? "outcome=\"refused\""
                                                                  : "outcome=\"error\"", 1);
    if (verdict_now >= 0) {
        http_redispatch(q->r);
    } else {
        log_warn("keyauth", "Kaphila's /api/me did not answer for a key (%s); 503",
                 kaphila_outcome(res));
        http_reply_error_h(q->r, 20503, 503, "Kaphila could not check the credentials; retry",
                           retry_soon);
    }
    ask_free(q);
}

static void ask_start(engine *e, void *arg)
{
    ask *q = arg;
    if (engine_kaphila_key(e, q->key, "GET", "/api/me", NULL, on_me, q) != 0) {
        pthread_mutex_lock(&q->k->lock);
        q->k->pending--;
        pthread_mutex_unlock(&q->k->lock);
        http_reply_error_h(q->r, 20503, 503, "Kaphila could not check the credentials; retry",
                           retry_soon);
        ask_free(q);
    }
}

/* ---- the entry (MHD threads) ---- */

static const config_account *refuse(keyauth *k, http_req *r, const unsigned char *addr,
                                    bool count, const char *why)
{
    if (count && addr) {
        pthread_mutex_lock(&k->lock);
        fails_add(k, addr, timefmt_mono_ms());
        pthread_mutex_unlock(&k->lock);
    }
    log_info("keyauth", "authentication failed for %s (%s)", http_path(r), why);
    http_reply_error_h(r, 20003, 401, "Authenticate", www_auth);
    return NULL;
}

const config_account *keyauth_auth(keyauth *k, http_req *r, const char *sid)
{
    const char *user = NULL, *pass = NULL;
    unsigned char addr_buf[16], d[DIGEST_LEN], *addr = NULL;
    int64_t now = timefmt_mono_ms();
    bound *b;
    int v;

    if (http_peer_addr(r, addr_buf)) addr = addr_buf;
    if (addr) {
        pthread_mutex_lock(&k->lock);
        bool blocked = fails_blocked(k, addr, now);
        pthread_mutex_unlock(&k->lock);
        if (blocked) {
            log_info("keyauth", "too many failed attempts from this client; 429");
            http_reply_error_h(r, 20429, 429, "Too many failed authentication attempts",
                               retry_after);
            return NULL;
        }
    }
    /* The user name is the account SID of the path, as for file accounts;
     * the password is the Kaphila key. */
    if (!http_basic_auth(r, &user, &pass) || !sid_valid(sid, "AC") || strcmp(user, sid) != 0 ||
        !*pass || strlen(pass) > KEYAUTH_MAX_KEY_LEN || !digest_of(pass, d))
        return refuse(k, r, addr, true, "not a SID and a key");

    pthread_mutex_lock(&k->lock);
    b = bound_find(k, sid);
    if (b && CRYPTO_memcmp(b->digest, d, DIGEST_LEN) != 0) {
        pthread_mutex_unlock(&k->lock);
        return refuse(k, r, addr, true, "the SID is bound to another key");
    }
    v = verdict_get(k, d, now);
    if (v == 0) {
        pthread_mutex_unlock(&k->lock);
        return refuse(k, r, addr, true, "Kaphila refused the key");
    }
    if (v == 1) {
        if (!b) {
            bool same = false;
            if (k->n_bound >= KEYAUTH_MAX_ACCOUNTS) {
                pthread_mutex_unlock(&k->lock);
                log_error("keyauth", "KEYAUTH_MAX_ACCOUNTS (%d) accounts bound; refusing a new one",
                          KEYAUTH_MAX_ACCOUNTS);
                http_reply_error_h(r, 20003, 401,
                                   "Authenticate: no more Kaphila-key accounts can be added",
                                   www_auth);
                return NULL;
            }
            store_status st = store_bind(k, sid, pass, timefmt_now_ms(), &same);
            if (st == STORE_OK && same) b = bound_add(k, sid, pass, timefmt_now_ms());
            pthread_mutex_unlock(&k->lock);
            if (st != STORE_OK || (same && !b)) {
                http_reply_error(r, 20503, 503, "The account could not be recorded; retry");
                return NULL;
            }
            if (!same) return refuse(k, r, addr, true, "the SID is bound to another key");
            log_info("keyauth", "account %s bound to its Kaphila key", sid);
            return &b->acct;
        }
        pthread_mutex_unlock(&k->lock);
        return &b->acct;
    }
    /* Not known: ask Kaphila, once per request. A request that comes back
     * and still finds nothing (its verdict evicted meanwhile by a flood of
     * other keys) is told to retry rather than asking again. */
    if (http_redispatched(r) || k->pending >= KEYAUTH_MAX_PENDING) {
        pthread_mutex_unlock(&k->lock);
        http_reply_error_h(r, 20503, 503, "Too many credential checks in progress; retry",
                           retry_soon);
        return NULL;
    }
    k->pending++;
    pthread_mutex_unlock(&k->lock);
    ask *q = calloc(1, sizeof *q);
    if (q) {
        q->k = k;
        q->r = r;
        q->key = strdup(pass);
        memcpy(q->digest, d, DIGEST_LEN);
    }
    http_suspend(r);
    if (!q || !q->key || !engine_submit(k->a->engine, ask_start, q)) {
        pthread_mutex_lock(&k->lock);
        k->pending--;
        pthread_mutex_unlock(&k->lock);
        ask_free(q);
        http_reply_error_h(r, 20503, 503, "Too many credential checks in progress; retry",
                           retry_soon);
    }
    return NULL;
}

const config_account *keyauth_account(void *ctx, const char *sid)
{
    keyauth *k = ctx;
    if (!k || !sid) return NULL;
    pthread_mutex_lock(&k->lock);
    bound *b = bound_find(k, sid);
    pthread_mutex_unlock(&k->lock);
    return b ? &b->acct : NULL;
}

/* ---- lifecycle ---- */

keyauth *keyauth_create(app *a, char *err, size_t errlen)
{
    keyauth *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    k->a = a;
    pthread_mutex_init(&k->lock, NULL);
    if (load_bindings(k, err, errlen) != 0) {
        keyauth_destroy(k);
        return NULL;
    }
    return k;
}

void keyauth_destroy(keyauth *k)
{
    if (!k) return;
    for (size_t i = 0; i < BOUND_BUCKETS; i++)
        for (bound *b = k->bound[i], *n; b; b = n) {
            n = b->next;
            OPENSSL_cleanse(b->acct.auth_token, strlen(b->acct.auth_token));
            free(b->acct.auth_token);
            free(b);
        }
    OPENSSL_cleanse(k->cache, sizeof k->cache);
    pthread_mutex_destroy(&k->lock);
    free(k);
}
