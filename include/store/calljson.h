/* calljson — Twilio's JSON shapes for the resources twigate serves (Call,
 * Account, list envelopes), built from store rows. Field sets and formats
 * follow the contract (§2, §5.1, §6.3) and the OpenAPI schemas exactly.
 * Pure functions, any thread; every json_t returned is a new reference. */
#ifndef TWIGATE_CALLJSON_H
#define TWIGATE_CALLJSON_H

#include <jansson.h>
#include "base/buf.h"
#include "conf/config.h"
#include "base/form.h"
#include "store/store.h"

#define API_PREFIX "/2010-04-01"

json_t *calljson_call(const store_call *c);
/* The Call as the compact JSON http_reply_json would send, written into out
 * without allocating the text: returns its length, 0 on failure, or more
 * than size when out is too small (then out holds a truncated prefix). */
size_t calljson_call_render(const store_call *c, char *out, size_t size);
json_t *calljson_account(const config_account *a, int64_t started_ms);

/* Pagination state shared by every list. */
typedef struct calljson_page {
    const char *key;          /* "calls", "events", "notifications" … */
    const char *base_path;    /* "/2010-04-01/Accounts/AC…/Calls.json" */
    const form *filters;      /* the request's filters, echoed in every URI */
    int         page;
    int         page_size;
    const char *page_token;   /* this page's token as received, or NULL */
    const char *next_token;   /* NULL = last page */
} calljson_page;

/* Steals items. */
json_t *calljson_list(const calljson_page *p, json_t *items);

/* RFC 2822 string or JSON null for 0. */
json_t *calljson_time(int64_t ms);

#endif
