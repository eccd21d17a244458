/* kaphila — the client for Kaphila's JSON API, on an event loop.
 *
 * Requests are libcurl easy handles run by a loop's multi handle: nothing
 * here blocks. Each result carries the HTTP status, the parsed JSON body (or
 * NULL when Kaphila sent something that is not JSON) and the latency, and
 * kaphila_twilio_error maps a failure to the Twilio error documented in
 * docs/kaphila.md. The API key travels only in the Authorization header and
 * is never logged. Loop thread only, but kaphila_ok, kaphila_outcome and
 * kaphila_twilio_error, which only read a result, run on any thread. */
#ifndef TWIGATE_KAPHILA_H
#define TWIGATE_KAPHILA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "net/loop.h"

/* Kaphila's answers are small JSON objects but GET /calls, which lists
 * every live call of a key (~150 bytes each; 20,000 calls = 3 MB, read by
 * the reconciler); anything bigger is garbage. */
#define KAPHILA_MAX_RESPONSE (8 * 1024 * 1024)

struct buf;

typedef struct kaphila_client {
    const char *base_url;      /* "http://127.0.0.1:3000", no trailing slash */
    int         timeout_ms;
    int         connect_ms;
} kaphila_client;

typedef struct kaphila_result {
    const char *endpoint;      /* "/makecall" … (static) */
    int         http_status;   /* 0 = no HTTP answer (see curl_rc) */
    CURLcode    curl_rc;
    json_t     *body;          /* owned by the result; NULL if not JSON (or unparsed) */
    int64_t     latency_ms;
    struct buf *raw;           /* kaphila_get_raw's answer, for kaphila_take_raw */
} kaphila_result;

/* The callback owns nothing: res and res->body are freed after it returns
 * (json_incref to keep the body). */
typedef void (*kaphila_cb)(loop *l, void *arg, const kaphila_result *res);

/* POSTs body (borrowed; NULL for GET) to base_url + path. Returns 0 when the
 * request is under way; the callback then always runs exactly once. */
__attribute__((warn_unused_result))
int kaphila_call(loop *l, const kaphila_client *kc, const char *api_key, const char *method,
                 const char *path, json_t *body, kaphila_cb cb, void *arg);

/* As kaphila_call for a GET whose answer may be large (GET /calls lists
 * every live call of a key: 10,000 calls are ~2 MB, ~100 ms of jansson),
 * but the answer is not parsed on the loop, where the parse would hold up
 * every timer and exchange: res->body is NULL, and the callback may take
 * the bytes with kaphila_take_raw to parse them elsewhere (the engine's
 * bio thread). */
__attribute__((warn_unused_result))
int kaphila_get_raw(loop *l, const kaphila_client *kc, const char *api_key, const char *path,
                    kaphila_cb cb, void *arg);
/* In a kaphila_get_raw callback: the answer's bytes, NUL-terminated (*len
 * of them), now the caller's to free; NULL when there were none (no answer,
 * an empty body) or they were taken already. */
char *kaphila_take_raw(const kaphila_result *res, size_t *len);

/* True for a 2xx answer whose JSON says "success": true (or has no
 * "success" key at all: Kaphila's docs don't promise one everywhere). */
bool kaphila_ok(const kaphila_result *res);
/* Metrics label for a result: "ok", the HTTP status ("429", "503" …),
 * "unreachable" (no HTTP answer) or "bad_body". Static string. */
const char *kaphila_outcome(const kaphila_result *res);
/* Twilio code, HTTP status and message for a failed result. */
void kaphila_twilio_error(const kaphila_result *res, int *code, int *http_status,
                          char *msg, size_t msglen);

#endif
