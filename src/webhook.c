/* webhook.c — signed customer requests on the loop, with Twilio's retry
 * rules. Map: destination policy; request construction (URL, body,
 * signature, headers); one attempt; classification of the outcome and the
 * retry decision. */
#include "webhook.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fragment.h"
#include "log.h"
#include "signature.h"

/* URLs longer than this are refused (Twilio's own limit is 4 KiB). */
#define WEBHOOK_MAX_URL 4096
/* Twilio follows a handful of redirects when fetching TwiML. */
#define WEBHOOK_MAX_REDIRECTS 10

typedef struct delivery {
    webhook_cb         cb;
    void              *arg;
    fragment_opts      opts;
    char              *url;          /* what we request (GET: with the parameters) */
    char              *host;
    char              *body;         /* POST body or NULL */
    char              *allow, *deny;
    struct curl_slist *headers;
    bool               blocked;      /* the policy refused the address */
    bool               too_big;
    int64_t            t0;
    webhook_result     res;
} delivery;

/* ---- destination policy ---- */

static bool cidr_match(const char *entry, const struct sockaddr *addr)
{
    char net[64];
    int bits = -1;
    const char *slash = strchr(entry, '/');
    unsigned char want[16], have[16];
    int len;
    if (!addr) return false;
    snprintf(net, sizeof net, "%.*s", slash ? (int)(slash - entry) : (int)strlen(entry), entry);
    if (slash) bits = atoi(slash + 1);
    if (addr->sa_family == AF_INET && inet_pton(AF_INET, net, want) == 1) {
        memcpy(have, &((const struct sockaddr_in *)addr)->sin_addr, 4);
        len = 4;
    } else if (addr->sa_family == AF_INET6 && inet_pton(AF_INET6, net, want) == 1) {
        memcpy(have, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16);
        len = 16;
    } else {
        return false;
    }
    if (bits < 0 || bits > len * 8) bits = len * 8;
    for (int i = 0; i < len && bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((want[i] & mask) != (have[i] & mask)) return false;
    }
    return true;
}

static bool host_match(const char *entry, const char *host)
{
    if (!host) return false;
    if (entry[0] == '*' && entry[1] == '.') {
        size_t h = strlen(host), e = strlen(entry + 1);
        return h > e && !strcasecmp(host + h - e, entry + 1);
    }
    return !strcasecmp(entry, host);
}

/* True when host/addr matches an entry of the comma-separated list. */
static bool list_match(const char *list, const char *host, const struct sockaddr *addr)
{
    char item[256];
    for (const char *p = list; p && *p;) {
        size_t n = strcspn(p, ",");
        snprintf(item, sizeof item, "%.*s", (int)n, p);
        char *s = item, *e = item + strlen(item);
        while (*s == ' ') s++;
        while (e > s && e[-1] == ' ') *--e = '\0';
        if (*s && (cidr_match(s, addr) || host_match(s, host))) return true;
        p += n;
        if (*p == ',') p++;
    }
    return false;
}

bool webhook_policy_allows(const char *allow, const char *deny, const char *host,
                           const struct sockaddr *addr)
{
    if (deny && *deny && list_match(deny, host, addr)) return false;
    if (allow && *allow && !list_match(allow, host, addr)) {
        /* Before resolution (addr NULL) only a host-name entry can match;
         * let the connect-time check decide for CIDR-only lists. */
        return addr == NULL;
    }
    return true;
}

static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    delivery *d = arg;
    (void)purpose;
    if (!webhook_policy_allows(d->allow, d->deny, d->host, &a->addr)) {
        d->blocked = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
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
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    if (d->body) {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, d->body);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)strlen(d->body));
    } else {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    }
    return loop_http_start(l, easy, on_done, d);
}

static void delivery_free(delivery *d)
{
    if (!d) return;
    curl_slist_free_all(d->headers);
    buf_fini(&d->res.body);
    free(d->url);
    free(d->host);
    free(d->body);
    free(d->allow);
    free(d->deny);
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

    if (rc == CURLE_ABORTED_BY_CALLBACK) {
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
                 "The destination is refused by twigate's webhook.allow/webhook.deny policy");
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
    if (!d) goto out;
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
    d->allow = strdup(req->allow ? req->allow : "");
    d->deny = strdup(req->deny ? req->deny : "");
    d->url = buf_steal(&url);
    if (!is_get) d->body = buf_steal(&enc);
    if (!d->host || !d->allow || !d->deny || !d->url || (!is_get && !d->body)) goto out;

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
