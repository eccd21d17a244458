/* console_int — what console.c and console_stream.c share (console.h has
 * the map). The console struct is created by console_stream.c. */
#ifndef TWIGATE_CONSOLE_INT_H
#define TWIGATE_CONSOLE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include "conf/config.h"
#include "console/console.h"

#define CONSOLE_MAX_DIGITS 32   /* keys in one press request: the simulator presses them in turn */
#define CONSOLE_SIGNED_EVENTS 200   /* the request log entries the page shows (PageSize=200) */

typedef struct cstream cstream;
typedef struct console_job console_job;

struct console {
    app            *a;
    http_route     *routes;              /* console_routes' table */
    unsigned char   csrf_key[32];        /* drawn at start: tokens die with the process */
    pthread_t       thread;
    bool            started;
    int             wake_fd;             /* eventfd: the thread's wake-ups are never lost */
    atomic_bool     armed;               /* the thread waits for a call change */
    pthread_mutex_t lock;                /* guards everything below */
    bool            stopping;
    cstream        *streams[CONSOLE_MAX_STREAMS];
    int             n_streams;
    console_job    *jobs[CONSOLE_MAX_JOBS];   /* FIFO */
    int             n_jobs;
};

const config_account *console_auth(app *a, http_req *r);
bool console_csrf_ok(app *a, http_req *r, const char *account_sid);
bool console_key_init(console *c);
/* Answer r later from the console thread (or now, 503, when full). action
 * "me": Kaphila's GET /api/me with bearer (copied, wiped after). */
void console_job_submit(console *c, http_req *r, const char *call_sid, const char *action,
                        const char *digits, const char *bearer);
/* GET /console/api/queue (console_queue.c): the account's key's budget and
 * its queued calls. */
void console_queue(void *ctx, http_req *r, const http_match *m);
/* Cache-Control: no-store and the console's security headers (console.c). */
extern const char *const console_no_store[];
/* Answer r with the account's event stream (or 503 when full). */
void console_stream_open(console *c, http_req *r, const char *account_sid);

#endif
