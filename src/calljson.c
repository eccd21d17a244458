/* calljson.c — resource JSON. Numbers that look numeric are strings in the
 * Call resource (duration, queue_time), as on Twilio; the Python SDK feeds
 * them to its own parsers, so the types matter. */
#include "calljson.h"

#include <stdio.h>
#include <string.h>

#include "phone.h"
#include "timefmt.h"

json_t *calljson_time(int64_t ms)
{
    char t[TIMEFMT_RFC2822_LEN];
    if (!ms) return json_null();
    timefmt_rfc2822(ms, t);
    return json_string(t);
}

static json_t *str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

json_t *calljson_call(const store_call *c)
{
    static const char *const subs[][2] = {
        {"notifications", "Notifications"}, {"recordings", "Recordings"},
        {"payments", "Payments"}, {"events", "Events"}, {"siprec", "Siprec"},
        {"streams", "Streams"}, {"transcriptions", "Transcriptions"},
        {"user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"},
        {"user_defined_messages", "UserDefinedMessages"},
    };
    char base[160], uri[192], tofmt[PHONE_MAX], fromfmt[PHONE_MAX], n[16];
    json_t *o = json_object(), *sub = json_object();
    if (!o || !sub) { json_decref(o); json_decref(sub); return NULL; }

    snprintf(base, sizeof base, API_PREFIX "/Accounts/%s/Calls/%s", c->account_sid, c->sid);
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(uri, sizeof uri, "%s/%s.json", base, subs[i][1]);
        json_object_set_new(sub, subs[i][0], json_string(uri));
    }
    snprintf(uri, sizeof uri, "%s.json", base);
    phone_format(c->to, tofmt);
    phone_format(c->from, fromfmt);

    json_object_set_new(o, "account_sid", json_string(c->account_sid));
    json_object_set_new(o, "annotation", json_null());
    json_object_set_new(o, "answered_by", str_or_null(c->answered_by));
    json_object_set_new(o, "api_version", json_string("2010-04-01"));
    json_object_set_new(o, "caller_name", json_null());
    json_object_set_new(o, "date_created", calljson_time(c->date_created));
    json_object_set_new(o, "date_updated", calljson_time(c->date_updated));
    json_object_set_new(o, "direction", json_string(c->direction));
    if (c->duration >= 0) {
        snprintf(n, sizeof n, "%d", c->duration);
        json_object_set_new(o, "duration", json_string(n));
    } else {
        json_object_set_new(o, "duration", json_null());
    }
    json_object_set_new(o, "end_time", calljson_time(c->end_time));
    json_object_set_new(o, "forwarded_from", json_null());
    json_object_set_new(o, "from", json_string(c->from));
    json_object_set_new(o, "from_formatted", json_string(fromfmt));
    json_object_set_new(o, "group_sid", json_null());
    json_object_set_new(o, "parent_call_sid", str_or_null(c->parent_call_sid));
    json_object_set_new(o, "phone_number_sid", json_null());
    json_object_set_new(o, "price", json_null());
    json_object_set_new(o, "price_unit", json_string("USD"));
    snprintf(n, sizeof n, "%d", c->queue_time);
    json_object_set_new(o, "queue_time", json_string(n));
    json_object_set_new(o, "sid", json_string(c->sid));
    json_object_set_new(o, "start_time", calljson_time(c->start_time));
    json_object_set_new(o, "status", json_string(c->status));
    json_object_set_new(o, "subresource_uris", sub);
    json_object_set_new(o, "to", json_string(c->to));
    json_object_set_new(o, "to_formatted", json_string(tofmt));
    json_object_set_new(o, "trunk_sid", json_null());
    json_object_set_new(o, "uri", json_string(uri));
    return o;
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
