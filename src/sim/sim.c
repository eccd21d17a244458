/* sim — lifecycle, its handler on net/httpd.h and the request pipeline.
 *
 * Every request takes the same path: net/httpd.c collects the body
 * (capped, SIM_MAX_BODY) and calls on_request, which suspends the
 * connection and posts the sim_req to the "sim" loop. On the loop: injected latency (a timer, no thread blocks), then
 * routing — /sim/... to the control API, /health, else Bearer auth, injected
 * failures, the rate limit and the Kaphila endpoint. The loop fills in the
 * answer and hands it to httpd, which resumes the connection. No HTTP thread
 * waits on the loop and the loop never waits on HTTP. */
#include "sim_int.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/jsonw.h"
#include "base/log.h"
#include "base/sid.h"

/* MHD worker threads: requests are cheap (the loop does the work), two
 * keep one slow client from holding up the rest. */
#define SIM_HTTP_THREADS 2
/* Connections per daemon; the sim must take as many as twigate can open. */
#define SIM_MAX_CONNECTIONS 4096
#define SIM_HTTP_TIMEOUT_S 60

void sim_config_defaults(sim_config *c)
{
    memset(c, 0, sizeof *c);
    c->bind_address = "127.0.0.1";
    c->port = 0;
    c->fast = false;
    c->ring_ms = SIM_RING_MS_DEFAULT;
    c->answer_ms = SIM_ANSWER_MS_DEFAULT;
    c->tts_ms_per_char = SIM_TTS_MS_PER_CHAR_DEFAULT;
    c->tts_min_ms = SIM_TTS_MIN_MS_DEFAULT;
    c->play_ms = SIM_PLAY_MS_DEFAULT;
    c->amd_ms = SIM_AMD_MS_DEFAULT;
    c->outcomes = SIM_OUTCOMES_DEFAULT;
    c->rate_limit = SIM_RATE_LIMIT_DEFAULT;
    c->rate_window_ms = SIM_RATE_WINDOW_MS_DEFAULT;
    c->credits = SIM_CREDITS_DEFAULT;
    c->recordings_dir = NULL;
    c->kept_calls = SIM_KEPT_CALLS_DEFAULT;
}

/* ---------------------------------------------------------------- helpers */

int64_t sim_delay(const sim *s, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    if (!s->cfg.fast)
        return ms;
    ms /= SIM_FAST_DIVISOR;
    return ms < 1 ? 1 : ms;
}

int64_t sim_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sim_iso_ms(int64_t ms, char out[32])
{
    if (ms < 0)
        ms = 0;
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

void sim_iso_now(char out[32])
{
    sim_iso_ms(sim_wall_ms(), out);
}

int sim_key_index(const sim *s, const char *key)
{
    if (!key)
        return -1;
    for (size_t i = 0; i < s->n_keys; i++)
        if (sid_equal_ct(key, s->keys[i].key))
            return (int)i;
    return -1;
}

/* ---------------------------------------------------------------- replies */

static void reply_reset(sim_req *r)
{
    free(r->resp);
    r->resp = NULL;
    r->resp_len = 0;
    if (r->resp_fd >= 0)
        close(r->resp_fd);
    r->resp_fd = -1;
    r->wav_seconds = -1;
    r->content_range[0] = 0;
}

void sim_reply_json(sim_req *r, unsigned status, json_t *obj)
{
    reply_reset(r);
    char *text = obj ? jsonw_dumps(obj) : NULL;
    json_decref(obj);
    if (!text) {
        text = strdup("{\"success\":false,\"error\":\"Out of memory\"}");
        status = 500;
    }
    r->status = status;
    r->resp = text;
    r->resp_len = text ? strlen(text) : 0;
    r->resp_type = "application/json; charset=utf-8";
    r->state = SIM_REQ_ANSWERED;
}

void sim_reply_error(sim_req *r, unsigned status, const char *msg, const char *code)
{
    json_t *o = json_pack("{s:b, s:s}", "success", 0, "error", msg);
    if (o && code)
        json_object_set_new(o, "code", json_string(code));
    sim_reply_json(r, status, o);
}

void sim_reply_fd(sim_req *r, unsigned status, int fd, uint64_t off, uint64_t len)
{
    reply_reset(r);
    r->status = status;
    r->resp_fd = fd;
    r->fd_off = off;
    r->fd_len = len;
    r->resp_type = "audio/wav";
    r->state = SIM_REQ_ANSWERED;
}

void sim_reply_wav(sim_req *r, unsigned status, int seconds, uint64_t off, uint64_t len)
{
    reply_reset(r);
    r->status = status;
    r->wav_seconds = seconds;
    r->fd_off = off;
    r->fd_len = len;
    r->resp_type = "audio/wav";
    r->state = SIM_REQ_ANSWERED;
}

json_t *sim_req_json(sim_req *r)
{
    json_error_t err;
    json_t *o = json_loadb(r->body->data ? r->body->data : "", r->body->len, 0, &err);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        sim_reply_error(r, 400, "Invalid JSON body", NULL);
        return NULL;
    }
    return o;
}

/* ---------------------------------------------------------------- HTTP side */

static void req_free(sim_req *r)
{
    if (!r)
        return;
    reply_reset(r);
    free(r->path);
    free(r->bearer);
    free(r->admin);
    free(r->range);
    free(r->ctype);
    free(r);
}

static char *header_dup(http_req *hr, const char *name)
{
    const char *v = http_header(hr, name);
    return v ? strdup(v) : NULL;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes %XX in place, as libmicrohttpd does to the paths handlers see
 * (the simulator's own glue was given them so; httpd keeps them raw). */
static void path_unescape(char *p)
{
    char *w = p;
    for (; *p; p++) {
        int hi, lo;
        if (*p == '%' && (hi = hex_value(p[1])) >= 0 && (lo = hex_value(p[2])) >= 0) {
            *w++ = (char)(hi << 4 | lo);
            p += 2;
        } else {
            *w++ = *p;
        }
    }
    *w = 0;
}

static sim_req *req_new(sim *s, http_req *hr)
{
    sim_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = SIM_MSG_REQ;
    r->s = s;
    r->hr = hr;
    r->method = http_method(hr);
    r->body = http_body(hr);
    r->resp_fd = -1;
    r->wav_seconds = -1;
    r->path = strdup(http_path(hr));
    if (!r->path) {
        req_free(r);
        return NULL;
    }
    path_unescape(r->path);
    /* Express-style routers ignore one trailing slash. */
    size_t plen = strlen(r->path);
    if (plen > 1 && r->path[plen - 1] == '/')
        r->path[plen - 1] = 0;
    /* Copied: the loop reads them while the connection is suspended. */
    const char *auth = http_header(hr, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        auth += 7;
        while (*auth == ' ')
            auth++;
        r->bearer = strdup(auth);
    }
    r->admin = header_dup(hr, "X-Sim-Admin-Token");
    r->range = header_dup(hr, "Range");
    r->ctype = header_dup(hr, "Content-Type");
    r->loopback = http_peer_is_loopback(hr);
    return r;
}

/* A generated WAV body: which recording, and where the response starts. */
typedef struct wav_body {
    int      seconds;
    uint64_t off;
} wav_body;

/* An HTTP thread fills its send buffer straight from the recording's length. */
static ssize_t wav_reader(void *cls, uint64_t pos, char *out, size_t max)
{
    const wav_body *w = cls;
    sim_wav_read(w->seconds, w->off + pos, (unsigned char *)out, max);
    return (ssize_t)max;
}

/* Sends r's answer through httpd (which resumes the connection; any
 * thread) and frees r: hr is not ours any more. Bodies are handed over,
 * never copied. */
static void send_reply(sim_req *r)
{
    const char *headers[5];
    size_t nh = 0;
    bool wav = strcmp(r->resp_type, "audio/wav") == 0;
    if (r->content_range[0]) {
        headers[nh++] = "Content-Range";
        headers[nh++] = r->content_range;
    }
    if (wav) {
        headers[nh++] = "Accept-Ranges";
        headers[nh++] = "bytes";
    }
    headers[nh] = NULL;
    const char *const *h = nh ? headers : NULL;
    if (r->wav_seconds >= 0) {
        wav_body *w = malloc(sizeof *w);
        if (w) {
            w->seconds = r->wav_seconds;
            w->off = r->fd_off;
        }
        /* MHD never asks past the size given, so max is always in the body. */
        if (w)
            http_reply_generated(r->hr, (int)r->status, r->resp_type, r->fd_len, SIM_WAV_BLOCK,
                                 wav_reader, free, w, h);
        else
            http_reply(r->hr, 500, NULL, NULL, 0, NULL);
    } else if (r->resp_fd >= 0) {
        http_reply_fd(r->hr, (int)r->status, r->resp_type, r->resp_fd, r->fd_off, r->fd_len, h);
        r->resp_fd = -1;   /* httpd closes it */
    } else if (r->resp) {
        http_reply_owned(r->hr, (int)r->status, r->resp_type, r->resp, r->resp_len, h);
        r->resp = NULL;    /* httpd frees it */
    } else {
        http_reply(r->hr, (int)r->status, r->resp_type, "", 0, h);
    }
    req_free(r);
}

static void on_request(void *ctx, http_req *hr, const http_match *m)
{
    (void)m;
    sim *s = ctx;
    sim_req *r = req_new(s, hr);
    if (!r) {
        http_reply(hr, 500, NULL, NULL, 0, NULL);
        return;
    }
    if (atomic_load(&s->closing)) {
        sim_reply_error(r, 503, "Simulator shutting down", NULL);
        send_reply(r);
        return;
    }
    /* Suspend before posting, so the loop can never answer a connection
     * that isn't suspended yet. */
    r->state = SIM_REQ_PENDING;
    http_suspend(hr);
    if (!loop_post(s->loop, r)) {
        sim_reply_error(r, 503, "Simulator overloaded", NULL);
        send_reply(r);
    }
}

/* httpd's refusals before the handler (body over SIM_MAX_BODY, URI too
 * long), in Kaphila's error envelope. */
static void on_refuse(void *ctx, http_req *hr, int status, const char *message)
{
    /* The simulator never reads the query string, so one httpd could not
     * parse is no reason to refuse: served as it always was. */
    if (status == 400) {
        on_request(ctx, hr, NULL);
        return;
    }
    sim_req *r = req_new(ctx, hr);
    if (!r) {
        http_reply(hr, 500, NULL, NULL, 0, NULL);
        return;
    }
    if (status == 413)
        message = "Request body too large";
    sim_reply_error(r, (unsigned)status, message ? message : "Endpoint not found", NULL);
    send_reply(r);
}

/* The simulator's routing runs on its loop, after injected latency, auth,
 * injected failures and the rate limit (that order shows on the wire), so
 * its table is one catch-all: every path reaches on_request. */
static const http_route sim_routes[] = {
    {NULL, NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- loop side */

static bool rule_matches(const sim_rule *rule, int key, const char *path)
{
    if (rule->key >= 0 && rule->key != key)
        return false;
    if (!rule->endpoint[0])
        return true;
    size_t n = strlen(rule->endpoint);
    return strncmp(path, rule->endpoint, n) == 0 && (path[n] == 0 || path[n] == '/');
}

static void reply_injected(sim_req *r, int status)
{
    bool originate = strcmp(r->path, "/makecall") == 0 || strcmp(r->path, "/batchcall") == 0;
    switch (status) {
    case 401:
        sim_reply_error(r, 401, "Invalid API key", NULL);
        break;
    case 402:
        sim_reply_error(r, 402, "Insufficient credits", NULL);
        break;
    case 429:
        sim_reply_error(r, 429, "Rate limit exceeded", NULL);
        break;
    case 503:
        sim_reply_error(r, 503, "No trunks assigned to this API key", NULL);
        break;
    default:
        if (originate)
            sim_reply_error(r, 500, "Failed to originate call", "ORIGINATION_FAILED");
        else
            sim_reply_error(r, 500, "Internal server error", NULL);
        break;
    }
}

/* Consumes one use of the first matching rule; its status, or 0. */
static int take_injection(sim *s, int key, const char *path)
{
    for (size_t i = 0; i < s->n_rules; i++) {
        sim_rule *rule = &s->rules[i];
        if (!rule_matches(rule, key, path))
            continue;
        int status = rule->status;
        if (rule->count > 0 && --rule->count == 0) {
            memmove(&s->rules[i], &s->rules[i + 1], (s->n_rules - i - 1) * sizeof *rule);
            s->n_rules--;
        }
        return status;
    }
    return 0;
}

static bool is_control(const char *path)
{
    return strncmp(path, "/sim/", 5) == 0 || strcmp(path, "/sim") == 0;
}

static void process(sim *s, sim_req *r)
{
    if (is_control(r->path)) {
        sim_control_route(s, r);
    } else if (strcmp(r->path, "/health") == 0) {
        if (strcmp(r->method, "GET") == 0)
            sim_api_health(s, r);
        else
            sim_reply_error(r, 404, "Endpoint not found", NULL);
    } else {
        int key = sim_key_index(s, r->bearer);
        int injected = key >= 0 ? take_injection(s, key, r->path) : 0;
        if (key < 0)
            sim_reply_error(r, 401, r->bearer ? "Invalid API key" : "API key required", NULL);
        else if (injected) {
            sim_key_count_injected(&s->keys[key], injected);
            reply_injected(r, injected);
        } else if (!sim_key_admit(s, &s->keys[key], r->path)) {
            sim_reply_error(r, 429, "Rate limit exceeded", NULL);
            sim_key_note_refusal(s, r, key);
        } else {
            s->keys[key].last_used_ms = sim_wall_ms();
            sim_key_count(&s->keys[key], r->path);
            sim_api_route(s, r, key);
        }
    }
    if (r->state != SIM_REQ_ANSWERED)
        sim_reply_error(r, 500, "Internal server error", NULL);
    send_reply(r);
}

static void delayed_unlink(sim *s, sim_req *r)
{
    if (r->dprev)
        r->dprev->dnext = r->dnext;
    else
        s->delayed = r->dnext;
    if (r->dnext)
        r->dnext->dprev = r->dprev;
    r->dprev = r->dnext = NULL;
}

static void on_delay_over(loop *l, void *arg)
{
    sim *s = loop_ctx(l);
    sim_req *r = arg;
    r->delay = NULL;
    delayed_unlink(s, r);
    process(s, r);
}

static int latency_for(const sim *s, const sim_req *r)
{
    if (is_control(r->path))
        return 0;   /* the control API must stay responsive while testing latency */
    int key = sim_key_index(s, r->bearer);
    if (key >= 0 && s->latency_key_ms[key] >= 0)
        return s->latency_key_ms[key];
    return s->latency_all_ms;
}

/* Appends the keys not known yet (twigate's SIGHUP may add accounts). */
static void add_keys(sim *s, sim_keys_msg *m)
{
    for (size_t i = 0; i < m->n; i++) {
        if (sim_key_index(s, m->keys[i]) >= 0) continue;
        sim_key *k = realloc(s->keys, (s->n_keys + 1) * sizeof *k);
        if (!k) break;
        s->keys = k;
        int *lat = realloc(s->latency_key_ms, (s->n_keys + 1) * sizeof *lat);
        if (!lat) break;
        s->latency_key_ms = lat;
        sim_key_init(s, &s->keys[s->n_keys], m->keys[i]);
        m->keys[i] = NULL;
        s->latency_key_ms[s->n_keys] = -1;
        s->n_keys++;
    }
    for (size_t i = 0; i < m->n; i++) free(m->keys[i]);
    free(m->keys);
    free(m);
}

bool sim_add_keys(sim *s, const char *const *keys, size_t n)
{
    sim_keys_msg *m = calloc(1, sizeof *m);
    if (!m || !(m->keys = calloc(n ? n : 1, sizeof *m->keys))) { free(m); return false; }
    m->kind = SIM_MSG_KEYS;
    m->n = n;
    for (size_t i = 0; i < n; i++) m->keys[i] = strdup(keys[i] ? keys[i] : "");
    if (!loop_post(s->loop, m)) {
        for (size_t i = 0; i < n; i++) free(m->keys[i]);
        free(m->keys);
        free(m);
        return false;
    }
    return true;
}

static void on_msg(loop *l, void *msg)
{
    sim *s = loop_ctx(l);
    if (*(int *)msg == SIM_MSG_KEYS) {
        add_keys(s, msg);
        return;
    }
    sim_req *r = msg;
    assert(r->kind == SIM_MSG_REQ);
    int ms = atomic_load(&s->closing) ? 0 : latency_for(s, r);
    if (ms > 0) {
        r->delay = loop_timer_add(l, ms, on_delay_over, r);
        if (r->delay) {
            r->dnext = s->delayed;
            if (s->delayed)
                s->delayed->dprev = r;
            s->delayed = r;
            return;
        }
    }
    process(s, r);
}

/* ---------------------------------------------------------------- lifecycle */

/* --recordings-dir: the recordings are also kept as files there. */
static int prepare_recdir(sim *s, const char *dir, char *err, size_t errlen)
{
    if (!dir || !*dir)
        return 0;   /* in memory only */
    if (strlen(dir) >= sizeof s->recdir - 80) {
        snprintf(err, errlen, "recordings directory path too long");
        return -1;
    }
    snprintf(s->recdir, sizeof s->recdir, "%s", dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int start_http(sim *s, char *err, size_t errlen)
{
    const char *addr = s->cfg.bind_address ? s->cfg.bind_address : "127.0.0.1";
    unsigned char probe[16];
    if (inet_pton(AF_INET, addr, probe) != 1 && inet_pton(AF_INET6, addr, probe) != 1) {
        snprintf(err, errlen, "bad bind address %s", addr);
        return -1;
    }
    http_config hc = {
        .address = addr,
        .port = s->cfg.port,
        .threads = SIM_HTTP_THREADS,
        .max_body = SIM_MAX_BODY,
        .max_connections = SIM_MAX_CONNECTIONS,
        .max_per_client = 0,
        /* No head deadline of its own: MHD's idle timeout closes a silent
         * connection after as long, as the simulator always did. */
        .head_timeout_ms = SIM_HTTP_TIMEOUT_S * 1000,
        .routes = sim_routes,
        .not_found = on_request,
        .ctx = s,
        .refuse = on_refuse,
    };
    char herr[256];
    s->http = http_start(&hc, herr, sizeof herr);
    if (!s->http) {
        snprintf(err, errlen, "cannot listen on %s:%d", addr, s->cfg.port);
        return -1;
    }
    s->port = http_port(s->http);
    return 0;
}

sim *sim_create(const sim_config *cfg, char *err, size_t errlen)
{
    if (cfg->kept_calls < 0 || cfg->kept_calls > SIM_MAX_KEPT_CALLS) {
        snprintf(err, errlen, "kept_calls %d is outside 0..%d", cfg->kept_calls, SIM_MAX_KEPT_CALLS);
        return NULL;
    }
    if (cfg->rate_limit < 0 || cfg->rate_limit > SIM_RATE_LIMIT_MAX || cfg->rate_window_ms < 1 ||
        cfg->rate_window_ms > SIM_RATE_WINDOW_MS_MAX || cfg->credits < 0 || cfg->credits > SIM_CREDITS_MAX) {
        snprintf(err, errlen, "rate_limit, rate_window_ms or credits out of range");
        return NULL;
    }
    sim *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&s->closing, false);
    s->cfg = *cfg;
    s->bind_copy = strdup(cfg->bind_address ? cfg->bind_address : "127.0.0.1");
    s->admin_copy = cfg->admin_token && *cfg->admin_token ? strdup(cfg->admin_token) : NULL;
    s->outcomes_copy = strdup(cfg->outcomes ? cfg->outcomes : "");
    s->cfg.bind_address = s->bind_copy;
    s->cfg.admin_token = s->admin_copy;
    s->cfg.outcomes = s->outcomes_copy;
    s->cfg.api_keys = NULL;   /* copied into keys[] below */
    s->cfg.recordings_dir = NULL;
    if (!s->bind_copy || !s->outcomes_copy || (cfg->admin_token && *cfg->admin_token && !s->admin_copy)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cfg->n_api_keys == 0) {
        snprintf(err, errlen, "at least one API key is required");
        goto fail;
    }
    s->keys = calloc(cfg->n_api_keys, sizeof *s->keys);
    s->latency_key_ms = calloc(cfg->n_api_keys, sizeof *s->latency_key_ms);
    if (!s->keys || !s->latency_key_ms) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->n_keys = cfg->n_api_keys;
    for (size_t i = 0; i < s->n_keys; i++) {
        sim_key_init(s, &s->keys[i], strdup(cfg->api_keys[i] ? cfg->api_keys[i] : ""));
        s->latency_key_ms[i] = -1;
        if (!s->keys[i].key) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (prepare_recdir(s, cfg->recordings_dir, err, errlen) != 0)
        goto fail;
    s->event_headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!s->event_headers) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->loop = loop_create("sim", on_msg, s);
    if (!s->loop || sim_calls_create(s) != 0 || sim_recs_create(s) != 0) {
        snprintf(err, errlen, "cannot create the sim loop");
        goto fail;
    }
    if (loop_start(s->loop) != 0) {
        snprintf(err, errlen, "cannot start the sim loop thread");
        goto fail;
    }
    if (start_http(s, err, errlen) != 0)
        goto fail;
    log_info("sim", "kaphila-sim listening on %s port %d (recordings %s%s)", s->cfg.bind_address,
             s->port, s->recdir[0] ? "in " : "in memory", s->recdir);
    return s;
fail:
    sim_destroy(s);
    return NULL;
}

int sim_port(const sim *s)
{
    return s->port;
}

void sim_destroy(sim *s)
{
    if (!s)
        return;
    atomic_store(&s->closing, true);
    if (s->loop) {
        /* Requests already posted are still answered; later posts fail and
         * their handlers answer 503 themselves. */
        loop_stop(s->loop);
        /* The loop thread is gone: its state is ours now. Requests waiting
         * out injected latency are answered so MHD can stop. */
        while (s->delayed) {
            sim_req *r = s->delayed;
            delayed_unlink(s, r);
            loop_timer_cancel(s->loop, r->delay);
            r->delay = NULL;
            sim_reply_error(r, 503, "Simulator shutting down", NULL);
            send_reply(r);
        }
    }
    http_stop(s->http);
    sim_calls_destroy(s);   /* before loop_destroy: cancels timers on the loop */
    loop_destroy(s->loop);  /* aborts event POSTs in flight; frees their orphaned calls */
    curl_slist_free_all(s->event_headers);
    sim_recs_destroy(s);
    if (s->keys)
        for (size_t i = 0; i < s->n_keys; i++)
            sim_key_fini(&s->keys[i]);
    free(s->keys);
    free(s->latency_key_ms);
    free(s->bind_copy);
    free(s->admin_copy);
    free(s->outcomes_copy);
    free(s);
}
