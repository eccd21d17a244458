/* httpd — twigate's HTTP server glue on libmicrohttpd: generic (no REST or
 * engine knowledge), so both the daemon (src/http, src/console) and the
 * Kaphila simulator (src/sim) serve through it.
 *
 * Collects each request (raw URI, query, headers it needs, body under a hard
 * cap), routes it through a table of (method, path pattern, handler), and
 * sends the handler's answer. A handler that must wait (for Kaphila, say)
 * calls http_suspend and returns; whoever finishes the work later calls one of
 * the http_reply_* functions from any thread, which resumes the connection.
 * No handler ever blocks an MHD thread on the network.
 *
 * Per-client connection limits and the request-head deadline are
 * connguard's (connguard.h), checked by the acceptor before a connection
 * reaches MHD and kept through MHD's connection notifications.
 *
 * Threads: the acceptor ("http-accept", src/net/listener.c: twigate owns the
 * listening socket, so a drain can refuse new connections without
 * MHD_quiesce_daemon), MHD's internal pool ("http-N") and connguard's sweep
 * ("http-guard"). http_req objects belong to the server; a handler may
 * keep a pointer to a suspended request until it replies exactly once. */
#ifndef TWIGATE_HTTPD_H
#define TWIGATE_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>
#include "base/buf.h"
#include "base/form.h"

typedef struct http_server http_server;
typedef struct http_req http_req;

#define HTTP_MAX_CAPTURES 4
#define HTTP_CAPTURE_LEN  128

typedef struct http_match {
    int  n;
    char cap[HTTP_MAX_CAPTURES][HTTP_CAPTURE_LEN];
} http_match;

typedef void (*http_handler)(void *ctx, http_req *r, const http_match *m);

typedef struct http_route {
    const char  *method;      /* "GET", "POST", "DELETE", or NULL = any */
    const char  *pattern;     /* "/2010-04-01/Accounts/ * /Calls.json": '*' = one segment part */
    http_handler fn;
    const char  *name;        /* metrics label */
} http_route;

typedef struct http_config {
    const char *address;
    int         port;             /* 0 = any free port */
    int         threads;
    size_t      max_body;         /* bytes; over → 413 */
    int         max_connections;  /* > 0; open connections, counted by connguard (httpd.c: MHD's own limit is never met) */
    int         max_per_client;   /* open connections per client address; 0 = no limit */
    int         head_timeout_ms;  /* a connection's first request head must be in by then */
    const char *limit_exempt;     /* comma list of addresses max_per_client skips; may be NULL */
    const http_route *routes;     /* terminated by a route with pattern NULL */
    http_handler not_found;       /* called when nothing matches (m->n == 0) */
    void       *ctx;              /* passed to every handler */
    /* Called once per finished request (metrics); may be NULL. */
    void      (*observe)(void *ctx, const char *route, int status, int64_t usec);
    /* Called once per finished request with its status, response body
     * bytes and µs, on the MHD thread (the access log); may be NULL. */
    void      (*access)(void *ctx, const http_req *r, int status, uint64_t bytes, int64_t usec);
    /* Answers a transport-level refusal (413, 414, malformed query, 405)
     * in the server's own error format (the simulator's is Kaphila's);
     * NULL = Twilio's error body (http_reply_error). Must reply. */
    void      (*refuse)(void *ctx, http_req *r, int status, const char *message);
} http_config;

http_server *http_start(const http_config *cfg, char *err, size_t errlen);
int  http_port(const http_server *s);
/* Stops accepting, waits for MHD threads; accepts NULL. Suspended requests
 * must have been answered before. */
void http_stop(http_server *s);
/* Stop accepting new connections (SIGTERM), keep serving the open ones;
 * from now on every response asks the client to close its connection. */
void http_quiesce(http_server *s);
/* True when no request is in flight and either no connection is open or
 * none has carried a request for quiet_ms (idle keep-alive connections).
 * Any thread; the drain at SIGTERM polls it. */
bool http_drained(http_server *s, int64_t quiet_ms);
/* Connections refused over max_per_client and closed for a late request
 * head, since start (metrics). Any thread. */
void http_guard_stats(http_server *s, uint64_t *refused, uint64_t *head_timeouts);

/* Request accessors (valid until the reply has been sent). */
const char *http_method(const http_req *r);
const char *http_path(const http_req *r);       /* raw path, no query */
const char *http_raw_uri(const http_req *r);    /* path + '?' + query as received */
const form *http_query(const http_req *r);      /* decoded query parameters */
const buf  *http_body(const http_req *r);
const char *http_header(const http_req *r, const char *name);   /* case-insensitive */
bool        http_peer_is_loopback(const http_req *r);
/* The client's address as 16 bytes (IPv4 as v4-mapped IPv6); false if unknown. */
bool        http_peer_addr(const http_req *r, unsigned char key[16]);
const char *http_request_id(const http_req *r);
const char *http_route_name(const http_req *r);
/* Basic credentials; false when absent or malformed. Strings owned by r. */
bool http_basic_auth(http_req *r, const char **user, const char **pass);
/* The parser behind it, for any Authorization value (NULL too): on true,
 * *user and *pass are malloc'd for the caller (who wipes *pass); a scheme in
 * any case, strict base64, no NUL byte in the credentials. */
bool http_basic_decode(const char *header, char **user, char **pass);

/* r keeps j (a reference taken from the caller) until the request ends, and
 * drops it then on the HTTP thread. For a tree parsed on this thread and
 * handed to another that drops its own reference first (a Kaphila event and
 * the engine): the last reference, and so the free of every node, stays on
 * the thread that allocated them — off the engine's single thread (its
 * json_delete was 4.6 % of its CPU per create) and into the arena they came
 * from. HTTP thread (the handler), before the request is handed over. */
void http_hold_json(http_req *r, json_t *j);

/* Replies; call exactly one of them once per request, from any thread.
 * Extra headers: NULL-terminated name/value array, may be NULL. */
void http_suspend(http_req *r);
/* Instead of a reply, for a suspended request whose handler must run again
 * (its answer now in a cache the handler reads: Kaphila-key accounts,
 * keyauth.h): resumes the connection and routes the request once more on
 * an MHD thread. Any thread; at most once per request. */
void http_redispatch(http_req *r);
bool http_redispatched(const http_req *r);
void http_reply(http_req *r, int status, const char *content_type, const char *body,
                size_t len, const char *const *headers);
/* Takes ownership of body (malloc'd). */
void http_reply_owned(http_req *r, int status, const char *content_type, char *body,
                      size_t len, const char *const *headers);
/* Sends len bytes of the file fd from offset (zero-copy, for media such
 * as recordings). Takes ownership of fd. */
void http_reply_fd(http_req *r, int status, const char *content_type, int fd, uint64_t offset,
                   uint64_t len, const char *const *headers);
/* Sends a body of len bytes that rd(ctx, pos, out, max) writes on an MHD
 * thread as it goes out, block bytes at a time (generated media: the
 * simulator's recordings); rd returns the bytes written, never asked past
 * len. free_ctx(ctx) runs once the response is gone, or at once when it
 * could not be made (r is then answered 500). */
void http_reply_generated(http_req *r, int status, const char *content_type, uint64_t len,
                          size_t block, ssize_t (*rd)(void *ctx, uint64_t pos, char *out, size_t max),
                          void (*free_ctx)(void *ctx), void *ctx, const char *const *headers);
/* Steals the reference to j. */
void http_reply_json(http_req *r, int status, json_t *j);
/* Twilio's JSON error body from the errors catalogue; message NULL = title.
 * Transport-level refusals that have no Twilio code (413, 414, malformed
 * query) use the HTTP status as the code; docs/api.md lists them. */
void http_reply_error(http_req *r, int code, int status, const char *message);
void http_reply_error_h(http_req *r, int code, int status, const char *message,
                        const char *const *headers);

/* ---- console hook (issue 20): streaming replies, for server-sent events ----
 * http_reply_stream answers r with a body of unknown length read through
 * rd(ctx, buf, max) on an MHD thread: > 0 bytes written, 0 = nothing now
 * (the connection is suspended until http_stream_wake), -1 = the end (the
 * connection may carry another request), -2 = abort (it is closed). rd must
 * not block. The stream has two references, the caller's and the
 * connection's: done(ctx) runs once the connection has let go, and the
 * caller gives its reference back with http_stream_release (after which it
 * must not call wake). idle_s: the connection is closed when no byte could be
 * sent for that long (a stalled client). NULL when the reply failed (then
 * done is not called and r has been answered 500). */
typedef struct http_stream http_stream;
http_stream *http_reply_stream(http_req *r, const char *content_type, unsigned idle_s,
                               long (*rd)(void *ctx, char *buf, size_t max),
                               void (*done)(void *ctx), void *ctx, const char *const *headers);
void http_stream_wake(http_stream *s);       /* any thread */
void http_stream_release(http_stream *s);    /* accepts NULL */

#endif
