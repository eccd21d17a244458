/* rest — the Twilio REST API (2010-04-01) and twigate's own endpoints
 * (/healthz, /readyz, /metrics, /kaphila/events/{token}) as a route table
 * for http. Handlers run on HTTP threads; they read the store directly and
 * hand anything that changes a live call to the engine.
 * rest.c: routing, authentication, Account, health, metrics, Kaphila events.
 * rest_calls.c: Calls, call Events and Notifications. */
#ifndef TWIGATE_REST_H
#define TWIGATE_REST_H

#include "conf/app.h"
#include "conf/config.h"
#include "engine/engine.h"
#include "net/httpd.h"

const http_route *rest_routes(void);
/* The handler for paths no route matches: a Twilio-shaped JSON 404. */
void rest_not_found(void *ctx, http_req *r, const http_match *m);
/* Metrics hook for http_config.observe. */
void rest_observe(void *ctx, const char *route, int status, int64_t usec);
/* Access log hook for http_config.access: a line at info when log.access
 * is on (reloadable), with query values and Kaphila's event token hidden. */
void rest_access(void *ctx, const http_req *r, int status, uint64_t bytes, int64_t usec);

/* Shared by the rest_*.c files. Authenticates r for the account in the path;
 * on failure replies 401 (20003) itself and returns NULL. With
 * accounts.kaphila_keys it may also answer 429/503 or suspend r while
 * Kaphila checks a key (keyauth.h) and return NULL: the handler is then
 * dispatched again. Either way a NULL means "return at once". */
const config_account *rest_auth(app *a, http_req *r, const char *path_account_sid);
/* Parses the POST body as a form (content type checked); replies 400/415
 * and returns false on failure. */
bool rest_body_form(app *a, http_req *r, form *out);

/* r as the engine's transport reply (engine.h): the engine answers r
 * through http_reply* without knowing HTTP. Any thread. */
engine_reply rest_engine_reply(http_req *r);

/* Route handlers (rest_calls.c). */
void rest_calls_create(void *ctx, http_req *r, const http_match *m);
void rest_calls_list(void *ctx, http_req *r, const http_match *m);
void rest_call_fetch(void *ctx, http_req *r, const http_match *m);
void rest_call_update(void *ctx, http_req *r, const http_match *m);
void rest_call_delete(void *ctx, http_req *r, const http_match *m);
void rest_call_events(void *ctx, http_req *r, const http_match *m);
void rest_notifications_list(void *ctx, http_req *r, const http_match *m);
void rest_notification_fetch(void *ctx, http_req *r, const http_match *m);

/* Paging parameters (PageSize 1..1000 default 50, Page >= 0, PageToken);
 * replies 400 and returns false when invalid. */
typedef struct rest_paging {
    int         page_size;
    int         page;
    const char *token;       /* NULL when absent */
} rest_paging;
bool rest_paging_parse(http_req *r, rest_paging *p);

/* The one date filter of every list: name, name< and name> from the query
 * (StartTime, EndTime, DateCreated). A date (YYYY-MM-DD) means that whole
 * UTC day, a date-time that second; an empty value is no filter. Sets
 * [*from, *to) in ms, leaving a bound untouched when not given; a bound at
 * the epoch is kept as 1 ms, since 0 means "unbounded" to the store.
 * false: replied 400 (TWERR_BAD_PARAM) naming the parameter. */
bool rest_date_filter(http_req *r, const char *name, int64_t *from, int64_t *to);

#endif
