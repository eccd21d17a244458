/* calljson.c — resource JSON. Numbers that look numeric are strings in the
 * Call resource (duration, queue_time), as on Twilio; the Python SDK feeds
 * them to its own parsers, so the types matter. */
#include "store/calljson.h"

#include <stdio.h>
#include <string.h>

#include "base/jsonw.h"
#include "base/phone.h"
#include "base/timefmt.h"

json_t *calljson_time(int64_t ms)
{
    char t[TIMEFMT_RFC2822_LEN];
    if (!ms) return json_null();
    timefmt_rfc2822(ms, t);
    return json_string(t);
}

/* The Call is the hottest body twigate renders (every fetch and list row),
 * so its keys are set without jansson's UTF-8 re-check (they are literals
 * here) and the URIs are concatenated rather than printf'd. */
#define SET(o, k, v) json_object_set_new_nocheck(o, k, v)

/* json_string(s), minus jansson's per-character UTF-8 walk when s is plain
 * ASCII — which every value of a row twigate wrote is (SIDs, E.164 numbers,
 * fixed status words): pure ASCII is valid UTF-8, so the result is the same
 * for every input, and anything else still goes through the check. */
static json_t *str(const char *s)
{
    size_t n = 0;
    unsigned char high = 0;
    for (; s[n]; n++) high |= (unsigned char)s[n];
    return high < 0x80 ? json_stringn_nocheck(s, n) : json_string(s);
}

static json_t *str_or_null(const char *s)
{
    return s && *s ? str(s) : json_null();
}

static json_t *time_or_null(int64_t ms)
{
    char t[TIMEFMT_RFC2822_LEN];
    if (!ms) return json_null();
    timefmt_rfc2822(ms, t);
    return json_stringn_nocheck(t, strlen(t));   /* ASCII by construction */
}

json_t *calljson_call(const store_call *c)
{
    static const struct { const char *key, *path; size_t len; } subs[] = {
#define SUB(k, p) {k, "/" p ".json", sizeof "/" p ".json"}   /* with the NUL */
        SUB("notifications", "Notifications"), SUB("recordings", "Recordings"),
        SUB("payments", "Payments"), SUB("events", "Events"), SUB("siprec", "Siprec"),
        SUB("streams", "Streams"), SUB("transcriptions", "Transcriptions"),
        SUB("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
        SUB("user_defined_messages", "UserDefinedMessages"),
#undef SUB
    };
    /* base: /2010-04-01/Accounts/<AC>/Calls/<CA>; the longest path appended
     * is "/UserDefinedMessageSubscriptions.json". */
    char uri[192], tofmt[PHONE_MAX], fromfmt[PHONE_MAX], n[16];
    size_t acct_len = strnlen(c->account_sid, sizeof c->account_sid);
    size_t sid_len = strnlen(c->sid, sizeof c->sid);
    size_t blen = 0;
    json_t *o = json_object(), *sub = json_object();
    if (!o || !sub) { json_decref(o); json_decref(sub); return NULL; }

#define PUT(p, l) (memcpy(uri + blen, p, l), blen += (l))
    PUT(API_PREFIX "/Accounts/", sizeof API_PREFIX "/Accounts/" - 1);
    PUT(c->account_sid, acct_len);
    PUT("/Calls/", sizeof "/Calls/" - 1);
    PUT(c->sid, sid_len);
#undef PUT
    _Static_assert(sizeof API_PREFIX "/Accounts//Calls/" + 2 * SID_LEN +
                   sizeof "/UserDefinedMessageSubscriptions.json" <= sizeof uri,
                   "uri holds the longest sub-resource URI");
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        memcpy(uri + blen, subs[i].path, subs[i].len);
        SET(sub, subs[i].key, str(uri));
    }
    memcpy(uri + blen, ".json", sizeof ".json");
    phone_format(c->to, tofmt);
    phone_format(c->from, fromfmt);

    SET(o, "account_sid", str(c->account_sid));
    SET(o, "annotation", json_null());
    SET(o, "answered_by", str_or_null(c->answered_by));
    SET(o, "api_version", str("2010-04-01"));
    SET(o, "caller_name", json_null());
    SET(o, "date_created", time_or_null(c->date_created));
    SET(o, "date_updated", time_or_null(c->date_updated));
    SET(o, "direction", str(c->direction));
    if (c->duration >= 0) {
        snprintf(n, sizeof n, "%d", c->duration);
        SET(o, "duration", str(n));
    } else {
        SET(o, "duration", json_null());
    }
    SET(o, "end_time", time_or_null(c->end_time));
    SET(o, "forwarded_from", json_null());
    SET(o, "from", str(c->from));
    SET(o, "from_formatted", str(fromfmt));
    SET(o, "group_sid", json_null());
    SET(o, "parent_call_sid", str_or_null(c->parent_call_sid));
    SET(o, "phone_number_sid", json_null());
    SET(o, "price", json_null());
    SET(o, "price_unit", str("USD"));
    snprintf(n, sizeof n, "%d", c->queue_time);
    SET(o, "queue_time", str(n));
    SET(o, "sid", str(c->sid));
    SET(o, "start_time", time_or_null(c->start_time));
    SET(o, "status", str(c->status));
    SET(o, "subresource_uris", sub);
    SET(o, "to", str(c->to));
    SET(o, "to_formatted", str(tofmt));
    SET(o, "trunk_sid", json_null());
    SET(o, "uri", str(uri));
    return o;
}

/* The direct writer of calljson_call_render: appends while there is room
 * and counts past it, so the caller learns the size it needs. */
typedef struct jw { char *out; size_t size, len; } jw;

static void jw_put(jw *w, const char *p, size_t n)
{
    if (w->len < w->size) memcpy(w->out + w->len, p, n < w->size - w->len ? n : w->size - w->len);
    w->len += n;
}
#define JW_LIT(w, lit) jw_put(w, lit, sizeof lit - 1)

/* A JSON string of ASCII s, escaped as jansson's JSON_COMPACT dump does
 * (jsonw_escape: the one table of twigate's JSON writers). */
static void jw_str(jw *w, const char *s)
{
    const char *run = s;
    char u[6];
    size_t el;
    JW_LIT(w, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!JSONW_NEEDS_ESCAPE(ch)) continue;
        jw_put(w, run, (size_t)(s - run));
        run = s + 1;
        const char *e = jsonw_escape(ch, u, &el);
        jw_put(w, e, el);
    }
    jw_put(w, run, (size_t)(s - run));
    JW_LIT(w, "\"");
}

static void jw_str_or_null(jw *w, const char *s)
{
    if (s && *s) jw_str(w, s);
    else JW_LIT(w, "null");
}

static void jw_time(jw *w, int64_t ms)
{
    char t[TIMEFMT_RFC2822_LEN];
    if (!ms) { JW_LIT(w, "null"); return; }
    timefmt_rfc2822(ms, t);
    jw_str(w, t);
}

static bool ascii(const char *s)
{
    unsigned char high = 0;
    for (; *s; s++) high |= (unsigned char)*s;
    return high < 0x80;
}

/* Written directly, not through a jansson tree and json_dumpb: the 201 of
 * every create and every uncached fetch render it, and the tree (some 40
 * allocations, a hash insert per key) cost more than the rest of the reply.
 * The bytes are calljson_call's under JSON_COMPACT, key for key
 * (tests/unit/store/test_calljson.c holds both to the same bodies); a row
 * with any non-ASCII byte, which twigate never writes, takes the tree, so
 * UTF-8 checking stays jansson's. */
size_t calljson_call_render(const store_call *c, char *out, size_t size)
{
    static const char *const subs[][2] = {
        {"notifications", "Notifications"}, {"recordings", "Recordings"},
        {"payments", "Payments"}, {"events", "Events"}, {"siprec", "Siprec"},
        {"streams", "Streams"}, {"transcriptions", "Transcriptions"},
        {"user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"},
        {"user_defined_messages", "UserDefinedMessages"},
    };
    char tofmt[PHONE_MAX], fromfmt[PHONE_MAX], n[16];
    jw w = {out, size, 0};
    phone_format(c->to, tofmt);
    phone_format(c->from, fromfmt);
    if (!ascii(c->account_sid) || !ascii(c->sid) || !ascii(c->parent_call_sid) || !ascii(c->to) ||
        !ascii(c->from) || !ascii(c->status) || !ascii(c->direction) || !ascii(c->answered_by) ||
        !ascii(tofmt) || !ascii(fromfmt)) {
        json_t *o = calljson_call(c);
        size_t len = o ? json_dumpb(o, out, size, JSON_COMPACT) : 0;
        json_decref(o);
        return len;
    }
    JW_LIT(&w, "{\"account_sid\":");
    jw_str(&w, c->account_sid);
    JW_LIT(&w, ",\"annotation\":null,\"answered_by\":");
    jw_str_or_null(&w, c->answered_by);
    JW_LIT(&w, ",\"api_version\":\"2010-04-01\",\"caller_name\":null,\"date_created\":");
    jw_time(&w, c->date_created);
    JW_LIT(&w, ",\"date_updated\":");
    jw_time(&w, c->date_updated);
    JW_LIT(&w, ",\"direction\":");
    jw_str(&w, c->direction);
    JW_LIT(&w, ",\"duration\":");
    if (c->duration >= 0) {
        snprintf(n, sizeof n, "%d", c->duration);
        jw_str(&w, n);
    } else {
        JW_LIT(&w, "null");
    }
    JW_LIT(&w, ",\"end_time\":");
    jw_time(&w, c->end_time);
    JW_LIT(&w, ",\"forwarded_from\":null,\"from\":");
    jw_str(&w, c->from);
    JW_LIT(&w, ",\"from_formatted\":");
    jw_str(&w, fromfmt);
    JW_LIT(&w, ",\"group_sid\":null,\"parent_call_sid\":");
    jw_str_or_null(&w, c->parent_call_sid);
    JW_LIT(&w, ",\"phone_number_sid\":null,\"price\":null,\"price_unit\":\"USD\",\"queue_time\":");
    snprintf(n, sizeof n, "%d", c->queue_time);
    jw_str(&w, n);
    JW_LIT(&w, ",\"sid\":");
    jw_str(&w, c->sid);
    JW_LIT(&w, ",\"start_time\":");
    jw_time(&w, c->start_time);
    JW_LIT(&w, ",\"status\":");
    jw_str(&w, c->status);
    JW_LIT(&w, ",\"subresource_uris\":{");
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (i) JW_LIT(&w, ",");
        JW_LIT(&w, "\"");
        jw_put(&w, subs[i][0], strlen(subs[i][0]));
        JW_LIT(&w, "\":\"" API_PREFIX "/Accounts/");
        jw_put(&w, c->account_sid, strlen(c->account_sid));   /* ASCII SIDs: nothing to escape */
        JW_LIT(&w, "/Calls/");
        jw_put(&w, c->sid, strlen(c->sid));
        JW_LIT(&w, "/");
        jw_put(&w, subs[i][1], strlen(subs[i][1]));
        JW_LIT(&w, ".json\"");
    }
    JW_LIT(&w, "},\"to\":");
    jw_str(&w, c->to);
    JW_LIT(&w, ",\"to_formatted\":");
    jw_str(&w, tofmt);
    JW_LIT(&w, ",\"trunk_sid\":null,\"uri\":\"" API_PREFIX "/Accounts/");
    jw_put(&w, c->account_sid, strlen(c->account_sid));
    JW_LIT(&w, "/Calls/");
    jw_put(&w, c->sid, strlen(c->sid));
    JW_LIT(&w, ".json\"}");
    return w.len;
}

json_t *calljson_account(const config_account *a, int64_t started_ms)
{
    static const char *const subs[][2] = {
        {"available_phone_numbers", "AvailablePhoneNumbers"}, {"calls", "Calls"},
        {"conferences", "Conferences"}, {"incoming_phone_numbers", "IncomingPhoneNumbers"},
        {"notifications", "Notifications"}, {"outgoing_caller_ids", "OutgoingCallerIds"},
        {"recordings", "Recordings"}, {"transcriptions", "Transcriptions"},
        {"addresses", "Addresses"}, {"signing_keys", "SigningKeys"},
        {"connect_apps", "ConnectApps"}, {"sip", "SIP"},
        {"authorized_connect_apps", "AuthorizedConnectApps"}, {"usage", "Usage"},
        {"keys", "Keys"}, {"applications", "Applications"},
        {"short_codes", "SMS/ShortCodes"}, {"queues", "Queues"}, {"messages", "Messages"},
        {"balance", "Balance"},
    };
    char uri[160];
    int64_t created = a->created_at ? a->created_at : started_ms;
    json_t *o = json_object(), *sub = json_object();
    if (!o || !sub) { json_decref(o); json_decref(sub); return NULL; }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(uri, sizeof uri, API_PREFIX "/Accounts/%s/%s.json", a->sid, subs[i][1]);
        json_object_set_new(sub, subs[i][0], json_string(uri));
    }
    snprintf(uri, sizeof uri, API_PREFIX "/Accounts/%s.json", a->sid);
    json_object_set_new(o, "auth_token", json_string(a->auth_token));
    json_object_set_new(o, "date_created", calljson_time(created));
    json_object_set_new(o, "date_updated", calljson_time(created));
    json_object_set_new(o, "friendly_name", json_string(a->friendly_name ? a->friendly_name : a->name));
    json_object_set_new(o, "owner_account_sid", json_string(a->sid));
    json_object_set_new(o, "sid", json_string(a->sid));
    json_object_set_new(o, "status", json_string("active"));
    json_object_set_new(o, "subresource_uris", sub);
    json_object_set_new(o, "type", json_string("Full"));
    json_object_set_new(o, "uri", json_string(uri));
    return o;
}

/* base?<filters>&PageSize=&Page=[&PageToken=] — the SDKs follow these
 * verbatim and add nothing, so every filter must ride along. */
static json_t *page_uri(const calljson_page *p, int page, const char *token)
{
    buf b;
    json_t *j = NULL;
    bool ok = true;
    buf_init(&b, 16384);
    ok = buf_puts(&b, p->base_path) == BUF_OK && buf_puts(&b, "?") == BUF_OK;
    for (size_t i = 0; ok && p->filters && i < p->filters->n; i++) {
        const char *k = p->filters->pairs[i].key;
        if (!strcmp(k, "PageSize") || !strcmp(k, "Page") || !strcmp(k, "PageToken")) continue;
        ok = form_escape(&b, k) == BUF_OK && buf_puts(&b, "=") == BUF_OK &&
             form_escape(&b, p->filters->pairs[i].value) == BUF_OK &&
             buf_puts(&b, "&") == BUF_OK;
    }
    if (ok) ok = buf_printf(&b, "PageSize=%d&Page=%d", p->page_size, page) == BUF_OK;
    if (ok && token) ok = buf_puts(&b, "&PageToken=") == BUF_OK && form_escape(&b, token) == BUF_OK;
    if (ok) j = json_string(buf_str(&b));
    buf_fini(&b);
    return j ? j : json_null();
}

json_t *calljson_list(const calljson_page *p, json_t *items)
{
    json_t *o = json_object();
    size_t n = json_array_size(items);
    int start = p->page * p->page_size;
    if (!o) { json_decref(items); return NULL; }
    json_object_set_new(o, p->key, items);
    json_object_set_new(o, "end", json_integer(n ? start + (int)n - 1 : start));
    json_object_set_new(o, "first_page_uri", page_uri(p, 0, NULL));
    json_object_set_new(o, "next_page_uri",
                        p->next_token ? page_uri(p, p->page + 1, p->next_token) : json_null());
    json_object_set_new(o, "page", json_integer(p->page));
    json_object_set_new(o, "page_size", json_integer(p->page_size));
    json_object_set_new(o, "previous_page_uri",
                        p->page > 0 ? page_uri(p, p->page - 1, NULL) : json_null());
    json_object_set_new(o, "start", json_integer(start));
    json_object_set_new(o, "uri", page_uri(p, p->page, p->page_token));
    return o;
}
