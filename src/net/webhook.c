/* webhook.c — signed customer requests on the loop, with Twilio's retry
 * rules. Map: destination policy; request construction (URL, body,
 * signature, headers); one attempt; classification of the outcome and the
 * retry decision. */
#include "net/webhook.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/fragment.h"
#include "net/netpolicy.h"
#include "base/log.h"
#include "base/signature.h"

/* URLs longer than this are refused (Twilio's own limit is 4 KiB). */
#define WEBHOOK_MAX_URL 4096
/* Twilio follows a handful of redirects when fetching TwiML. */
#define WEBHOOK_MAX_REDIRECTS 10

typedef struct delivery {
    webhook_cb         cb;
    void              *arg;
    fragment_opts      opts;
    char              *url;          /* what we request (GET: with the parameters) */
    char              *host;         /* of the URL as given */
    char              *body;         /* POST body or NULL */
    netpolicy         *policy;       /* a reference, for the whole delivery */
    CURL              *easy;         /* of the attempt in flight */
    struct curl_slist *headers;
    bool               blocked;      /* the policy refused a connection */
    bool               prereq_refused;   /* ...and aborted the transfer (not a shutdown) */
    char               refused[176]; /* what was refused and why (fits error_msg) */
    bool               too_big;
    int64_t            t0;
    webhook_result     res;
} delivery;

/* ---- destination policy ----
 *
 * Judged on every connection libcurl opens (each address of each hop,
 * redirects included: open_socket, before connect) and again before every
 * request, on a reused connection too (pre_request): the name of the hop
 * and the address actually connected. netpolicy has the rules. */

static void refuse(delivery *d, const char *host, const char *addr, const char *why)
{
    d->blocked = true;
    snprintf(d->refused, sizeof d->refused, "%.80s%s%.46s%s: %s", host ? host : "",
             addr && *addr ? " (" : "", addr ? addr : "", addr && *addr ? ")" : "", why);
}

/* The host of the hop being made: the effective URL follows redirects. */
static const char *hop_host(delivery *d, char *out, size_t outlen)
{
    char *u = NULL;
    if (curl_easy_getinfo(d->easy, CURLINFO_EFFECTIVE_URL, &u) != CURLE_OK || !u ||
        !netpolicy_url_host(u, out, outlen))
        snprintf(out, outlen, "%s", d->host);
    return out;
}

static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    delivery *d = arg;
    char host[256], text[INET6_ADDRSTRLEN + 8] = "";
    const char *why;
    (void)purpose;
    hop_host(d, host, sizeof host);
    /* Through webhook.proxy the socket goes to the proxy, which resolves
     * the name itself: only the name (or a literal address) can be judged. */
    why = netpolicy_check(d->policy, host, *netpolicy_proxy(d->policy) ? NULL : &a->addr);
    if (why) {
        const void *ip = a->family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&a->addr)->sin6_addr
                                               : (const void *)&((struct sockaddr_in *)&a->addr)->sin_addr;
        if (!inet_ntop(a->family, ip, text, sizeof text)) text[0] = '\0';
        refuse(d, host, text, why);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

static int pre_request(void *arg, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    delivery *d = arg;
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    char host[256];
    const char *why;
    bool proxied = *netpolicy_proxy(d->policy);
    (void)local_ip;
    (void)local_port;
    if (inet_pton(AF_INET, primary_ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)primary_port);
    } else if (inet_pton(AF_INET6, primary_ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)primary_port);
    } else if (!proxied) {
        refuse(d, hop_host(d, host, sizeof host), primary_ip, "address not understood");
        d->prereq_refused = true;
        return CURL_PREREQFUNC_ABORT;
    }
    why = netpolicy_check(d->policy, hop_host(d, host, sizeof host),
                          proxied ? NULL : (struct sockaddr *)&ss);
    if (why) {
        refuse(d, host, proxied ? "" : primary_ip, why);
        d->prereq_refused = true;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* ---- one attempt ---- */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    delivery *d = arg;
    if (buf_append(&d->res.body, p, size * n) != BUF_OK) {
        d->too_big = true;
        return 0;
    }
    return size * n;
}

static void on_done(loop *l, CURL *easy, CURLcode rc, void *arg);

static int attempt(loop *l, delivery *d, CURL *easy)
{
    int64_t left = d->opts.total_ms - (loop_now_ms(l) - d->t0);
    if (left < 1) left = 1;
    d->res.attempts++;
    d->blocked = false;
    d->prereq_refused = false;
    d->easy = easy;
    d->too_big = false;
    buf_reset(&d->res.body);
    curl_easy_setopt(easy, CURLOPT_URL, d->url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, d->headers);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)d->opts.connect_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)left);
    /* libcurl has no read timeout as such; "less than 1 byte/s for rt
     * seconds" is the same thing at second granularity. */
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, (long)((d->opts.read_ms + 999) / 1000));
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, d);
    curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, pre_request);
    curl_easy_setopt(easy, CURLOPT_PREREQDATA, d);
    /* "" = no proxy, and none from http_proxy & co either: the environment
     * of the daemon is not the customer's to use. */
    curl_easy_setopt(easy, CURLOPT_PROXY, netpolicy_proxy(d->policy));
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    if (d->body) {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, d->body);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)strlen(d->body));
    } else {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    }
    return loop_http_start_isolated(l, easy, on_done, d, netpolicy_gen(d->policy));
}

static void delivery_free(delivery *d)
{
    if (!d) return;
    curl_slist_free_all(d->headers);
    buf_fini(&d->res.body);
    free(d->url);
    free(d->host);
    free(d->body);
    netpolicy_unref(d->policy);
    free(d);
}

static void finish(loop *l, delivery *d, CURL *easy)
{
    d->res.duration_ms = loop_now_ms(l) - d->t0;
    d->cb(l, d->arg, &d->res);
    loop_easy_release(l, easy);
    delivery_free(d);
}

static void on_done(loop *l, CURL *easy, CURLcode rc, void *arg)
{
    delivery *d = arg;
    long status = 0;
    double connect_time = 0;
    char *ct = NULL;
    int cls = 0;
    webhook_result *res = &d->res;

    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME, &connect_time);
    curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ct);
    res->http_status = (int)status;
    snprintf(res->content_type, sizeof res->content_type, "%s", ct ? ct : "");
    res->error_code = 0;
    res->error_msg[0] = '\0';

    if (rc == CURLE_ABORTED_BY_CALLBACK && !d->prereq_refused) {
        /* twigate is stopping: no verdict on the customer's server. */
        res->aborted = true;
        res->error_code = 11200;
        snprintf(res->error_msg, sizeof res->error_msg, "interrupted by twigate's shutdown");
        goto done;
    }
    if (rc == CURLE_OK) {
        if (status >= 200 && status < 300) goto done;
        res->error_code = 11200;
        cls = status >= 500 ? FRAG_RP_5XX : status >= 400 ? FRAG_RP_4XX : 0;
        snprintf(res->error_msg, sizeof res->error_msg, "HTTP retrieval failure: the server answered %ld", status);
    } else if (d->blocked) {
        res->error_code = 11200;
        snprintf(res->error_msg, sizeof res->error_msg,
                 "HTTP retrieval failure: refused by twigate's outbound policy: %s",
                 d->refused);
    } else if (d->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        res->error_code = 11750;
        snprintf(res->error_msg, sizeof res->error_msg, "Response body larger than %zu bytes",
                 res->body.cap);
    } else if (rc == CURLE_COULDNT_RESOLVE_HOST) {
        res->error_code = 11210;
        cls = FRAG_RP_CT;
        snprintf(res->error_msg, sizeof res->error_msg, "HTTP bad host name");
    } else if (rc == CURLE_COULDNT_CONNECT ||
               (rc == CURLE_OPERATION_TIMEDOUT && connect_time <= 0)) {
        res->error_code = 11205;
        cls = FRAG_RP_CT;
        snprintf(res->error_msg, sizeof res->error_msg, "HTTP connection failure: %s",
                 curl_easy_strerror(rc));
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        res->error_code = 11205;
        cls = FRAG_RP_RT;
        snprintf(res->error_msg, sizeof res->error_msg, "HTTP connection failure: no response in time");
    } else if (rc == CURLE_TOO_MANY_REDIRECTS) {
        res->error_code = 11215;
        snprintf(res->error_msg, sizeof res->error_msg, "Too many redirects");
    } else if (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
               rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM) {
        res->error_code = 11237;
        snprintf(res->error_msg, sizeof res->error_msg, "Certificate invalid: %s", curl_easy_strerror(rc));
    } else {
        res->error_code = 11200;
        cls = FRAG_RP_RT;
        snprintf(res->error_msg, sizeof res->error_msg, "HTTP retrieval failure: %s",
                 curl_easy_strerror(rc));
    }

    if ((cls & d->opts.retry_policy) && res->attempts <= d->opts.retries &&
        loop_now_ms(l) - d->t0 < d->opts.total_ms) {
        log_info("webhook", "attempt %d failed (%s); retrying", res->attempts, res->error_msg);
        if (attempt(l, d, easy) == 0) return;
    }
done:
    finish(l, d, easy);
}

int webhook_send(loop *l, const webhook_req *req, webhook_cb cb, void *arg)
{
    delivery *d = calloc(1, sizeof *d);
    char base[WEBHOOK_MAX_URL], sig[SIGNATURE_SIZE], line[256];
    buf enc, url;
    CURL *easy = NULL;
    CURLU *cu = NULL;
    char *host = NULL;
    bool is_get = req->method && !strcasecmp(req->method, "GET");
    int rc = -1;

    buf_init(&enc, 1 << 20);
    buf_init(&url, WEBHOOK_MAX_URL * 2);
    if (!d || !req->policy) goto out;
    d->cb = cb;
    d->arg = arg;
    d->t0 = loop_now_ms(l);
    buf_init(&d->res.body, req->max_response ? req->max_response : 1 << 20);
    if (!fragment_split(req->url, base, sizeof base, &d->opts)) goto out;
    if (req->idem) snprintf(d->res.idem, sizeof d->res.idem, "%s", req->idem);
    else if (!sid_token(d->res.idem)) goto out;

    if (req->encoded ? buf_puts(&enc, req->encoded) != BUF_OK
                     : req->params && form_encode(req->params, &enc) != BUF_OK)
        goto out;
    if (buf_puts(&url, base) != BUF_OK) goto out;
    if (is_get && enc.len &&
        (buf_puts(&url, strchr(base, '?') ? "&" : "?") != BUF_OK ||
         buf_puts(&url, buf_str(&enc)) != BUF_OK))
        goto out;
    /* GET: the parameters are in the signed URL; POST: appended sorted. */
    if (!signature_compute(req->auth_token, buf_str(&url), is_get ? NULL : req->params, sig))
        goto out;
    snprintf(d->res.url, sizeof d->res.url, "%s", buf_str(&url));

    cu = curl_url();
    if (!cu || curl_url_set(cu, CURLUPART_URL, base, 0) != CURLUE_OK ||
        curl_url_get(cu, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    d->host = strdup(host);
    d->policy = netpolicy_ref(req->policy);
    d->url = buf_steal(&url);
    if (!is_get) d->body = buf_steal(&enc);
    if (!d->host || !d->url || (!is_get && !d->body)) goto out;

    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "User-Agent: TwilioProxy/1.1");
    h = h ? curl_slist_append(h, "Accept: */*") : NULL;
    h = h ? curl_slist_append(h, "X-Home-Region: us1") : NULL;
    h = h ? curl_slist_append(h, "Expect:") : NULL;
    snprintf(line, sizeof line, "X-Twilio-Signature: %s", sig);
    h = h ? curl_slist_append(h, line) : NULL;
    snprintf(line, sizeof line, "I-Twilio-Idempotency-Token: %s", d->res.idem);
    h = h ? curl_slist_append(h, line) : NULL;
    if (!is_get && h)
        h = curl_slist_append(h, "Content-Type: application/x-www-form-urlencoded; charset=UTF-8");
    if (!h) goto out;
    d->headers = h;

    easy = loop_easy(l);
    if (!easy) goto out;
    if (req->follow_redirects) {
        curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(easy, CURLOPT_MAXREDIRS, (long)WEBHOOK_MAX_REDIRECTS);
    }
    if (attempt(l, d, easy) != 0) goto out;
    d = NULL;
    easy = NULL;
    rc = 0;
out:
    delivery_free(d);
    loop_easy_release(l, easy);
    curl_free(host);
    curl_url_cleanup(cu);
    buf_fini(&enc);
    buf_fini(&url);
    return rc;
}
