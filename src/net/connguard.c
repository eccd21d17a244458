/* connguard.c — per-client connection counts, head deadlines, the sweep.
 *
 * Map: address keys and the exempt list; the client table (a hash of
 * address → open connections; an entry lives while it has one); the list of
 * open connections; the sweep thread (deadlines, the rate-limited log
 * lines); create/destroy. */
#include "net/connguard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/timefmt.h"

/* Buckets of the client table. Entries are bounded by the open connections
 * (limits.max_connections), so chains stay short at the sizes we allow. */
#define CLIENT_BUCKETS 4096
/* The sweep runs this often at most, and at least four times per head
 * deadline, so a connection outlives its deadline by a quarter at most. */
#define SWEEP_MAX_MS 250
#define SWEEP_MIN_MS 20

typedef struct client {
    struct client *next;
    unsigned char  key[16];
    int            n;          /* open connections */
} client;

struct connguard_conn {
    connguard_conn *prev, *next;
    unsigned char   key[16];
    bool            counted;   /* in the client table (not exempt) */
    bool            shut;      /* the sweep has shut it down */
    bool            handed;    /* admitted, not yet claimed (in g->handed) */
    int             fd;
    atomic_llong    deadline_ms;   /* monotonic; 0 = no head being awaited */
    connguard_conn *hnext;     /* in the guard's handed list until claimed */
};

struct connguard {
    int             max_per_client;
    int             head_timeout_ms;
    int             idle_ms;
    unsigned char   exempt[CONNGUARD_MAX_EXEMPT][16];
    int             n_exempt;
    pthread_mutex_t lock;      /* clients, conns, n_open, stop */
    pthread_cond_t  wake;
    client         *clients[CLIENT_BUCKETS];
    connguard_conn *conns;
    connguard_conn *handed;    /* admitted, not yet claimed by their server thread */
    uint64_t        n_open;
    bool            stop;
    pthread_t       thread;
    bool            thread_started;
    atomic_uint_fast64_t refused, head_timeouts;
};

/* ---- address keys ---- */

/* IPv4 as the v4-mapped IPv6 form, so a dual-stack listener counts a
 * client the same whichever way it arrived. */
static bool key_of(const struct sockaddr *sa, unsigned char key[16])
{
    if (!sa) return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &in->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

bool connguard_parse_addr(const char *s, size_t n, unsigned char key[16])
{
    char tmp[INET6_ADDRSTRLEN];
    struct in_addr v4;
    if (n == 0 || n >= sizeof tmp) return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET, tmp, &v4) == 1) {
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &v4, 4);
        return true;
    }
    return inet_pton(AF_INET6, tmp, key) == 1;
}

static bool exempt(const connguard *g, const unsigned char key[16])
{
    for (int i = 0; i < g->n_exempt; i++)
        if (memcmp(g->exempt[i], key, 16) == 0) return true;
    return false;
}

static size_t bucket(const unsigned char key[16])
{
    uint64_t h = 1469598103934665603ULL;      /* FNV-1a */
    for (int i = 0; i < 16; i++) h = (h ^ key[i]) * 1099511628211ULL;
    return (size_t)(h % CLIENT_BUCKETS);
}

static client **client_slot(connguard *g, const unsigned char key[16])
{
    client **p = &g->clients[bucket(key)];
    while (*p && memcmp((*p)->key, key, 16) != 0) p = &(*p)->next;
    return p;
}

static void fmt_key(const unsigned char key[16], char *out, size_t n)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(key, mapped, 12) == 0) inet_ntop(AF_INET, key + 12, out, (socklen_t)n);
    else inet_ntop(AF_INET6, key, out, (socklen_t)n);
}

/* ---- the MHD-facing calls ---- */

bool connguard_accept(connguard *g, const struct sockaddr *sa, socklen_t len)
{
    unsigned char key[16];
    bool ok = true;
    (void)len;
    if (!g->max_per_client || !key_of(sa, key) || exempt(g, key)) return true;
    pthread_mutex_lock(&g->lock);
    client *c = *client_slot(g, key);
    /* The check and the count (connguard_open) are apart, so pool threads
     * accepting at the same moment may pass a client one connection each
     * over its limit: a bound of listen.threads, not a leak. */
    if (c && c->n >= g->max_per_client) ok = false;
    pthread_mutex_unlock(&g->lock);
    if (!ok) atomic_fetch_add(&g->refused, 1);
    return ok;
}

connguard_conn *connguard_open(connguard *g, const struct sockaddr *sa, int fd)
{
    connguard_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = fd;
    atomic_init(&c->deadline_ms, timefmt_mono_ms() + g->head_timeout_ms);
    pthread_mutex_lock(&g->lock);
    if (g->max_per_client && key_of(sa, c->key) && !exempt(g, c->key)) {
        client **slot = client_slot(g, c->key);
        if (!*slot && (*slot = calloc(1, sizeof **slot)))
            memcpy((*slot)->key, c->key, 16);
        if (*slot) {
            (*slot)->n++;
            c->counted = true;
        }
    }
    c->next = g->conns;
    if (g->conns) g->conns->prev = c;
    g->conns = c;
    g->n_open++;
    pthread_mutex_unlock(&g->lock);
    return c;
}

void connguard_head_done(connguard_conn *c)
{
    if (c) atomic_store_explicit(&c->deadline_ms, 0, memory_order_relaxed);
}

void connguard_request_done(connguard *g, connguard_conn *c)
{
    if (c) atomic_store_explicit(&c->deadline_ms, timefmt_mono_ms() + g->idle_ms,
                                 memory_order_relaxed);
}

/* Uncounts c and frees it (under g->lock). */
static void forget_locked(connguard *g, connguard_conn *c)
{
    if (c->counted) {
        client **slot = client_slot(g, c->key);
        if (*slot && --(*slot)->n == 0) {
            client *dead = *slot;
            *slot = dead->next;
            free(dead);
        }
    }
    if (c->prev) c->prev->next = c->next;
    else g->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    g->n_open--;
    free(c);
}

void connguard_close(connguard *g, connguard_conn *c)
{
    if (!c) return;
    pthread_mutex_lock(&g->lock);
    forget_locked(g, c);
    pthread_mutex_unlock(&g->lock);
}

/* Takes fd's handle out of the handed list (under g->lock). */
static connguard_conn *unhand(connguard *g, int fd)
{
    for (connguard_conn **p = &g->handed; *p; p = &(*p)->hnext) {
        if ((*p)->fd != fd) continue;
        connguard_conn *c = *p;
        *p = c->hnext;
        c->hnext = NULL;
        c->handed = false;
        return c;
    }
    return NULL;
}

connguard_conn *connguard_admit(connguard *g, const struct sockaddr *sa, int fd, int max_open)
{
    /* A handle still listed under a descriptor the kernel hands out again
     * belongs to a connection its server dropped without a word (out of
     * memory): it is given back before anything is counted. */
    pthread_mutex_lock(&g->lock);
    connguard_conn *stale = unhand(g, fd);
    bool full = max_open > 0 && g->n_open - (stale ? 1 : 0) >= (uint64_t)max_open;
    pthread_mutex_unlock(&g->lock);
    connguard_close(g, stale);
    if (full || !connguard_accept(g, sa, sizeof(struct sockaddr_storage))) return NULL;
    connguard_conn *c = connguard_open(g, sa, fd);
    if (!c) return NULL;
    pthread_mutex_lock(&g->lock);
    c->hnext = g->handed;
    c->handed = true;
    g->handed = c;
    pthread_mutex_unlock(&g->lock);
    return c;
}

connguard_conn *connguard_claim(connguard *g, int fd)
{
    pthread_mutex_lock(&g->lock);
    connguard_conn *c = unhand(g, fd);
    pthread_mutex_unlock(&g->lock);
    return c;
}

void connguard_get_stats(connguard *g, connguard_stats *out)
{
    out->refused = atomic_load(&g->refused);
    out->head_timeouts = atomic_load(&g->head_timeouts);
    pthread_mutex_lock(&g->lock);
    out->open = g->n_open;
    pthread_mutex_unlock(&g->lock);
}

/* ---- the sweep ---- */

/* Forgets a handle its server never claimed (under g->lock). */
static void drop_unclaimed(connguard *g, connguard_conn *c)
{
    for (connguard_conn **p = &g->handed; *p; p = &(*p)->hnext)
        if (*p == c) {
            *p = c->hnext;
            break;
        }
    forget_locked(g, c);
}

/* Shuts down every connection past its deadline. The socket is only shut
 * down, never closed: libmicrohttpd sees the end of the stream, closes it
 * in its own thread and calls connguard_close, which needs the lock held
 * here — so the descriptor cannot have been closed and reused meanwhile.
 * That holds only for a claimed handle. One still unclaimed past its
 * deadline is a connection its server dropped without a word (libmicrohttpd
 * refusing it in its worker, or out of memory): its descriptor may be
 * anyone's by now (a client's socket, another connection's), so the handle
 * is only forgotten. Should the server still take the connection later, it
 * finds no handle and opens a fresh one (httpd.c: conn_cb). */
static uint64_t sweep(connguard *g, int64_t now)
{
    uint64_t n = 0;
    for (connguard_conn *c = g->conns, *next; c; c = next) {
        next = c->next;
        long long dl = atomic_load_explicit(&c->deadline_ms, memory_order_relaxed);
        if (c->shut || !dl || now < dl) continue;
        if (c->handed) {
            drop_unclaimed(g, c);
            continue;
        }
        shutdown(c->fd, SHUT_RDWR);
        c->shut = true;
        n++;
    }
    return n;
}

static void *sweep_main(void *arg)
{
    connguard *g = arg;
    int period = g->head_timeout_ms / 4;
    uint64_t seen_refused = 0, seen_timeouts = 0;
    /* The first refusals are logged at the next sweep; later ones at most
     * once per interval. */
    int64_t last_log = timefmt_mono_ms() - CONNGUARD_LOG_INTERVAL_MS;
    if (period > SWEEP_MAX_MS) period = SWEEP_MAX_MS;
    if (period < SWEEP_MIN_MS) period = SWEEP_MIN_MS;
    pthread_setname_np(pthread_self(), "http-guard");
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)period * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&g->wake, &g->lock, &ts);
        if (g->stop) break;
        int64_t now = timefmt_mono_ms();
        atomic_fetch_add(&g->head_timeouts, sweep(g, now));
        if (now - last_log < CONNGUARD_LOG_INTERVAL_MS) continue;
        if (atomic_load(&g->refused) == seen_refused &&
            atomic_load(&g->head_timeouts) == seen_timeouts) continue;
        /* One line per interval, with counts: a flood of refusals must not
         * become a flood of log lines. */
        uint64_t r = atomic_load(&g->refused), t = atomic_load(&g->head_timeouts);
        if (r != seen_refused) {
            char top[INET6_ADDRSTRLEN] = "";
            int most = 0;
            for (size_t b = 0; b < CLIENT_BUCKETS; b++)
                for (client *c = g->clients[b]; c; c = c->next)
                    if (c->n > most) { most = c->n; fmt_key(c->key, top, sizeof top); }
            log_warn("http", "refused %llu connection(s) over listen.max_per_client = %d since "
                     "the last report (busiest client now: %s with %d)",
                     (unsigned long long)(r - seen_refused), g->max_per_client,
                     *top ? top : "-", most);
        }
        if (t != seen_timeouts)
            log_warn("http", "closed %llu connection(s) whose request head was not complete in "
                     "time (listen.head_timeout_ms = %d) since the last report",
                     (unsigned long long)(t - seen_timeouts), g->head_timeout_ms);
        seen_refused = r;
        seen_timeouts = t;
        last_log = now;
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/* ---- lifecycle ---- */

connguard *connguard_create(int max_per_client, int head_timeout_ms, int idle_ms,
                            const char *exempt_list, char *err, size_t errlen)
{
    connguard *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->max_per_client = max_per_client;
    g->head_timeout_ms = head_timeout_ms;
    g->idle_ms = idle_ms;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->wake, NULL);
    for (const char *p = exempt_list ? exempt_list : ""; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t')) p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n) {
            if (g->n_exempt >= CONNGUARD_MAX_EXEMPT) {
                snprintf(err, errlen, "more than %d exempt addresses", CONNGUARD_MAX_EXEMPT);
                goto fail;
            }
            if (!connguard_parse_addr(p, n, g->exempt[g->n_exempt])) {
                snprintf(err, errlen, "'%.*s' is not an IP address", (int)(n > 64 ? 64 : n), p);
                goto fail;
            }
            g->n_exempt++;
        }
        if (!e) break;
        p = e + 1;
    }
    if (pthread_create(&g->thread, NULL, sweep_main, g) != 0) {
        snprintf(err, errlen, "cannot start the connection sweep thread");
        goto fail;
    }
    g->thread_started = true;
    return g;
fail:
    connguard_destroy(g);
    return NULL;
}

void connguard_destroy(connguard *g)
{
    if (!g) return;
    if (g->thread_started) {
        pthread_mutex_lock(&g->lock);
        g->stop = true;
        pthread_cond_signal(&g->wake);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->thread, NULL);
    }
    /* MHD is stopped before this, and has closed (and reported) every
     * connection; whatever remains is left over from an aborted start. */
    for (connguard_conn *c = g->conns, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    for (size_t b = 0; b < CLIENT_BUCKETS; b++)
        for (client *c = g->clients[b], *n; c; c = n) {
            n = c->next;
            free(c);
        }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->lock);
    free(g);
}
