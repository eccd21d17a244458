/* console_stream.c — the "console" thread: the live call streams (SSE) and
 * the jobs that wait on another server: the simulator's control API and
 * Kaphila's /api/me (console.h has the design). Streams and jobs are
 * added by HTTP threads under console.lock; only the console thread frees a
 * stream, once its connection has let go (gone) and it has taken it off
 * the list. */
#include "console_int.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "store/calljson.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/sid.h"
#include "store/store.h"
#include "base/timefmt.h"

struct cstream {
    console        *c;
    http_stream    *hs;                  /* our reference; NULL until open succeeded */
    char            account[SID_SIZE];
    pthread_mutex_t lock;                /* guards out, len, off, closed, gone */
    char           *out;                 /* CONSOLE_STREAM_BUF bytes */
    size_t          len, off;            /* unsent bytes are out[off, len) */
    bool            closed;              /* send what is left? no: end at once */
    bool            gone;                /* the connection let go (httpd.h done) */
    /* The console thread's alone: */
    int64_t         last_ms;             /* last append, for the heartbeat */
    bool            fresh;               /* not read yet: read at once */
    uint64_t        seq;                 /* store_call_changes at the last read */
    int64_t         queried_ms;          /* when */
    struct { char sid[SID_SIZE]; int64_t updated; } seen[CONSOLE_STREAM_CALLS];
    int             n_seen;
};

struct console_job {
    http_req *r;
    char      sid[SID_SIZE];
    char      action[8];                 /* "" = transcript, "digits", "hangup", "me" */
    char      digits[CONSOLE_MAX_DIGITS + 1];
    char     *bearer;                    /* "me": the account's Kaphila key (secret, wiped) */
};

static void job_free(console_job *j)
{
    if (j->bearer) {
        memset(j->bearer, 0, strlen(j->bearer));
        free(j->bearer);
    }
    free(j);
}

static const char *const json_headers[] = {
    "Cache-Control", "no-store", "X-Content-Type-Options", "nosniff", NULL};

/* Wakes the console thread; an eventfd keeps the wake-up until it reads. */
static void console_wake(console *c)
{
    uint64_t one = 1;
    ssize_t n = write(c->wake_fd, &one, sizeof one);
    (void)n;   /* EAGAIN: the counter is full, so a wake-up is pending anyway */
}

/* The store's change hook, on the writer's thread after a transaction that
 * wrote call rows. A load first: while the thread is not waiting for changes
 * (it is coalescing a burst, or has no stream) a commit only reads a shared
 * cache line; the thread is woken once per wait, not once per commit. */
static void calls_changed(void *arg)
{
    console *c = arg;
    if (atomic_load(&c->armed) && atomic_exchange(&c->armed, false)) console_wake(c);
}

/* ---- streams ---- */

static long stream_read(void *ctx, char *dst, size_t max)
{
    cstream *s = ctx;
    long n = 0;
    pthread_mutex_lock(&s->lock);
    if (s->closed) {
        n = -2;   /* close the connection: EventSource reconnects, the drain ends */
    } else if (s->off < s->len) {
        size_t k = s->len - s->off < max ? s->len - s->off : max;
        memcpy(dst, s->out + s->off, k);
        s->off += k;
        if (s->off == s->len) s->off = s->len = 0;
        n = (long)k;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void stream_done(void *ctx)
{
    cstream *s = ctx;
    console *c = s->c;   /* s may be freed as soon as it is gone */
    pthread_mutex_lock(&s->lock);
    s->gone = true;
    pthread_mutex_unlock(&s->lock);
    /* To free it. Never c->lock here: console_stop holds it while it wakes
     * the connections. */
    console_wake(c);
}

static void stream_free(cstream *s)
{
    http_stream_release(s->hs);
    pthread_mutex_destroy(&s->lock);
    free(s->out);
    free(s);
}

/* Appends text and wakes the connection; a browser that has let
 * CONSOLE_STREAM_BUF bytes pile up is cut off instead. */
static void stream_push(cstream *s, const char *text, size_t n)
{
    bool wake = false;
    pthread_mutex_lock(&s->lock);
    if (!s->closed && !s->gone) {
        if (s->len - s->off + n > CONSOLE_STREAM_BUF) {
            s->closed = true;
            log_warn("console", "stream of %s cut off: the browser is not reading", s->account);
        } else {
            if (s->len + n > CONSOLE_STREAM_BUF) {
                memmove(s->out, s->out + s->off, s->len - s->off);
                s->len -= s->off;
                s->off = 0;
            }
            memcpy(s->out + s->len, text, n);
            s->len += n;
        }
        wake = true;
    }
    pthread_mutex_unlock(&s->lock);
    s->last_ms = timefmt_mono_ms();
    if (wake) http_stream_wake(s->hs);
}

void console_stream_open(console *c, http_req *r, const char *account_sid)
{
    static const char *const h[] = {"Cache-Control", "no-store", "X-Accel-Buffering", "no",
                                    "X-Content-Type-Options", "nosniff", NULL};
    cstream *s = calloc(1, sizeof *s);
    if (s && !(s->out = malloc(CONSOLE_STREAM_BUF))) {
        free(s);
        s = NULL;
    }
    if (!s) {
        http_reply_error(r, 20500, 500, NULL);
        return;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->c = c;
    s->fresh = true;
    snprintf(s->account, sizeof s->account, "%s", account_sid);
    /* The browser reconnects 2 s after a cut (EventSource's retry). */
    s->len = (size_t)snprintf(s->out, CONSOLE_STREAM_BUF, "retry: 2000\n\n");

    pthread_mutex_lock(&c->lock);
    bool room = !c->stopping && c->n_streams < CONSOLE_MAX_STREAMS;
    if (room) c->streams[c->n_streams++] = s;
    pthread_mutex_unlock(&c->lock);
    if (!room) {
        stream_free(s);
        http_reply_error(r, 20503, 503, "Too many console streams open");
        return;
    }
    /* From here the console thread may look at s; hs is set under s->lock
     * so that it never sees a half-made stream. */
    pthread_mutex_lock(&s->lock);
    s->hs = http_reply_stream(r, "text/event-stream", CONSOLE_STREAM_IDLE_S, stream_read,
                              stream_done, s, h);
    if (!s->hs) s->gone = true;       /* answered 500; the thread frees s */
    pthread_mutex_unlock(&s->lock);
    console_wake(c);
}

/* One stream's read: the account's newest calls, diffed with the last
 * read's. False when the store did not answer. */
static bool stream_poll(console *c, store_conn *db, cstream *s, store_call *rows)
{
    store_call_filter f = {.account_sid = s->account};
    int n = 0;
    metrics_inc(c->a->metrics, "twigate_console_stream_queries_total", NULL, 1);
    if (store_call_list(db, &f, 0, 0, CONSOLE_STREAM_CALLS, rows, &n) != STORE_OK) return false;
    /* Oldest first, so the browser applies them in order. */
    for (int i = n - 1; i >= 0; i--) {
        bool same = false;
        for (int k = 0; k < s->n_seen && !same; k++)
            same = !strcmp(s->seen[k].sid, rows[i].sid) && s->seen[k].updated == rows[i].date_updated;
        if (same) continue;
        json_t *j = calljson_call(&rows[i]);
        char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (txt) {
            buf b;
            buf_init(&b, CONSOLE_STREAM_BUF);
            if (buf_printf(&b, "event: call\ndata: %s\n\n", txt) == BUF_OK)
                stream_push(s, buf_str(&b), b.len);
            buf_fini(&b);
            free(txt);
        }
    }
    for (int i = 0; i < n; i++) {
        snprintf(s->seen[i].sid, sizeof s->seen[i].sid, "%s", rows[i].sid);
        s->seen[i].updated = rows[i].date_updated;
        store_call_fini(&rows[i]);
    }
    s->n_seen = n;
    return true;
}

static int64_t earliest(int64_t a, int64_t b)
{
    return a < 0 || b < a ? b : a;
}

/* One pass over the streams: frees those whose connection let go; reads for
 * each stream that is new or whose calls may have changed (the change count
 * moved since its last read), at most once per CONSOLE_QUERY_MS, so a burst
 * of changes is coalesced; sends the heartbeats. Returns when the next pass
 * is due (monotonic ms; -1: only when woken), *n_open the number of streams,
 * *pending whether a change is known and not read yet (its read is due then),
 * *seen the change count the pass went by. */
static int64_t tick(console *c, store_call *rows, int *n_open, bool *pending, uint64_t *seen)
{
    cstream *live[CONSOLE_MAX_STREAMS], *dead[CONSOLE_MAX_STREAMS];
    int n_live = 0, n_dead = 0;

    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n_streams;) {
        cstream *s = c->streams[i];
        pthread_mutex_lock(&s->lock);
        bool gone = s->gone;
        pthread_mutex_unlock(&s->lock);
        if (gone) {
            dead[n_dead++] = s;
            c->streams[i] = c->streams[--c->n_streams];
        } else {
            live[n_live++] = s;
            i++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < n_dead; i++) stream_free(dead[i]);
    *n_open = n_live;
    *pending = false;
    /* Read before the reads: a change committed during them moves it again. */
    uint64_t seq = *seen = store_call_changes(c->a->store);
    int64_t now = timefmt_mono_ms(), next = -1;
    store_conn *db = NULL;
    for (int i = 0; i < n_live; i++) {
        cstream *s = live[i];
        if (s->fresh || (s->seq != seq && now - s->queried_ms >= CONSOLE_QUERY_MS)) {
            if (!db) db = store_conn_acquire(c->a->store);
            s->queried_ms = now;
            if (db && stream_poll(c, db, s, rows)) {
                s->fresh = false;
                s->seq = seq;
            }
        }
        if (s->fresh || s->seq != seq) {
            *pending = true;   /* the store failed, or this read waits for its turn */
            next = earliest(next, s->queried_ms + CONSOLE_QUERY_MS);
        }
        if (now - s->last_ms >= CONSOLE_HEARTBEAT_MS) stream_push(s, ": ping\n\n", 8);
        next = earliest(next, s->last_ms + CONSOLE_HEARTBEAT_MS);
    }
    if (db) store_conn_release(db);
    return next;
}

/* ---- simulator jobs ---- */

void console_job_submit(console *c, http_req *r, const char *call_sid, const char *action,
                        const char *digits, const char *bearer)
{
    console_job *j = calloc(1, sizeof *j);
    bool queued = false;
    if (j && bearer && !(j->bearer = strdup(bearer))) {
        free(j);
        j = NULL;
    }
    if (j) {
        j->r = r;
        snprintf(j->sid, sizeof j->sid, "%s", call_sid);
        snprintf(j->action, sizeof j->action, "%s", action ? action : "");
        snprintf(j->digits, sizeof j->digits, "%s", digits ? digits : "");
        http_suspend(r);
        pthread_mutex_lock(&c->lock);
        if (!c->stopping && c->n_jobs < CONSOLE_MAX_JOBS) {
            c->jobs[c->n_jobs++] = j;
            queued = true;
        }
        pthread_mutex_unlock(&c->lock);
        if (queued) {
            console_wake(c);
            return;
        }
        job_free(j);
    }
    http_reply_error(r, 20503, 503, "The console is busy; try again");
}

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    buf *b = ud;
    return buf_append(b, p, size * n) == BUF_OK ? size * n : 0;
}

/* The transcript shows /makecall's webhookUrl, whose last path segment is
 * the call's event token: a credential (anyone holding it can post events
 * for the call), hidden as in the access log. Returns a new text or NULL. */
static char *hide_tokens(const char *text, size_t len)
{
    json_t *t = json_loadb(text, len, 0, NULL), *rq;
    size_t i;
    char *out = NULL;
    if (!t) return NULL;
    json_array_foreach(json_object_get(t, "requests"), i, rq) {
        json_t *body = json_object_get(rq, "body");
        const char *u = json_string_value(json_object_get(body, "webhookUrl"));
        const char *at = u ? strstr(u, "/kaphila/events/") : NULL;
        if (!at) continue;
        const char *q = strchr(at, '?');
        char hidden[1024];
        snprintf(hidden, sizeof hidden, "%.*s/kaphila/events/(hidden)%s", (int)(at - u), u,
                 q ? q : "");
        json_object_set_new(body, "webhookUrl", json_string(hidden));
    }
    out = json_dumps(t, JSON_COMPACT);
    json_decref(t);
    return out;
}

/* Kaphila's GET /api/me for the credits panel: only the key's counters,
 * never the key. Returns a new text or NULL. */
static char *me_fields(const char *text, size_t len)
{
    json_t *t = json_loadb(text, len, 0, NULL);
    json_t *k = json_object_get(t, "apiKey");
    char *out = NULL;
    if (json_is_object(k)) {
        json_t *o = json_pack("{s:O?, s:O?, s:O?, s:O?, s:O?}", "name", json_object_get(k, "name"),
                              "credits", json_object_get(k, "credits"),
                              "totalCalls", json_object_get(k, "totalCalls"),
                              "successfulCalls", json_object_get(k, "successfulCalls"),
                              "rateLimit", json_object_get(k, "rateLimit"));
        out = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
    }
    json_decref(t);
    return out;
}

static size_t collect(char *p, size_t size, size_t n, void *ud);

static void run_me(console *c, console_job *j)
{
    char url[600], auth[300];
    buf body;
    long status = 0;
    CURLcode rc = CURLE_FAILED_INIT;
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    const config *cfg = app_config(c->a);

    buf_init(&body, CONSOLE_SIM_BODY_MAX);
    snprintf(url, sizeof url, "%s/api/me", c->a->kaphila_url);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", j->bearer);
    if (h && (hdr = curl_slist_append(NULL, auth))) {
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->kaphila_connect_ms);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)cfg->kaphila_timeout_ms);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
        rc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    memset(auth, 0, sizeof auth);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    char *shown = rc == CURLE_OK && status == 200 ? me_fields(buf_str(&body), body.len) : NULL;
    if (shown) {
        http_reply_owned(j->r, 200, "application/json", shown, strlen(shown), json_headers);
    } else {
        log_warn("console", "Kaphila GET /api/me: %s, HTTP %ld", curl_easy_strerror(rc), status);
        http_reply_error(j->r, 20503, 503, "Kaphila did not answer GET /api/me");
    }
    buf_fini(&body);
    job_free(j);
}

static void run_job(console *c, console_job *j)
{
    if (!strcmp(j->action, "me")) {
        run_me(c, j);
        return;
    }
    char url[700];
    buf body;
    long status = 0;
    CURL *h = curl_easy_init();
    CURLcode rc = CURLE_FAILED_INIT;

    buf_init(&body, CONSOLE_SIM_BODY_MAX);
    snprintf(url, sizeof url, "%s/sim/calls/%s%s%s", c->a->kaphila_url, j->sid,
             *j->action ? "/" : "", j->action);
    if (h) {
        char fields[64];
        snprintf(fields, sizeof fields, "Digits=%s", j->digits);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
        curl_easy_setopt(h, CURLOPT_PROXY, "");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
        if (!strcmp(j->action, "digits")) curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, fields);
        else if (*j->action) curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        rc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(h);
    }
    char *shown = rc == CURLE_OK && !*j->action && status == 200 ? hide_tokens(buf_str(&body), body.len)
                                                                   : NULL;
    if (shown) {
        http_reply_owned(j->r, 200, "application/json", shown, strlen(shown), json_headers);
    } else if (rc == CURLE_OK && !*j->action && status == 200) {
        http_reply_error(j->r, 20500, 500, "The simulator's transcript is not JSON");
    } else if (rc == CURLE_OK && status >= 200 && status < 600) {
        http_reply(j->r, (int)status, "application/json", buf_str(&body), body.len, json_headers);
    } else {
        log_warn("console", "simulator request %s failed: %s", url, curl_easy_strerror(rc));
        http_reply_error(j->r, 20503, 503, "The simulator did not answer");
    }
    buf_fini(&body);
    job_free(j);
}

/* ---- the thread ---- */

static void *console_main(void *arg)
{
    console *c = arg;
    store_call *rows = calloc(CONSOLE_STREAM_CALLS, sizeof *rows);
    int64_t next = 0;   /* the next pass over the streams; -1: when woken */
    pthread_setname_np(pthread_self(), "console");

    pthread_mutex_lock(&c->lock);
    while (!c->stopping) {
        if (c->n_jobs) {
            console_job *j = c->jobs[0];
            memmove(c->jobs, c->jobs + 1, (size_t)--c->n_jobs * sizeof *c->jobs);
            pthread_mutex_unlock(&c->lock);
            run_job(c, j);
            pthread_mutex_lock(&c->lock);
            continue;
        }
        pthread_mutex_unlock(&c->lock);
        int live = 0;
        bool pending = false;
        uint64_t seen = 0;
        if (next >= 0 && timefmt_mono_ms() >= next) {
            next = rows ? tick(c, rows, &live, &pending, &seen) : -1;
            /* Nothing waiting to be read: sleep until a writer changes calls.
             * Armed before the count is read again, and writers bump the count
             * before they look at armed, so a change is never slept through. */
            if (live && !pending) {
                atomic_store(&c->armed, true);
                if (store_call_changes(c->a->store) != seen) next = 0;
            }
        }
        int64_t now = timefmt_mono_ms();
        int ms = next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
        struct pollfd p = {.fd = c->wake_fd, .events = POLLIN};
        if (ms != 0 && poll(&p, 1, ms) > 0) {
            uint64_t v;
            ssize_t n = read(c->wake_fd, &v, sizeof v);   /* resets the count */
            (void)n;
        }
        /* Woken (a new or gone stream, a change, a job, the stop), timed out
         * or interrupted: a pass now, which arms again. It reads only what is
         * due, so an extra pass costs nothing. */
        next = 0;
        atomic_store(&c->armed, false);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    free(rows);
    return NULL;
}

console *console_create(app *a, char *err, size_t errlen)
{
    console *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->a = a;
    c->wake_fd = -1;
    pthread_mutex_init(&c->lock, NULL);
    if ((c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (!console_key_init(c)) {
        snprintf(err, errlen, "no random bytes for the CSRF key");
        goto fail;
    }
    if (pthread_create(&c->thread, NULL, console_main, c) != 0) {
        snprintf(err, errlen, "cannot start the console thread: %s", strerror(errno));
        goto fail;
    }
    c->started = true;
    /* Before the engine runs: its commits of call rows wake the streams. */
    store_set_change_hook(a->store, calls_changed, c);
    metrics_inc(a->metrics, "twigate_console_stream_queries_total", NULL, 0);   /* shown from 0 */
    return c;
fail:
    console_destroy(c);
    return NULL;
}

void console_stop(console *c)
{
    if (!c) return;
    console_job *jobs[CONSOLE_MAX_JOBS];
    int n_jobs;
    pthread_mutex_lock(&c->lock);
    bool was = c->stopping;
    c->stopping = true;
    n_jobs = c->n_jobs;
    memcpy(jobs, c->jobs, (size_t)n_jobs * sizeof *jobs);
    c->n_jobs = 0;
    for (int i = 0; i < c->n_streams; i++) {
        cstream *s = c->streams[i];
        pthread_mutex_lock(&s->lock);
        s->closed = true;
        bool wake = !s->gone && s->hs;
        pthread_mutex_unlock(&s->lock);
        if (wake) http_stream_wake(s->hs);
    }
    pthread_mutex_unlock(&c->lock);
    console_wake(c);
    if (!was && c->started) pthread_join(c->thread, NULL);
    for (int i = 0; i < n_jobs; i++) {
        http_reply_error(jobs[i]->r, 20503, 503, "twigate is stopping");
        job_free(jobs[i]);
    }
}

void console_destroy(console *c)
{
    if (!c) return;
    console_stop(c);
    /* After the writers stopped (main's teardown): none calls the hook now. */
    if (c->started) store_set_change_hook(c->a->store, NULL, NULL);
    for (int i = 0; i < c->n_streams; i++) stream_free(c->streams[i]);
    if (c->wake_fd >= 0) close(c->wake_fd);
    pthread_mutex_destroy(&c->lock);
    free(c->routes);
    free(c);
}
