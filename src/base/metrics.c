/* metrics.c — a small fixed-capacity series table behind one mutex. Updates
 * are a hash lookup and an add; at twigate's request rates the lock is not
 * contended enough to matter (measured in bench/, see docs/performance.md). */
#include "base/metrics.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

#define NAME_MAX_LEN   64
#define LABELS_MAX_LEN 160
#define N_BUCKETS      14

static const double bucket_le[N_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30,
};

typedef enum { K_COUNTER, K_GAUGE, K_HIST } kind;

typedef struct series {
    char   name[NAME_MAX_LEN];
    char   labels[LABELS_MAX_LEN];
    kind   k;
    double value;                 /* counter/gauge value; histogram sum */
    unsigned long long count;     /* histogram count */
    unsigned long long buckets[N_BUCKETS];
    int    used;
} series;

struct metrics {
    pthread_mutex_t lock;
    series          tab[METRICS_MAX_SERIES * 2];   /* open addressing, half full at most */
    size_t          n;
    unsigned long long dropped;
};

static const struct { const char *name, *help; } helps[] = {
    {"twigate_http_requests_total", "REST and internal HTTP requests by route and status"},
    {"twigate_http_request_seconds", "HTTP request latency by route"},
    {"twigate_calls_total", "Calls reaching a status"},
    {"twigate_live_calls", "Calls not yet in a terminal state"},
    {"twigate_kaphila_requests_total", "Kaphila API requests by endpoint and outcome"},
    {"twigate_kaphila_request_seconds", "Kaphila API latency by endpoint"},
    {"twigate_webhooks_total", "Customer webhook deliveries by kind and outcome (Twilio error code)"},
    {"twigate_webhook_seconds", "Customer webhook latency by kind"},
    {"twigate_twiml_fetch_seconds", "Time to fetch a TwiML document"},
    {"twigate_outbox_pending", "Webhook deliveries written but not yet done"},
    {"twigate_outbox_oldest_seconds", "Age of the oldest pending delivery"},
    {"twigate_kaphila_events_total", "Kaphila events received by name"},
    {"twigate_sqlite_busy_total", "Statements that gave up on an SQLite lock after the busy timeout (monotonic)"},
    {"twigate_sqlite_checkpoints_total", "WAL checkpoint passes, by what started them: the WAL's growth or the one-second timer"},
    {"twigate_sqlite_wal_pages", "Length of the SQLite write-ahead log, in pages, at the last checkpoint"},
    {"twigate_call_cache_hits_total", "Call fetches answered from the cache of ended calls' JSON"},
    {"twigate_call_cache_misses_total", "Call fetches that read the database (not cached, live, or another account's)"},
    {"twigate_call_cache_entries", "Ended calls' JSON bodies held in the call cache"},
    {"twigate_console_stream_queries_total", "Reads of an account's newest calls for a console event stream (only after calls changed)"},
    {"twigate_budget_used", "Kaphila requests counted in the key's current window (sent, or answered within it), by key label"},
    {"twigate_budget_left", "Kaphila requests left in the key's window (-1 = unlimited), by key label"},
    {"twigate_dial_queue_depth", "Calls waiting in the key's queue to be dialled (Twilio's queued)"},
    {"twigate_dial_queue_oldest_seconds", "How long the oldest call in the key's queue has waited"},
    {"twigate_kaphila_429_total", "429s Kaphila answered although the budget allowed the request (retried), by key and endpoint"},
    {"twigate_queue_full_total", "Creates refused with 22005: the key's queue would wait longer than limits.max_queue_time_s"},
    {"twigate_budget_overflow_total", "Kaphila requests sent without a budget: more distinct keys than the budget tracks"},
    {"twigate_reconciled_total", "Calls settled by the reconciler (outcome: ended, answered, adopted, dropped, unowned)"},
    {"twigate_storage_errors_total", "Database writes that failed (kind: full, readonly, io, corrupt)"},
    {"twigate_kaphila_key_checks_total", "Kaphila-key credentials checked with Kaphila's /api/me, by verdict"},
    {"twigate_http_connections_refused_total", "Connections refused over listen.max_per_client"},
    {"twigate_http_head_timeouts_total", "Connections closed: request head not complete within its deadline"},
    {"twigate_timer_lateness_seconds", "How late the engine's timers (Pause, TimeLimit, retries) fire after their due time"},
    {"twigate_notifications_total", "Notifications (Twilio debugger entries) recorded, by error code"},
    {"twigate_metrics_dropped_total", "Series dropped because the table was full"},
};

metrics *metrics_create(void)
{
    metrics *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_destroy(metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static size_t hash(const char *a, const char *b)
{
    size_t h = 1469598103934665603ULL;
    for (; *a; a++) h = (h ^ (unsigned char)*a) * 1099511628211ULL;
    h = (h ^ '|') * 1099511628211ULL;
    for (; *b; b++) h = (h ^ (unsigned char)*b) * 1099511628211ULL;
    return h;
}

/* Caller holds the lock. NULL when full. */
static series *find(metrics *m, const char *name, const char *labels, kind k)
{
    const size_t cap = sizeof m->tab / sizeof m->tab[0];
    size_t i = hash(name, labels) % cap;
    if (!labels) labels = "";
    for (size_t probe = 0; probe < cap; probe++, i = (i + 1) % cap) {
        series *s = &m->tab[i];
        if (!s->used) {
            if (m->n >= METRICS_MAX_SERIES) { m->dropped++; return NULL; }
            s->used = 1;
            s->k = k;
            snprintf(s->name, sizeof s->name, "%s", name);
            snprintf(s->labels, sizeof s->labels, "%s", labels);
            m->n++;
            return s;
        }
        if (!strcmp(s->name, name) && !strcmp(s->labels, labels)) return s;
    }
    return NULL;
}

void metrics_inc(metrics *m, const char *name, const char *labels, double v)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    series *s = find(m, name, labels ? labels : "", K_COUNTER);
    if (s) s->value += v;
    pthread_mutex_unlock(&m->lock);
}

void metrics_gauge(metrics *m, const char *name, const char *labels, double v)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    series *s = find(m, name, labels ? labels : "", K_GAUGE);
    if (s) s->value = v;
    pthread_mutex_unlock(&m->lock);
}

void metrics_counter_set(metrics *m, const char *name, const char *labels, double v)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    series *s = find(m, name, labels ? labels : "", K_COUNTER);
    if (s && v > s->value) s->value = v;
    pthread_mutex_unlock(&m->lock);
}

void metrics_observe(metrics *m, const char *name, const char *labels, double seconds)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    series *s = find(m, name, labels ? labels : "", K_HIST);
    if (s) {
        s->value += seconds;
        s->count++;
        for (int b = 0; b < N_BUCKETS; b++)
            if (seconds <= bucket_le[b]) s->buckets[b]++;
    }
    pthread_mutex_unlock(&m->lock);
}

static int by_name(const void *a, const void *b)
{
    const series *x = *(series *const *)a, *y = *(series *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

static const char *help_for(const char *name)
{
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
        if (!strcmp(helps[i].name, name)) return helps[i].help;
    return "twigate metric";
}

char *metrics_render(metrics *m, size_t *len)
{
    const size_t cap = sizeof m->tab / sizeof m->tab[0];
    series **sorted = NULL, *copy = NULL;
    size_t n = 0;
    buf b;
    bool ok = true;
    char *out = NULL;
    const char *last = "";

    buf_init(&b, 8 * 1024 * 1024);
    copy = malloc(sizeof *copy * METRICS_MAX_SERIES);
    sorted = malloc(sizeof *sorted * METRICS_MAX_SERIES);
    if (!copy || !sorted) goto out;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < cap && n < METRICS_MAX_SERIES; i++)
        if (m->tab[i].used) copy[n++] = m->tab[i];
    unsigned long long dropped = m->dropped;
    pthread_mutex_unlock(&m->lock);
    for (size_t i = 0; i < n; i++) sorted[i] = &copy[i];
    qsort(sorted, n, sizeof *sorted, by_name);

    for (size_t i = 0; ok && i < n; i++) {
        const series *s = sorted[i];
        const char *sep = s->labels[0] ? "," : "";
        if (strcmp(last, s->name)) {
            static const char *const kinds[] = {"counter", "gauge", "histogram"};
            ok = buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", s->name, help_for(s->name),
                            s->name, kinds[s->k]) == BUF_OK;
            last = s->name;
        }
        if (s->k != K_HIST) {
            ok = ok && buf_printf(&b, "%s%s%s%s %.17g\n", s->name, s->labels[0] ? "{" : "",
                                  s->labels, s->labels[0] ? "}" : "", s->value) == BUF_OK;
            continue;
        }
        for (int k = 0; ok && k < N_BUCKETS; k++)
            ok = buf_printf(&b, "%s_bucket{%s%sle=\"%g\"} %llu\n", s->name, s->labels, sep,
                            bucket_le[k], s->buckets[k]) == BUF_OK;
        ok = ok && buf_printf(&b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n%s_sum%s%s%s %.17g\n"
                              "%s_count%s%s%s %llu\n", s->name, s->labels, sep, s->count,
                              s->name, s->labels[0] ? "{" : "", s->labels,
                              s->labels[0] ? "}" : "", s->value, s->name,
                              s->labels[0] ? "{" : "", s->labels, s->labels[0] ? "}" : "",
                              s->count) == BUF_OK;
    }
    if (ok) ok = buf_printf(&b, "# HELP twigate_metrics_dropped_total %s\n"
                               "# TYPE twigate_metrics_dropped_total counter\n"
                               "twigate_metrics_dropped_total %llu\n",
                            help_for("twigate_metrics_dropped_total"), dropped) == BUF_OK;
    if (ok) {
        *len = b.len;
        out = buf_steal(&b);
    }
out:
    buf_fini(&b);
    free(copy);
    free(sorted);
    return out;
}
