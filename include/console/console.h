/* console — the web console at /console/ (issue 20, docs/console.md).
 *
 * Most of the console is static files (console/, compiled in by
 * tools/mkassets.c) that use twigate's own REST handlers, mounted again
 * under /console/api/2010-04-01/… so that the browser's Basic credentials,
 * asked for on /console/, cover them. The server part adds only what the
 * REST API cannot give:
 *   - the assets, with a strict Content-Security-Policy;
 *   - GET /console/api/session: who is logged in, and the CSRF token that
 *     every state-changing console request must carry (X-Twigate-CSRF):
 *     HMAC-SHA256 of the account SID under a key drawn at start-up;
 *   - GET /console/api/stream: server-sent events, one "call" event per call
 *     of the account's newest CONSOLE_STREAM_CALLS that appeared or changed.
 *     Design: the "console" thread sleeps on an eventfd until the store's
 *     change signal (store_call_changes: writers bump it after a transaction
 *     that wrote call rows, and write the eventfd only when the thread armed
 *     it) says calls changed; then, at most once per CONSOLE_QUERY_MS per
 *     stream (a burst of changes costs a few reads, not one each), it reads
 *     the newest calls of each open stream's account with a pooled store
 *     connection (an indexed keyset read, the engine is never asked or
 *     slowed), diffs them with what the stream last saw and appends events to
 *     the stream's bounded buffer; the connection is suspended while it has
 *     nothing to send (http_reply_stream). A browser that does not read is
 *     cut off: by the buffer's cap (CONSOLE_STREAM_BUF) and by the
 *     connection's idle deadline (CONSOLE_STREAM_IDLE_S);
 *     Nothing changed: no read at all, only a heartbeat every
 *     CONSOLE_HEARTBEAT_MS. Each read counts in
 *     twigate_console_stream_queries_total;
 *   - GET /console/api/calls/{CallSid}/signatures: each logged webhook's
 *     X-Twilio-Signature, recomputed (the request log does not keep it);
 *   - GET /console/api/queue (console_queue.c): the account's queued calls
 *     and its Kaphila key's budget, from engine_budget_snapshot (matched by
 *     the key's label, never the key) and a store read, on the HTTP thread;
 *   - GET /console/api/kaphila/me: the account key's credits from Kaphila's
 *     GET /api/me, asked by the console thread (the key never leaves);
 *   - /console/api/sim/{CallSid}[/digits|/hangup]: the simulator's control
 *     API (kaphila.url = sim) for the account's own calls only, proxied over
 *     loopback HTTP by the console thread (the browser never reaches the
 *     simulator's port; the simulator has no in-process C API for these).
 *
 * Threads: handlers run on HTTP threads; one "console" thread feeds the
 * streams and runs the simulator and /api/me requests (a job queue capped at
 * CONSOLE_MAX_JOBS; the suspended HTTP request is answered from there). The
 * store's change hook runs on whichever thread committed call rows (engine,
 * HTTP): an atomic flag and, when armed, an eventfd write, never a lock.
 * console_create/console_stop/console_destroy from main only. */
#ifndef TWIGATE_CONSOLE_H
#define TWIGATE_CONSOLE_H

#include <stddef.h>
#include "conf/app.h"
#include "net/httpd.h"

typedef struct console console;

#define CONSOLE_QUERY_MS       500      /* a stream's reads while calls change: "live" to a human */
#define CONSOLE_STREAM_CALLS   50       /* the first page of the console's call list */
#define CONSOLE_STREAM_BUF     (256 * 1024)  /* unsent bytes per stream before cut-off */
#define CONSOLE_STREAM_IDLE_S  30       /* no byte sent for this long: closed */
#define CONSOLE_HEARTBEAT_MS   15000    /* an SSE comment keeps proxies and the deadline happy */
#define CONSOLE_MAX_STREAMS    32       /* open streams, all accounts */
#define CONSOLE_MAX_JOBS       32       /* simulator requests waiting */
#define CONSOLE_SIM_BODY_MAX   (1024 * 1024)  /* a transcript answer read at most */

/* Starts the console thread. NULL on failure (reason in err). */
console *console_create(app *a, char *err, size_t errlen);
/* The console's routes followed by rest (a new table, owned by c). */
const http_route *console_routes(console *c, const http_route *rest);
/* Ends every stream and answers every waiting job (SIGTERM drain, and
 * before http_stop); accepts NULL. */
void console_stop(console *c);
/* After http_stop; accepts NULL. */
void console_destroy(console *c);

#endif
