/* httpd.c — libmicrohttpd glue: request collection, routing, suspend/resume.
 *
 * Map: request lifecycle (uri_cb creates the http_req from the raw URI,
 * access_cb collects the body and dispatches, completed_cb frees); routing;
 * replies (which may come from any thread and resume a suspended connection);
 * Basic credentials (decoded in httpd_basic.c); server start/stop, on a
 * listening socket of twigate's own (listener.c) whose acceptor checks
 * connguard (per-client limits) before MHD_add_connection, with the head
 * deadline kept through MHD's connection notifications; MHD's log,
 * rate-limited.
 *
 * We take the raw URI from MHD's URI log callback rather than MHD's parsed
 * arguments because the query must be decoded with form semantics
 * (repeated keys kept, "StartTime%3E" as a key) exactly like bodies are. */
#include "net/httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/connguard.h"
#include "listener_int.h"
#include "base/errors.h"
#include "base/jsonw.h"
#include "base/log.h"
#include "base/timefmt.h"

/* A raw URI longer than this is refused (414): every real Twilio URI,
 * including a list URI carrying all filters, is far shorter. */
#define HTTP_MAX_URI 8192
/* MHD's per-connection memory pool holds the request line, the headers and
 * the response headers. libmicrohttpd 0.9.75 zeroes the whole pool before
 * every request on a keep-alive connection, so its size is paid per request
 * (perf: at 256 KiB the memset was 20 % of a fetch's CPU) and every
 * connection that has served a request keeps it resident. Query arguments
 * no longer live there (uri_cb hides them from MHD), so the pool only has to
 * hold a request line up to HTTP_MAX_URI plus ordinary headers; MHD gives
 * the read buffer half of it. Larger header blocks get MHD's own 431. */
#define HTTP_CONN_MEMORY (32 * 1024)
/* Idle keep-alive connections are closed after this many seconds. */
#define HTTP_IDLE_TIMEOUT_S 60
/* libmicrohttpd's own messages (one per refused connection, say) are let
 * through at most this many per second; the rest are counted and the count
 * is logged with the next line let through. */
#define HTTP_MHD_LOG_PER_S 5

/* MHD's own connection limit, which must never be met: libmicrohttpd
 * 0.9.75 (Debian bookworm) splits it over the worker threads, and a worker
 * meeting its share while taking a connection from MHD_add_connection
 * refuses it ("Server reached connection limit", "Failed to start serving
 * new connection") and leaves its cleanup_connection_mutex locked for ever
 * (new_connection_process_; fixed in 1.0.0). Every later resume on that
 * worker (the engine's or the simulator's replies) and the worker itself
 * then wait: the server wedges. A share is easy to meet: a connection goes
 * to worker fd % threads, and where one process is client and server
 * (twigate and its built-in simulator) accepted descriptors alternate with
 * the client's, mostly of one parity. So the limit is connguard's, exact on
 * the acceptor thread (on_accept), and each worker's share of MHD's is twice
 * all of it: every connection the server may hold, plus as many that MHD
 * has closed (and reported) but not yet counted out. */
static unsigned mhd_connection_limit(const http_config *cfg)
{
    uint64_t threads = (uint64_t)(cfg->threads > 0 ? cfg->threads : 1);
    uint64_t per_worker = 2 * (uint64_t)(cfg->max_connections > 0 ? cfg->max_connections : 1);
    uint64_t n = per_worker * threads;
    return n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

struct http_server {
    struct MHD_Daemon *d;
    http_config        cfg;
    int                port;
    atomic_uint_fast64_t next_id;
    atomic_bool        draining;
    listener          *lsn;             /* the listening socket (listener.c: why not MHD's) */
    atomic_int         active;          /* requests between uri_cb and completed_cb */
    atomic_llong       last_done_ms;    /* monotonic time the last request ended */
    connguard         *guard;
    pthread_mutex_t    log_lock;        /* the MHD log's rate limit below */
    int64_t            log_window_ms;
    int                log_in_window;
    unsigned long      log_suppressed;
};

struct http_req {
    http_server           *srv;
    struct MHD_Connection *conn;
    char                  *uri;         /* raw, as received */
    char                  *path;        /* uri up to '?' */
    const char            *method;
    const char            *route;
    form                   query;
    buf                    body;
    bool                   started, too_big, uri_too_long, dispatched;
    form_status            query_status;
    bool                   suspended;
    bool                   redispatched;   /* http_redispatch has run once */
    char                   request_id[24];
    char                  *auth_user, *auth_pass;
    connguard_conn        *guard;       /* the connection's, from MHD's socket context */
    int64_t                t0_us;
    pthread_mutex_t        lock;        /* guards resp/status between threads */
    struct MHD_Response   *resp;
    int                    status;
    uint64_t               bytes;       /* response body length, for the access log */
    json_t                *held;        /* http_hold_json: dropped in completed_cb */
};

/* Monotonic µs: requests are timed finer than timefmt's milliseconds. */
static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- accessors ---- */

const char *http_method(const http_req *r)    { return r->method; }
const char *http_path(const http_req *r)      { return r->path; }
const char *http_raw_uri(const http_req *r)   { return r->uri; }
const form *http_query(const http_req *r)     { return &r->query; }
const buf  *http_body(const http_req *r)      { return &r->body; }
const char *http_request_id(const http_req *r){ return r->request_id; }
const char *http_route_name(const http_req *r){ return r->route ? r->route : "none"; }

const char *http_header(const http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

bool http_peer_is_loopback(const http_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return false;
    if (ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ci->client_addr;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ci->client_addr;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
               (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127);
    }
    return false;
}

bool http_peer_addr(const http_req *r, unsigned char key[16])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return false;
    if (ci->client_addr->sa_family == AF_INET) {
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, 4);
        return true;
    }
    if (ci->client_addr->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, 16);
        return true;
    }
    return false;
}

bool http_basic_auth(http_req *r, const char **user, const char **pass)
{
    if (!r->auth_user && !http_basic_decode(http_header(r, "Authorization"), &r->auth_user,
                                            &r->auth_pass))
        return false;
    *user = r->auth_user;
    *pass = r->auth_pass;
    return true;
}

/* ---- replies ---- */

static void set_response(http_req *r, int status, struct MHD_Response *resp, uint64_t len,
                         const char *content_type, const char *const *headers)
{
    if (!resp) {
        log_error("http", "cannot allocate a response");
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        status = 500;
        len = 0;
        if (!resp) return;
    }
    if (content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    /* Draining: no keep-alive, so clients open a new connection (which is
     * refused) rather than reuse one that is about to close. */
    if (atomic_load(&r->srv->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    pthread_mutex_lock(&r->lock);
    bool resume = r->suspended;
    r->resp = resp;
    r->status = status;
    r->bytes = len;
    r->suspended = false;
    pthread_mutex_unlock(&r->lock);
    if (resume) MHD_resume_connection(r->conn);
}

void http_redispatch(http_req *r)
{
    /* access_cb dispatches again when the resumed connection comes back
     * with no answer and dispatched false. */
    pthread_mutex_lock(&r->lock);
    bool resume = r->suspended;
    r->dispatched = false;
    r->redispatched = true;
    r->suspended = false;
    pthread_mutex_unlock(&r->lock);
    if (resume) MHD_resume_connection(r->conn);
}

bool http_redispatched(const http_req *r) { return r->redispatched; }

void http_suspend(http_req *r)
{
    pthread_mutex_lock(&r->lock);
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&r->lock);
}

void http_reply(http_req *r, int status, const char *content_type, const char *body,
                size_t len, const char *const *headers)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    set_response(r, status, resp, len, content_type, headers);
}

void http_reply_owned(http_req *r, int status, const char *content_type, char *body,
                      size_t len, const char *const *headers)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) free(body);
    set_response(r, status, resp, len, content_type, headers);
}

void http_reply_fd(http_req *r, int status, const char *content_type, int fd, uint64_t offset,
                   uint64_t len, const char *const *headers)
{
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, offset);
    if (!resp) close(fd);
    set_response(r, status, resp, len, content_type, headers);
}

void http_reply_generated(http_req *r, int status, const char *content_type, uint64_t len,
                          size_t block, ssize_t (*rd)(void *ctx, uint64_t pos, char *out, size_t max),
                          void (*free_ctx)(void *ctx), void *ctx, const char *const *headers)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(len, block, rd, ctx, free_ctx);
    if (!resp && free_ctx) free_ctx(ctx);
    set_response(r, status, resp, len, content_type, headers);
}

void http_reply_json(http_req *r, int status, json_t *j)
{
    char *s = j ? jsonw_dumps(j) : NULL;
    json_decref(j);
    if (!s) {
        http_reply_error(r, 20500, 500, NULL);
        return;
    }
    http_reply_owned(r, status, "application/json", s, strlen(s), NULL);
}

void http_reply_error_h(http_req *r, int code, int status, const char *message,
                        const char *const *headers)
{
    if (!status) status = twerr_http_status(code);
    char *s = twerr_render(code, status, message);
    if (!s) {
        http_reply(r, 500, "application/json", "{}", 2, headers);
        return;
    }
    http_reply_owned(r, status, "application/json", s, strlen(s), headers);
}

void http_reply_error(http_req *r, int code, int status, const char *message)
{
    http_reply_error_h(r, code, status, message, NULL);
}

/* ---- routing ---- */

/* Matches path against pattern where '*' matches a non-empty run of
 * characters other than '/' and the pattern's next literal character. */
static bool match(const char *pat, const char *path, http_match *m)
{
    m->n = 0;
    while (*pat) {
        if (*pat == '*') {
            char stop = pat[1];
            const char *start = path;
            size_t n;
            while (*path && *path != '/' && *path != stop) path++;
            /* ".json" after a capture: the capture stops at the last '.'. */
            n = (size_t)(path - start);
            if (n == 0 || n >= HTTP_CAPTURE_LEN || m->n >= HTTP_MAX_CAPTURES) return false;
            memcpy(m->cap[m->n], start, n);
            m->cap[m->n][n] = '\0';
            m->n++;
            pat++;
            continue;
        }
        if (*pat != *path) return false;
        pat++;
        path++;
    }
    return *path == '\0';
}

/* A refusal before any handler runs: the server's own format, or Twilio's. */
static void refuse(http_req *r, int code, int status, const char *message)
{
    const http_config *cfg = &r->srv->cfg;
    if (cfg->refuse) cfg->refuse(cfg->ctx, r, status, message);
    else http_reply_error(r, code, status, message);
}

static void dispatch(http_req *r)
{
    const http_config *cfg = &r->srv->cfg;
    http_match m;
    bool path_matched = false;

    log_context(r->request_id, NULL, NULL);
    if (r->uri_too_long) {
        refuse(r, 414, 414, "Request-URI too long");
        goto out;
    }
    if (r->too_big) {
        char msg[96];
        snprintf(msg, sizeof msg, "Request body exceeds %zu bytes", cfg->max_body);
        refuse(r, 413, 413, msg);
        goto out;
    }
    if (r->query_status != FORM_OK) {
        refuse(r, 400, 400, r->query_status == FORM_ERR_TOO_MANY
                                ? "Too many query parameters in the request"
                                : "Malformed query string");
        goto out;
    }
    for (const http_route *rt = cfg->routes; rt && rt->pattern; rt++) {
        if (!match(rt->pattern, r->path, &m)) continue;
        path_matched = true;
        if (rt->method && strcmp(rt->method, r->method) != 0) continue;
        r->route = rt->name;
        rt->fn(cfg->ctx, r, &m);
        goto out;
    }
    if (path_matched) {
        r->route = "method_not_allowed";
        refuse(r, 20004, 405, NULL);
        goto out;
    }
    r->route = "not_found";
    m.n = 0;
    cfg->not_found(cfg->ctx, r, &m);
out:
    log_context_clear();
}

/* ---- MHD callbacks ---- */

/* Marks a URI longer than HTTP_MAX_URI. No request is allocated for it in
 * uri_cb, because libmicrohttpd may then fail the request on its own
 * (pool overflow) without ever calling completed_cb, which would leak it;
 * access_cb allocates when (and only if) it is reached. */
static char too_long_marker;

static http_req *req_new(http_server *s, struct MHD_Connection *conn, const char *uri)
{
    http_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = s;
    r->conn = conn;
    r->t0_us = mono_us();
    pthread_mutex_init(&r->lock, NULL);
    form_init(&r->query);
    buf_init(&r->body, s->cfg.max_body);
    snprintf(r->request_id, sizeof r->request_id, "RQ%012llx",
             (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    if (!uri) {
        r->uri_too_long = true;
        r->uri = strdup("");
        r->path = strdup("");
    } else {
        const char *q = strchr(uri, '?');
        r->uri = strdup(uri);
        r->path = q ? strndup(uri, (size_t)(q - uri)) : strdup(uri);
        if (q) r->query_status = form_parse(&r->query, q + 1, strlen(q + 1));
    }
    return r;
}

/* Called by MHD with the raw request target, before MHD splits off and
 * parses the query string. We keep our own copy of the URI and parse the
 * query ourselves (form_parse: exact bytes for signatures, our limits), so
 * MHD's parse is pure waste — and it is dangerous: MHD stores one record
 * per argument in the connection pool, and when thousands of tiny
 * arguments overflow it, 0.9.75 drops the request without an answer. So
 * the query is cut to "" for MHD: the byte after '?' becomes NUL. The
 * buffer is MHD's writable read buffer (the parameter is const only as a
 * promise MHD makes to callers that don't know this); every MHD release
 * from 0.9.x to 1.0 calls this callback after locating '?' and before
 * parsing what follows it, and only parses up to the first NUL. */
static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    char *q = strchr(uri, '?');
    void *ctx;
    if (strlen(uri) > HTTP_MAX_URI) {
        ctx = &too_long_marker;
    } else {
        http_req *r = req_new(cls, conn, uri);
        if (r) atomic_fetch_add(&((http_server *)cls)->active, 1);
        ctx = r;
    }
    if (q && q[1]) q[1] = '\0';
    return ctx;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)url; (void)version;
    if (*con_cls == &too_long_marker) {
        *con_cls = req_new(cls, conn, NULL);
        if (*con_cls) atomic_fetch_add(&((http_server *)cls)->active, 1);
    }
    http_req *r = *con_cls;
    if (!r || !r->uri || !r->path) return MHD_NO;   /* out of memory: drop */

    if (!r->started) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->started = true;
        r->method = method;
        /* The head is complete: its deadline no longer applies. */
        r->guard = ci ? ci->socket_context : NULL;
        connguard_head_done(r->guard);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!r->too_big && buf_append(&r->body, upload_data, *upload_data_size) != BUF_OK)
            r->too_big = true;   /* keep reading so we can answer 413 cleanly */
        *upload_data_size = 0;
        return MHD_YES;
    }

    pthread_mutex_lock(&r->lock);
    bool suspended = r->suspended;
    struct MHD_Response *resp = r->resp;
    bool run = !suspended && !r->dispatched;
    if (run) r->dispatched = true;
    pthread_mutex_unlock(&r->lock);
    if (suspended) return MHD_YES;  /* spurious wake-up before the reply */

    /* Runs again only when another thread has asked for a second dispatch
     * (http_redispatch) before the first one returned here. */
    while (run) {
        dispatch(r);
        pthread_mutex_lock(&r->lock);
        suspended = r->suspended;
        resp = r->resp;
        run = !suspended && !resp && !r->dispatched;
        if (run) r->dispatched = true;
        pthread_mutex_unlock(&r->lock);
        if (suspended) return MHD_YES;
    }
    if (!resp) return MHD_NO;       /* a handler that did not reply: close */
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    return ret;
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    http_server *s = cls;
    http_req *r = *con_cls;
    if (!r || *con_cls == (void *)&too_long_marker) return;
    if (r->dispatched) {
        int64_t us = mono_us() - r->t0_us;
        if (s->cfg.observe) s->cfg.observe(s->cfg.ctx, http_route_name(r), r->status, us);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            log_debug("http", "%s %s ended early (%d)", r->method, r->path, (int)toe);
        if (s->cfg.access) s->cfg.access(s->cfg.ctx, r, r->status, r->bytes, us);
    }
    atomic_fetch_sub(&s->active, 1);
    atomic_store(&s->last_done_ms, (long long)timefmt_mono_ms());
    if (r->guard && s->guard) connguard_request_done(s->guard, r->guard);
    if (r->resp) MHD_destroy_response(r->resp);
    json_decref(r->held);
    form_fini(&r->query);
    buf_fini(&r->body);
    if (r->auth_pass) memset(r->auth_pass, 0, strlen(r->auth_pass));
    free(r->auth_user);
    free(r->auth_pass);
    free(r->uri);
    free(r->path);
    pthread_mutex_destroy(&r->lock);
    free(r);
    *con_cls = NULL;
}

void http_hold_json(http_req *r, json_t *j)
{
    json_decref(r->held);
    r->held = j;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    http_server *s = cls;
    char line[512];
    unsigned long dropped = 0;
    int64_t now = timefmt_mono_ms();
    pthread_mutex_lock(&s->log_lock);
    if (now - s->log_window_ms >= 1000) {
        s->log_window_ms = now;
        s->log_in_window = 0;
    }
    if (s->log_in_window >= HTTP_MHD_LOG_PER_S) {
        s->log_suppressed++;
        pthread_mutex_unlock(&s->log_lock);
        return;
    }
    s->log_in_window++;
    dropped = s->log_suppressed;
    s->log_suppressed = 0;
    pthread_mutex_unlock(&s->log_lock);
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (dropped) log_warn("mhd", "%s (and %lu similar message(s) not logged)", line, dropped);
    else log_warn("mhd", "%s", line);
}

/* The acceptor thread's hand-over: connguard counts the connection now (on
 * the one acceptor thread, so the per-client limit is exact however fast
 * connections arrive) and the MHD worker that takes it claims the handle. */
static void on_accept(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
    http_server *s = arg;
    if (!connguard_admit(s->guard, sa, fd, s->cfg.max_connections)) {
        close(fd);
        return;
    }
    /* MHD closes fd itself when it refuses it, with no notification. */
    if (MHD_add_connection(s->d, fd, sa, len) != MHD_YES)
        connguard_close(s->guard, connguard_claim(s->guard, fd));
}

static void conn_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                    enum MHD_ConnectionNotificationCode code)
{
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ad = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        connguard_conn *gc = fd ? connguard_claim(s->guard, fd->connect_fd) : NULL;
        if (!gc && fd && ad) gc = connguard_open(s->guard, ad->client_addr, fd->connect_fd);
        *socket_context = gc;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        connguard_close(s->guard, *socket_context);
        *socket_context = NULL;
    }
}

http_server *http_start(const http_config *cfg, char *err, size_t errlen)
{
    http_server *s = calloc(1, sizeof *s);
    struct sockaddr_in sa;
    struct sockaddr_in6 sa6;
    struct sockaddr *bind_sa = (struct sockaddr *)&sa;
    socklen_t bind_len = sizeof sa;
    /* No listening socket of MHD's own (listener.c); MHD_USE_ITC wakes the
     * worker that MHD_add_connection gives a connection to. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    char gerr[160];
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->cfg = *cfg;
    pthread_mutex_init(&s->log_lock, NULL);
    memset(&sa, 0, sizeof sa);
    memset(&sa6, 0, sizeof sa6);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    sa6.sin6_family = AF_INET6;
    sa6.sin6_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->address, &sa.sin_addr) == 1) {
        /* IPv4 as before */
    } else if (inet_pton(AF_INET6, cfg->address, &sa6.sin6_addr) == 1) {
        /* Dual stack: "::" takes IPv4 clients too (as v4-mapped addresses),
         * as docs/configuration.md promises for all interfaces. */
        bind_sa = (struct sockaddr *)&sa6;
        bind_len = sizeof sa6;
    } else {
        snprintf(err, errlen, "listen.address: '%s' is not an IPv4 or IPv6 address", cfg->address);
        goto fail;
    }
    s->guard = connguard_create(cfg->max_per_client, cfg->head_timeout_ms > 0 ? cfg->head_timeout_ms : 10000,
                                HTTP_IDLE_TIMEOUT_S * 1000, cfg->limit_exempt, gerr, sizeof gerr);
    if (!s->guard) {
        snprintf(err, errlen, "listen.limit_exempt: %s", gerr);
        goto fail;
    }
    char lerr[160];
    s->lsn = listener_open(bind_sa, bind_len, lerr, sizeof lerr);
    if (!s->lsn) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->address, cfg->port, lerr);
        goto fail;
    }
    s->d = MHD_start_daemon(
        flags, 0, NULL, NULL, access_cb, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->threads > 0 ? cfg->threads : 1),
        MHD_OPTION_URI_LOG_CALLBACK, uri_cb, s,
        MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s,
        MHD_OPTION_NOTIFY_CONNECTION, conn_cb, s,
        MHD_OPTION_CONNECTION_LIMIT, mhd_connection_limit(cfg),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
        MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot serve HTTP on %s:%d: libmicrohttpd did not start",
                 cfg->address, cfg->port);
        goto fail;
    }
    if (listener_start(s->lsn, on_accept, s) != 0) {
        snprintf(err, errlen, "cannot start the HTTP acceptor thread");
        MHD_stop_daemon(s->d);
        goto fail;
    }
    s->port = listener_port(s->lsn);
    return s;
fail:
    listener_free(s->lsn);
    connguard_destroy(s->guard);
    pthread_mutex_destroy(&s->log_lock);
    free(s);
    return NULL;
}

void http_guard_stats(http_server *s, uint64_t *refused, uint64_t *head_timeouts)
{
    connguard_stats st = {0};
    if (s && s->guard) connguard_get_stats(s->guard, &st);
    *refused = st.refused;
    *head_timeouts = st.head_timeouts;
}

int http_port(const http_server *s) { return s->port; }

bool http_drained(http_server *s, int64_t quiet_ms)
{
    if (!s || !s->d) return true;
    if (atomic_load(&s->active) > 0) return false;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (!di || di->num_connections == 0) return true;
    /* Idle keep-alive connections: give a client that is about to reuse
     * one a moment (its answer will close it), then stop. */
    return timefmt_mono_ms() - (int64_t)atomic_load(&s->last_done_ms) >= quiet_ms;
}

void http_quiesce(http_server *s)
{
    /* From here the kernel refuses new connections (listener_close); the
     * open ones are served, each answer asking the client to close. */
    if (s && s->d && !atomic_exchange(&s->draining, true)) listener_close(s->lsn);
}

void http_stop(http_server *s)
{
    if (!s) return;
    listener_free(s->lsn);   /* first: the acceptor hands connections to s->d */
    if (s->d) MHD_stop_daemon(s->d);
    connguard_destroy(s->guard);
    pthread_mutex_destroy(&s->log_lock);
    free(s);
}

/* ---- console hook (issue 20): streaming replies (httpd.h) ----
 * The reader runs under s->lock and suspends the connection when it has
 * nothing to send; http_stream_wake takes the same lock before resuming, so
 * a wake between "nothing" and the suspension cannot be lost. */
/* Kernel send buffer of a streaming reply's socket (Linux doubles it). */
#define HTTP_STREAM_SNDBUF (64 * 1024)

struct http_stream {
    pthread_mutex_t        lock;
    struct MHD_Connection *conn;
    bool                   paused, dead;
    atomic_int             refs;
    long                 (*rd)(void *ctx, char *buf, size_t max);
    void                 (*done)(void *ctx);
    void                  *ctx;
};

static void stream_unref(http_stream *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1) return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max)
{
    http_stream *s = cls;
    (void)pos;
    pthread_mutex_lock(&s->lock);
    long n = s->rd(s->ctx, out, max);
    if (n == 0) {
        s->paused = true;
        MHD_suspend_connection(s->conn);
    }
    pthread_mutex_unlock(&s->lock);
    return n == -1 ? MHD_CONTENT_READER_END_OF_STREAM
         : n < 0  ? MHD_CONTENT_READER_END_WITH_ERROR : (ssize_t)n;
}

static void stream_free(void *cls)
{
    http_stream *s = cls;
    pthread_mutex_lock(&s->lock);
    s->dead = true;
    pthread_mutex_unlock(&s->lock);
    s->done(s->ctx);
    stream_unref(s);
}

http_stream *http_reply_stream(http_req *r, const char *content_type, unsigned idle_s,
                               long (*rd)(void *ctx, char *buf, size_t max),
                               void (*done)(void *ctx), void *ctx, const char *const *headers)
{
    http_stream *s = calloc(1, sizeof *s);
    struct MHD_Response *resp = NULL;
    if (s) {
        pthread_mutex_init(&s->lock, NULL);
        s->conn = r->conn;
        s->rd = rd;
        s->done = done;
        s->ctx = ctx;
        atomic_init(&s->refs, 2);
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, s,
                                                 stream_free);
        if (!resp) {
            pthread_mutex_destroy(&s->lock);
            free(s);
            s = NULL;
        }
    }
    if (s && idle_s) MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT, idle_s);
    /* Loopback and LAN sockets grow their send buffer to megabytes: a client
     * that stopped reading would hide that much in the kernel before the
     * stream's own bounded buffer noticed. */
    const union MHD_ConnectionInfo *ci =
        s ? MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD) : NULL;
    int sndbuf = HTTP_STREAM_SNDBUF;
    if (ci) (void)setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    set_response(r, 200, resp, 0, content_type, headers);
    return s;
}

void http_stream_wake(http_stream *s)
{
    pthread_mutex_lock(&s->lock);
    if (s->paused && !s->dead) {
        s->paused = false;
        MHD_resume_connection(s->conn);
    }
    pthread_mutex_unlock(&s->lock);
}

void http_stream_release(http_stream *s)
{
    if (s) stream_unref(s);
}
