/* loadgen_calls — loadgen's modes that follow calls (loadgen.h):
 *
 *   relay  Kaphila events into twigate's /kaphila/events/{token}, with our own
 *          receiver for the status callbacks they cause; latency is from the
 *          event's send to its callback's arrival.
 *   live   creates calls whose TwiML loops Say/Gather/Pause through our own
 *          receiver, measures how late each Pause ends and twigate's RSS.
 *
 * Both map a call's SID to its index with a small open-addressing table. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

/* ---- sid → index table (open addressing) ---- */

typedef struct { char (*keys)[40]; int *vals; size_t cap; } sidmap;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h;
}

static void sm_init(sidmap *m, size_t n)
{
    m->cap = 16;
    while (m->cap < n * 2) m->cap *= 2;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = xmalloc(m->cap * sizeof *m->vals);
    if (!m->keys) die("out of memory");
}

static void sm_put(sidmap *m, const char *k, int v)
{
    size_t n = strlen(k), i = fnv(k, n) & (m->cap - 1);
    while (m->keys[i][0] && strcmp(m->keys[i], k)) i = (i + 1) & (m->cap - 1);
    snprintf(m->keys[i], sizeof m->keys[i], "%s", k);
    m->vals[i] = v;
}

static int sm_get(const sidmap *m, const char *k, size_t n)
{
    size_t i = fnv(k, n) & (m->cap - 1);
    while (m->keys[i][0]) {
        if (strlen(m->keys[i]) == n && !memcmp(m->keys[i], k, n)) return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* Value of form/query parameter `name` in s (not decoded: the values we read
 * are SIDs and status words). */
static const char *form_get(const char *s, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    const char *p = s;
    while (p && *p) {
        if (!strncmp(p, name, nl) && p[nl] == '=') {
            p += nl + 1;
            *len = strcspn(p, "& \r\n");
            return p;
        }
        p = strpbrk(p, "&?");
        if (p) p++;
    }
    return NULL;
}

/* ---- mode: relay ---- */

/* Events go out call-interleaved: event e is kind e / N for call e % N, so
 * one call's next event leaves N events after the previous one (in order,
 * since each needs the previous one's 200 first). Each kind causes exactly
 * one status callback (the calls ask for ringing, answered, completed). */
static const char *ev_names[3] = {"call.initiated", "call.answered", "call.ended"};
static const char *cb_status[3] = {"ringing", "in-progress", "completed"};

typedef struct relay {
    int       n;                 /* calls */
    char    (*tokens)[96];
    char    (*sids)[40];
    char    (*kids)[40];
    sidmap    map;
    int64_t  *t_sent, *t_cb;     /* per event */
    char     *inflight;          /* per call: an event request outstanding */
    long      callbacks, matched, unmatched, dup;
    int64_t   last_cb;
    samples   lat;
    url_t    *u;
} relay;

static int relay_build(long e, dbuf *out, void *arg)
{
    relay *r = arg;
    int call = (int)(e % r->n), kind = (int)(e / r->n);
    char body[512];
    if (r->inflight[call]) return 0;   /* keep this call's events in order */
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[96];
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    int bl;
    if (kind == 0)
        bl = snprintf(body, sizeof body, "{\"event\":\"%s\",\"callId\":\"%s\",\"timestamp\":\"%s\","
                      "\"from\":\"14155550199\",\"to\":\"14155550100\",\"status\":\"ringing\"}",
                      ev_names[0], r->kids[call], stamp);
    else if (kind == 1)
        bl = snprintf(body, sizeof body, "{\"event\":\"%s\",\"callId\":\"%s\",\"timestamp\":\"%s\","
                      "\"from\":\"14155550199\",\"to\":\"14155550100\",\"status\":\"answered\"}",
                      ev_names[1], r->kids[call], stamp);
    else
        bl = snprintf(body, sizeof body, "{\"event\":\"%s\",\"callId\":\"%s\",\"timestamp\":\"%s\","
                      "\"status\":\"completed\",\"endReason\":\"normal_hangup\",\"hangupCause\":\"16\","
                      "\"wasAnswered\":true,\"callDuration\":1}",
                      ev_names[2], r->kids[call], stamp);
    db_printf(out, "POST /kaphila/events/%s?CallSid=%s HTTP/1.1\r\nHost: %s\r\n"
              "User-Agent: Kaphila-API-API/2.0\r\nContent-Type: application/json\r\n"
              "Content-Length: %d\r\n\r\n%s", r->tokens[call], r->sids[call], r->u->hostport, bl, body);
    r->inflight[call] = 1;
    r->t_sent[e] = now_ns();
    return 1;
}

static void relay_resp(long e, int status, const char *body, size_t blen, int64_t t_due, void *arg)
{
    (void)status; (void)body; (void)blen;
    relay *r = arg;
    r->inflight[e % r->n] = 0;
    /* Open loop: the event was due at t_due; a wait for a free connection
     * counts as latency too. */
    if (t_due < r->t_sent[e]) r->t_sent[e] = t_due;
}

static void relay_handle(const char *method, const char *path, const char *body, size_t blen,
                         dbuf *out, void *arg)
{
    (void)method; (void)path; (void)blen;
    relay *r = arg;
    int64_t t = now_ns();
    size_t sl = 0, tl = 0;
    const char *sid = form_get(body, "CallSid", &sl);
    const char *st = form_get(body, "CallStatus", &tl);
    r->callbacks++;
    r->last_cb = t;
    int call = sid ? sm_get(&r->map, sid, sl) : -1;
    int kind = -1;
    for (int k = 0; st && k < 3; k++)
        if (strlen(cb_status[k]) == tl && !memcmp(st, cb_status[k], tl)) kind = k;
    if (call < 0 || kind < 0) {
        r->unmatched++;
    } else {
        long e = (long)kind * r->n + call;
        if (r->t_cb[e]) r->dup++;
        else if (r->t_sent[e]) {
            r->t_cb[e] = t;
            r->matched++;
            sm_add(&r->lat, t - r->t_sent[e]);
        } else {
            r->unmatched++;
        }
    }
    db_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n");
}

int mode_relay(opts *o)
{
    relay r = {0};
    client cl;
    server s = {0};
    FILE *f;
    char line[512];
    if (!o->url || !o->file) usage();
    f = fopen(o->file, "r");
    if (!f) die("%s: %s", o->file, strerror(errno));
    int cap = 1024;
    r.tokens = xmalloc((size_t)cap * sizeof *r.tokens);
    r.sids = xmalloc((size_t)cap * sizeof *r.sids);
    r.kids = xmalloc((size_t)cap * sizeof *r.kids);
    /* lines: token|sid|kaphila_id (sqlite3's default separator) */
    while (fgets(line, sizeof line, f)) {
        char *a = strtok(line, "|\n"), *b = strtok(NULL, "|\n"), *c = strtok(NULL, "|\n");
        if (!a || !b) continue;
        if (r.n == cap) {
            cap *= 2;
            r.tokens = realloc(r.tokens, (size_t)cap * sizeof *r.tokens);
            r.sids = realloc(r.sids, (size_t)cap * sizeof *r.sids);
            r.kids = realloc(r.kids, (size_t)cap * sizeof *r.kids);
        }
        snprintf(r.tokens[r.n], sizeof r.tokens[0], "%s", a);
        snprintf(r.sids[r.n], sizeof r.sids[0], "%s", b);
        snprintf(r.kids[r.n], sizeof r.kids[0], "%s", c ? c : "");
        r.n++;
    }
    fclose(f);
    if (!r.n) die("no calls in %s", o->file);
    sm_init(&r.map, (size_t)r.n);
    for (int i = 0; i < r.n; i++) sm_put(&r.map, r.sids[i], i);
    long total = 3L * r.n;
    r.t_sent = calloc((size_t)total, sizeof *r.t_sent);
    r.t_cb = calloc((size_t)total, sizeof *r.t_cb);
    r.inflight = calloc((size_t)r.n, 1);
    loop_init();
    s.handle = relay_handle;
    s.arg = &r;
    server_start(&s, o->port);
    client_init(&cl, o->url, o->url2, o->conns);
    r.u = &cl.u;
    cl.build = relay_build;
    cl.on_resp = relay_resp;
    cl.arg = &r;
    for (int i = 0; i < 5; i++) loop_once(&cl, 2);
    int64_t t0 = now_ns();
    drive(&cl, total, o->rate, o->dur, o->drain, NULL, NULL);
    int64_t t_sent_end = cl.last_done ? cl.last_done : now_ns();
    /* Wait for the callbacks still on their way. */
    int64_t wait_end = now_ns() + (int64_t)(o->drain * 1e9);
    while (r.matched < cl.ok && now_ns() < wait_end && !stop_flag) loop_once(&cl, 50);
    double el_in = (double)(t_sent_end - t0) / 1e9;
    double el_all = r.last_cb ? (double)(r.last_cb - t0) / 1e9 : 0;
    printf("events=%ld ok=%ld non2xx=%ld errors=%ld callbacks=%ld matched=%ld unmatched=%ld dup=%ld "
           "in_s=%.3f in_rate=%.1f e2e_s=%.3f e2e_rate=%.1f p50=%.3f p90=%.3f p99=%.3f p999=%.3f "
           "max=%.3f\n",
           cl.sent, cl.ok, cl.non2xx, cl.errors, r.callbacks, r.matched, r.unmatched, r.dup,
           el_in, el_in > 0 ? (double)cl.ok / el_in : 0, el_all,
           el_all > 0 ? (double)r.matched / el_all : 0, sm_pct(&r.lat, 50), sm_pct(&r.lat, 90),
           sm_pct(&r.lat, 99), sm_pct(&r.lat, 99.9), sm_pct(&r.lat, 100));
    return 0;
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(const char *in, char *out)
{
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[o++] = b64tab[(v >> 18) & 63];
        out[o++] = b64tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64tab[v & 63] : '=';
    }
    out[o] = 0;
}

/* ---- mode: live ---- */

/* Every call loops:  /live  → <Say> <Gather timeout=g><Say/></Gather> <Redirect>/pause
 *                    /pause → <Pause length=p/> <Redirect>/live
 * The time from a call's /pause fetch to its next /live fetch is the Pause
 * plus one fetch round trip: what exceeds p seconds is how late the timer
 * fired (an upper bound: it includes twigate parsing the TwiML and starting
 * the next request). */
typedef struct live {
    opts     *o;
    url_t    *u;
    char      auth[256];
    char      create_body[1024];
    sidmap    map;
    int       ncalls;              /* SIDs known (from 201 bodies) */
    char    (*sids)[40];
    int64_t  *pause_at;            /* per call: last /pause fetch */
    int64_t  *last_live;           /* per call: last /live fetch */
    int       looping;             /* calls that fetched /live at least once */
    long      live_fetches, pause_fetches, unknown;
    int       measuring;
    samples   late;                /* ns beyond the Pause, measured while measuring */
    long      late_over_50;
    long      rss0_kb, rss_all_kb, rss_peak_kb;
} live;

static long rss_kb(int pid)
{
    char p[64], line[256];
    long kb = -1;
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    fclose(f);
    return kb;
}

static int live_build(long tag, dbuf *out, void *arg)
{
    (void)tag;
    live *l = arg;
    db_printf(out, "POST %sCalls.json HTTP/1.1\r\nHost: %s\r\nAuthorization: Basic %s\r\n"
              "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\n%s",
              l->u->path, l->u->hostport, l->auth, strlen(l->create_body), l->create_body);
    return 1;
}

static void live_resp(long tag, int status, const char *body, size_t blen, int64_t t_due, void *arg)
{
    (void)tag; (void)t_due; (void)blen;
    live *l = arg;
    if (status != 201 || !body) return;
    const char *p = strstr(body, "\"sid\":\"CA");
    if (!p || l->ncalls >= l->o->calls) return;
    p += 7;
    char sid[40];
    size_t n = strcspn(p, "\"");
    if (n >= sizeof sid) return;
    memcpy(sid, p, n);
    sid[n] = 0;
    if (sm_get(&l->map, sid, n) >= 0) return;
    snprintf(l->sids[l->ncalls], sizeof l->sids[0], "%s", sid);
    sm_put(&l->map, sid, l->ncalls);
    l->ncalls++;
}

static void live_handle(const char *method, const char *path, const char *body, size_t blen,
                        dbuf *out, void *arg)
{
    (void)method; (void)blen;
    live *l = arg;
    int64_t t = now_ns();
    size_t sl = 0;
    const char *sid = form_get(body, "CallSid", &sl);
    if (!sid) { const char *q = strchr(path, '?'); if (q) sid = form_get(q + 1, "CallSid", &sl); }
    int i = sid ? sm_get(&l->map, sid, sl) : -1;
    char twiml[1024];
    int port = the_server->port;
    if (!strncmp(path, "/pause", 6)) {
        l->pause_fetches++;
        if (i >= 0) l->pause_at[i] = t;
        snprintf(twiml, sizeof twiml,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Pause length=\"%d\"/>"
                 "<Redirect>http://127.0.0.1:%d/live</Redirect></Response>", l->o->pause_s, port);
    } else {
        l->live_fetches++;
        if (i >= 0) {
            if (!l->last_live[i]) l->looping++;
            l->last_live[i] = t;
            if (l->pause_at[i] && l->measuring) {
                int64_t late = t - l->pause_at[i] - (int64_t)l->o->pause_s * 1000000000;
                sm_add(&l->late, late);
                if (late > 50000000) l->late_over_50++;
            }
            l->pause_at[i] = 0;
        } else {
            /* The 201 has not been read yet; the call is known from its next loop on. */
            l->unknown++;
        }
        snprintf(twiml, sizeof twiml,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Hello</Say>"
                 "<Gather numDigits=\"1\" timeout=\"%d\"><Say>Press a key</Say></Gather>"
                 "<Redirect>http://127.0.0.1:%d/pause</Redirect></Response>", l->o->gather_s, port);
    }
    db_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %zu\r\n\r\n%s",
              strlen(twiml), twiml);
}

int mode_live(opts *o)
{
    live l = {0};
    client cl;
    server s = {0};
    char url[256];
    if (!o->url || !o->auth || o->calls <= 0) usage();
    l.o = o;
    base64(o->auth, l.auth);
    sm_init(&l.map, (size_t)o->calls);
    l.sids = xmalloc((size_t)o->calls * sizeof *l.sids);
    l.pause_at = calloc((size_t)o->calls, sizeof *l.pause_at);
    l.last_live = calloc((size_t)o->calls, sizeof *l.last_live);
    loop_init();
    s.handle = live_handle;
    s.arg = &l;
    server_start(&s, o->port);
    snprintf(l.create_body, sizeof l.create_body,
             "To=%%2B14155550100&From=%%2B14155550199&Url=http%%3A%%2F%%2F127.0.0.1%%3A%d%%2Flive", s.port);
    /* -u is the account's base: http://127.0.0.1:P/2010-04-01/Accounts/AC.../ */
    snprintf(url, sizeof url, "%s", o->url);
    client_init(&cl, url, NULL, o->conns);
    l.u = &cl.u;
    cl.build = live_build;
    cl.on_resp = live_resp;
    cl.arg = &l;
    for (int i = 0; i < 5; i++) loop_once(&cl, 2);
    l.rss0_kb = o->pid ? rss_kb(o->pid) : -1;
    int64_t t0 = now_ns();
    /* The ramp is bounded (-d): a twigate too slow to create every call in
     * time is measured with the calls it has. */
    drive(&cl, o->calls, o->create_rate, o->dur, 10, NULL, NULL);
    int64_t t_created = now_ns();
    /* Wait until every created call runs its loop (fetched /live once). */
    int64_t limit = now_ns() + 10 * 1000000000LL;
    while (l.looping < l.ncalls && now_ns() < limit && !stop_flag) loop_once(&cl, 20);
    int64_t t_all = now_ns();
    l.rss_all_kb = o->pid ? rss_kb(o->pid) : -1;
    l.rss_peak_kb = l.rss_all_kb;
    /* Steady state: every call looping; measure Pause timers. */
    l.measuring = 1;
    int64_t hold_end = now_ns() + (int64_t)(o->hold * 1e9), next_rss = now_ns();
    while (now_ns() < hold_end && !stop_flag) {
        loop_once(&cl, 20);
        if (o->pid && now_ns() >= next_rss) {
            long k = rss_kb(o->pid);
            if (k > l.rss_peak_kb) l.rss_peak_kb = k;
            next_rss += 500000000;
        }
    }
    /* Calls still looping: fetched /live within the last loop period. */
    int64_t t_end = now_ns(), period = (int64_t)(o->pause_s + o->gather_s + 5) * 1000000000LL;
    int alive = 0;
    for (int i = 0; i < l.ncalls; i++)
        if (l.last_live[i] && t_end - l.last_live[i] < period) alive++;
    long rss_end = o->pid ? rss_kb(o->pid) : -1;
    if (rss_end > l.rss_peak_kb) l.rss_peak_kb = rss_end;
    double per_call_kb = alive ? (double)(l.rss_peak_kb - l.rss0_kb) / alive : -1;
    printf("calls=%d created_ok=%ld create_non2xx=%ld create_errors=%ld ramp_s=%.2f all_looping_s=%.2f "
           "looping=%d alive_at_end=%d live_fetches=%ld pause_fetches=%ld rss0_kb=%ld rss_all_kb=%ld "
           "rss_peak_kb=%ld per_call_kb=%.2f pauses=%zu late_p50=%.3f late_p99=%.3f late_max=%.3f "
           "late_over_50=%ld create_p50=%.3f create_p99=%.3f\n",
           o->calls, cl.ok, cl.non2xx, cl.errors, (double)(t_created - t0) / 1e9,
           (double)(t_all - t0) / 1e9, l.looping, alive, l.live_fetches, l.pause_fetches, l.rss0_kb,
           l.rss_all_kb, l.rss_peak_kb, per_call_kb, l.late.n, sm_pct(&l.late, 50),
           sm_pct(&l.late, 99), sm_pct(&l.late, 100), l.late_over_50, sm_pct(&cl.lat, 50),
           sm_pct(&cl.lat, 99));
    return 0;
}
