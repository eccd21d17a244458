/* webhook — one client for every request to a customer URL: status
 * callbacks, TwiML fetches, action URLs, AMD and recording callbacks.
 *
 * Form-encoded POST (or GET with the parameters appended to the query),
 * UTF-8, User-Agent TwilioProxy/1.1, X-Twilio-Signature over the URL as
 * configured minus its fragment, I-Twilio-Idempotency-Token (one per logical
 * delivery, reused on retries), Twilio's timeouts and retries with the URL
 * fragment overrides (#ct #rt #tt #rc #rp), a response size cap and the
 * destination policy (netpolicy.h) judged on every connection. Customer
 * connections are cached apart from Kaphila's, per policy generation
 * (loop_http_start_isolated), and never go through an environment proxy.
 * Runs on a loop: nothing blocks. Loop thread only. */
#ifndef TWIGATE_WEBHOOK_H
#define TWIGATE_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "base/buf.h"
#include "base/form.h"
#include "net/loop.h"
#include "net/netpolicy.h"
#include "base/sid.h"

typedef struct webhook_req {
    const char *url;            /* as configured, fragment allowed */
    const char *method;         /* "GET" or "POST" */
    const form *params;         /* Twilio's parameters (may be NULL) */
    const char *encoded;        /* params already form-encoded (an outbox row), or NULL */
    const char *auth_token;     /* signs the request */
    const char *idem;           /* idempotency token; NULL = make one */
    size_t      max_response;   /* bytes kept of the body; beyond → 11750 */
    netpolicy  *policy;         /* destinations (required); the delivery takes a reference */
    bool        follow_redirects; /* TwiML fetches follow 301/302/307/308 like Twilio */
} webhook_req;

typedef struct webhook_result {
    int     http_status;        /* last attempt's HTTP status, 0 = none */
    int     error_code;         /* 0 = success (2xx); else 11200, 11205, 11210, 11215, 11237, 11750 */
    char    error_msg[256];
    buf     body;               /* response body (capped) */
    char    content_type[128];
    int     attempts;
    int64_t duration_ms;        /* all attempts */
    char    url[2048];          /* the URL requested (fragment removed; GET: with query) */
    char    idem[TOKEN_SIZE];
    bool    aborted;            /* cut by the loop's shutdown: not an outcome */
} webhook_result;

/* Called once when the delivery is over (success or the last failure).
 * res is freed after the callback returns. */
typedef void (*webhook_cb)(loop *l, void *arg, const webhook_result *res);

/* Copies everything it needs from req. 0 = under way; -1 = could not start
 * (then the callback is not called). */
__attribute__((warn_unused_result))
int webhook_send(loop *l, const webhook_req *req, webhook_cb cb, void *arg);

#endif
