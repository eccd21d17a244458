/* errors — the Twilio error catalogue and its JSON rendering.
 *
 * Titles follow Twilio's error dictionary where the contract (§7.2) quotes
 * it; REST messages that Twilio personalises ("The 'To' number X is not a
 * valid phone number.") are built by the caller and passed to twerr_render,
 * the title being only the fallback. The table is grouped by kind for
 * readers and scanned linearly: ~40 entries, looked up only on error paths. */
#include "base/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static const twerr_def catalogue[] = {
    /* REST (2xxxx) */
    { 20001, 0,   "WARNING", "Unknown parameters" },
    { 20003, 401, "ERROR",   "Authenticate" },
    { 20004, 405, "ERROR",   "Method not allowed" },
    { 20005, 403, "ERROR",   "Account not active" },
    { 20404, 404, "ERROR",   "The requested resource was not found" },
    { 20429, 429, "ERROR",   "Too Many Requests" },
    { 22005, 429, "ERROR",   "Call Queue Full" },
    { 20500, 500, "ERROR",   "Internal Server Error" },
    { 20503, 503, "ERROR",   "Service Unavailable" },
    { 21200, 400, "ERROR",   "Calls resource error" },
    { 21201, 400, "ERROR",   "No 'To' number is specified" },
    { 21205, 400, "ERROR",
      "Url parameter is required. For more information, see http://www.twilio.com/docs/api/twiml" },
    { 21210, 400, "ERROR",   "'From' phone number not verified" },
    { 21211, 400, "ERROR",   "Invalid 'To' Phone Number" },
    { 21212, 400, "ERROR",   "Invalid 'From' Phone Number" },
    { 21213, 400, "ERROR",   "No 'From' number is specified" },
    { 21214, 400, "ERROR",   "'To' phone number cannot be reached" },
    { 21215, 400, "ERROR",   "Geo Permission configuration is not permitting call" },
    { 21216, 400, "ERROR",   "Call blocked by Twilio" },
    { 21217, 400, "ERROR",   "Phone number does not appear to be valid" },
    { 21218, 400, "ERROR",   "Invalid ApplicationSid" },
    { 21220, 400, "ERROR",   "Invalid call state" },
    { 21626, 400, "ERROR",   "Invalid 'StatusCallbackEvent'" },
    /* Call-time notifications (never a REST response) */
    { 11100, 0,   "ERROR",   "Invalid URL format" },
    { 11200, 0,   "ERROR",   "HTTP retrieval failure" },
    { 11202, 0,   "ERROR",   "TCP connection refused" },
    { 11205, 0,   "ERROR",   "HTTP connection failure" },
    { 11206, 0,   "ERROR",   "HTTP protocol violation" },
    { 11210, 0,   "ERROR",   "HTTP bad host name" },
    { 11215, 0,   "ERROR",   "Too many redirects" },
    { 11217, 0,   "WARNING", "HTTP error response code" },
    { 11237, 0,   "ERROR",   "Certificate invalid - could not find path to certificate" },
    { 11750, 0,   "ERROR",   "TwiML response body too large" },
    { 12100, 0,   "ERROR",   "Document parse failure" },
    { 12102, 0,   "ERROR",   "Root element must be Response" },
    { 12200, 0,   "WARNING", "Schema validation warning" },
    { 12300, 0,   "ERROR",   "Invalid Content-Type" },
    { 13214, 0,   "ERROR",   "Dial: Invalid callerId value" },
    { 13224, 0,   "ERROR",   "Dial: Invalid phone number" },
    { 13227, 0,   "ERROR",   "Dial: Geo permission configuration is not permitting call" },
    { 16101, 0,   "WARNING", "Recording too short" },
    { 16102, 0,   "WARNING", "Recording is silent" },
};
#define CATALOGUE_N (sizeof catalogue / sizeof catalogue[0])

const twerr_def *twerr_lookup(int code)
{
    for (size_t i = 0; i < CATALOGUE_N; i++)
        if (catalogue[i].code == code)
            return &catalogue[i];
    return NULL;
}

int twerr_http_status(int code)
{
    const twerr_def *d = twerr_lookup(code);
    /* A notification code has no REST status; 400 keeps a misuse visible
     * to the client as a request error rather than an invalid HTTP 0. */
    return d != NULL && d->http_status != 0 ? d->http_status : 400;
}

void twerr_more_info(int code, char *out, size_t size)
{
    if (size > 0)
        snprintf(out, size, "https://www.twilio.com/docs/errors/%d", code);
}

char *twerr_render(int code, int http_status, const char *message)
{
    char more_info[64];
    char *copy = NULL;
    char *out = NULL;
    json_t *msg = NULL;
    json_t *obj = NULL;

    if (message == NULL) {
        const twerr_def *d = twerr_lookup(code);
        message = d != NULL ? d->title : "Unknown error";
    }
    if (http_status == 0)
        http_status = twerr_http_status(code);
    twerr_more_info(code, more_info, sizeof more_info);

    msg = json_string(message);
    if (msg == NULL) {
        /* Not UTF-8 (a message quoting a client's raw bytes): jansson refuses
         * it, and a wrong-but-readable message beats no error body at all. */
        copy = strdup(message);
        if (copy == NULL)
            goto out;
        for (char *p = copy; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        msg = json_string(copy);
        if (msg == NULL)
            goto out;
    }
    /* "o" steals msg; json_pack releases it even when packing fails. */
    obj = json_pack("{s:i, s:o, s:s, s:i}", "code", code, "message", msg,
                    "more_info", more_info, "status", http_status);
    msg = NULL;
    if (obj == NULL)
        goto out;
    /* Keys are already alphabetical; SORT_KEYS makes the order a guarantee. */
    out = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
out:
    json_decref(obj);
    json_decref(msg);
    free(copy);
    return out;
}
