/* kaphila.c — Kaphila requests on a loop, and what their failures mean in
 * Twilio's terms (the table in kaphila_twilio_error is mirrored by
 * docs/kaphila.md). */
#include "net/kaphila.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/jsonw.h"
#include "base/log.h"

typedef struct kreq {
    kaphila_cb          cb;
    void               *arg;
    const char         *endpoint;
    struct curl_slist  *headers;
    char               *body;
    buf                 resp;
    int64_t             t0;
    bool                raw;    /* kaphila_get_raw: the callback parses, elsewhere */
} kreq;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    kreq *k = arg;
    /* Returning less than offered makes curl fail the transfer: the cap. */
    return buf_append(&k->resp, p, size * n) == BUF_OK ? size * n : 0;
}

/* Endpoints as static strings, so results can point at them safely. */
static const char *endpoint_name(const char *path)
{
    static const char *const known[] = {
        "/makecall", "/batchcall", "/hangup", "/voice", "/play", "/gather", "/calls",
        "/recordings", "/api/me", "/api/call-logs", "/health",
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        size_t n = strlen(known[i]);
        if (strncmp(path, known[i], n) == 0 && (path[n] == '\0' || path[n] == '/'))
            return known[i];
    }
    return "other";
}

static void on_done(loop *l, CURL *easy, CURLcode rc, void *arg)
{
    kreq *k = arg;
    kaphila_result res = { .endpoint = k->endpoint, .curl_rc = rc };
    long status = 0;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        res.http_status = (int)status;
        if (k->raw) res.raw = &k->resp;
        else if (k->resp.len) res.body = json_loadb(k->resp.data, k->resp.len, 0, NULL);
    }
    res.latency_ms = loop_now_ms(l) - k->t0;
    if (res.http_status < 200 || res.http_status >= 300 || (!res.body && !k->raw))
        log_info("kaphila", "%s -> %d (curl %d, %lld ms)", k->endpoint, res.http_status,
                 (int)rc, (long long)res.latency_ms);
    k->cb(l, k->arg, &res);
    json_decref(res.body);
    loop_easy_release(l, easy);
    curl_slist_free_all(k->headers);
    free(k->body);
    buf_fini(&k->resp);
    free(k);
}

static int request(loop *l, const kaphila_client *kc, const char *api_key, const char *method,
                   const char *path, json_t *body, bool raw, kaphila_cb cb, void *arg)
{
    kreq *k = calloc(1, sizeof *k);
    CURL *easy = NULL;
    char url[1024], auth[512];
    if (!k) return -1;
    k->cb = cb;
    k->arg = arg;
    k->raw = raw;
    k->endpoint = endpoint_name(path);
    k->t0 = loop_now_ms(l);
    buf_init(&k->resp, KAPHILA_MAX_RESPONSE);
    snprintf(url, sizeof url, "%s%s", kc->base_url, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", api_key);
    k->headers = curl_slist_append(NULL, auth);
    memset(auth, 0, sizeof auth);
    if (body) {
        k->body = jsonw_dumps(body);
        k->headers = curl_slist_append(k->headers, "Content-Type: application/json");
    }
    k->headers = curl_slist_append(k->headers, "Accept: application/json");
    easy = loop_easy(l);
    if (!easy || !k->headers || (body && !k->body)) goto fail;
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, k->headers);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "twigate/1.0");
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)kc->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)kc->connect_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    if (body) {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, k->body);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)strlen(k->body));
    }
    if (strcmp(method, "GET") != 0 && !body) curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
    if (loop_http_start(l, easy, on_done, k) != 0) goto fail;
    return 0;
fail:
    loop_easy_release(l, easy);
    curl_slist_free_all(k->headers);
    free(k->body);
    buf_fini(&k->resp);
    free(k);
    return -1;
}

int kaphila_call(loop *l, const kaphila_client *kc, const char *api_key, const char *method,
                 const char *path, json_t *body, kaphila_cb cb, void *arg)
{
    return request(l, kc, api_key, method, path, body, false, cb, arg);
}

int kaphila_get_raw(loop *l, const kaphila_client *kc, const char *api_key, const char *path,
                    kaphila_cb cb, void *arg)
{
    return request(l, kc, api_key, "GET", path, NULL, true, cb, arg);
}

char *kaphila_take_raw(const kaphila_result *res, size_t *len)
{
    *len = 0;
    if (!res->raw || !res->raw->len) return NULL;
    *len = res->raw->len;
    return buf_steal(res->raw);
}

bool kaphila_ok(const kaphila_result *res)
{
    if (res->http_status < 200 || res->http_status >= 300 || !json_is_object(res->body))
        return false;
    json_t *s = json_object_get(res->body, "success");
    return !s || json_is_true(s);
}

const char *kaphila_outcome(const kaphila_result *res)
{
    static const char *const codes[] = {"400", "401", "402", "403", "404", "429", "500",
                                        "502", "503", "504"};
    char s[8];
    if (kaphila_ok(res)) return "ok";
    if (res->http_status == 0) return "unreachable";
    if (res->http_status >= 200 && res->http_status < 300) return "bad_body";
    snprintf(s, sizeof s, "%d", res->http_status);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (!strcmp(codes[i], s)) return codes[i];
    return res->http_status >= 500 ? "5xx" : "4xx";
}

void kaphila_twilio_error(const kaphila_result *res, int *code, int *http_status,
                          char *msg, size_t msglen)
{
    const char *kerr = json_string_value(json_object_get(res->body, "error"));
    if (!kerr) kerr = "no error text";
    switch (res->http_status) {
    case 0:
        *code = 20503; *http_status = 503;
        snprintf(msg, msglen, "Kaphila is unreachable (%s)", curl_easy_strerror(res->curl_rc));
        return;
    case 400:
        *code = 21214; *http_status = 400;
        snprintf(msg, msglen, "'To' phone number cannot be reached: Kaphila refused the call (%s)", kerr);
        return;
    case 401: case 403:
        *code = 20500; *http_status = 500;
        snprintf(msg, msglen, "Kaphila rejected this account's API key (HTTP %d); the gateway's"
                 " kaphila_key for the account is wrong", res->http_status);
        return;
    case 402:
        *code = 20005; *http_status = 403;
        snprintf(msg, msglen, "Account not active: Kaphila reports insufficient credits (%s)", kerr);
        return;
    case 429:
        *code = 20429; *http_status = 429;
        snprintf(msg, msglen, "Too Many Requests: Kaphila's per-key rate limit was exceeded");
        return;
    case 503:
        *code = 20503; *http_status = 503;
        snprintf(msg, msglen, "Service Unavailable: Kaphila has no trunk for this account (%s)", kerr);
        return;
    default:
        break;
    }
    if (res->http_status >= 200 && res->http_status < 300) {
        *code = 20500; *http_status = 500;
        snprintf(msg, msglen, "Kaphila answered %d with %s", res->http_status,
                 res->body ? "success=false" : "a body that is not JSON");
        return;
    }
    *code = 20500; *http_status = 500;
    snprintf(msg, msglen, "Kaphila failed with HTTP %d (%s)", res->http_status, kerr);
}
