/* connguard — per-client connection limits and the request-head deadline
 * for the REST listener (issue 16 §3).
 *
 * What it defends: one client address holding so many connections, or
 * dribbling request heads so slowly (a byte now and then restarts
 * libmicrohttpd's idle timeout), that nobody else gets served.
 *   - At most max_per_client open connections per client address (IPv4, or
 *     IPv6 with v4-mapped addresses folded to IPv4); addresses in the exempt
 *     list (Kaphila's, a local reverse proxy's) are not counted against it.
 *   - A connection's first request head must be complete within
 *     head_timeout_ms of its accept; a later one (keep-alive) within the
 *     idle timeout of the previous request's end, counted from then and not
 *     restarted by bytes. Past it, the socket is shut down and
 *     libmicrohttpd closes the connection in its own thread.
 *   - Refusals and closes are logged at most once per CONNGUARD_LOG_INTERVAL_MS
 *     with their counts, never once per connection.
 *
 * Threads: connguard_admit (which uses _accept and _open) runs on the
 * listener's acceptor thread ("http-accept"); _claim and _close on
 * libmicrohttpd's pool threads (connection notifications); _head_done and
 * _request_done on the thread serving the connection. One thread of its own ("http-guard")
 * sweeps the open connections for expired deadlines. The table of clients
 * and the list of connections share one mutex, taken once per connection
 * open and close and by the sweep, never per request: per request there is
 * one atomic store.
 *
 * Ownership: the guard owns every connguard_conn; a connection's handle is
 * valid from _open until _close, which frees it. An admitted handle no
 * thread claims by its head deadline (the server dropped the connection
 * untold) is freed by the sweep, its socket left alone: the number may be
 * another socket's by then. */
#ifndef TWIGATE_CONNGUARD_H
#define TWIGATE_CONNGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct connguard connguard;
typedef struct connguard_conn connguard_conn;

/* Exempt addresses: a list whose length is bounded by the config line; more
 * than this is a configuration mistake, not a deployment. */
#define CONNGUARD_MAX_EXEMPT 64
/* Refusal and deadline messages: one line per interval with the counts. */
#define CONNGUARD_LOG_INTERVAL_MS 10000

typedef struct connguard_stats {
    uint64_t refused;          /* connections refused: over max_per_client */
    uint64_t head_timeouts;    /* connections closed: head not complete in time */
    uint64_t open;             /* connections open now */
} connguard_stats;

/* max_per_client 0 = no per-client limit. exempt: comma list of IP
 * addresses (v4 or v6), may be NULL or "". idle_ms: the listener's idle
 * timeout, the deadline of heads after the first. NULL with err filled on a
 * bad address or out of memory. */
connguard *connguard_create(int max_per_client, int head_timeout_ms, int idle_ms,
                            const char *exempt, char *err, size_t errlen);
void connguard_destroy(connguard *g);   /* accepts NULL; stops the sweep thread */

/* Checks an address for acceptance (libmicrohttpd's accept policy). */
bool connguard_accept(connguard *g, const struct sockaddr *sa, socklen_t len);
/* A connection opened (fd: its socket); NULL on out of memory (then the
 * connection is simply not guarded). */
connguard_conn *connguard_open(connguard *g, const struct sockaddr *sa, int fd);
/* The acceptor's whole check for a new connection (fd) from sa: refused
 * (NULL) at max_open open connections (0 = no cap) or over the per-client
 * limit, else opened and kept in a hand-over list until the thread that
 * will serve it takes it with connguard_claim. Counting here, on the one
 * accepting thread, makes the per-client limit exact. NULL also on out of
 * memory. */
connguard_conn *connguard_admit(connguard *g, const struct sockaddr *sa, int fd, int max_open);
/* The admitted handle of fd, taken out of the hand-over list; NULL if none. */
connguard_conn *connguard_claim(connguard *g, int fd);
/* The request head is complete: the deadline stops. */
void connguard_head_done(connguard_conn *c);
/* The request is done; the next head's deadline (the idle timeout) starts
 * now. */
void connguard_request_done(connguard *g, connguard_conn *c);
/* The connection is closing: called before its socket is closed. */
void connguard_close(connguard *g, connguard_conn *c);

void connguard_get_stats(connguard *g, connguard_stats *out);

/* Parses one IP address (v4 or v6) into the guard's 16-byte key form;
 * false if it is none. Exposed for the config check. */
bool connguard_parse_addr(const char *s, size_t n, unsigned char key[16]);

#endif
