/* Unit tests for errors: the catalogue's contents and the exact JSON body. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/errors.h"

static void test_rest_codes(void **state)
{
    (void)state;
    static const struct { int code, status; const char *title; } want[] = {
        { 20003, 401, "Authenticate" },
        { 20004, 405, "Method not allowed" },
        { 20005, 403, "Account not active" },
        { 20404, 404, "The requested resource was not found" },
        { 20429, 429, "Too Many Requests" },
        { 20500, 500, "Internal Server Error" },
        { 20503, 503, "Service Unavailable" },
        { TWERR_BAD_PARAM, 400, "Calls resource error" },
        { 21201, 400, "No 'To' number is specified" },
        { 21205, 400, "Url parameter is required. For more information, see http://www.twilio.com/docs/api/twiml" },
        { 21213, 400, "No 'From' number is specified" },
        { 21220, 400, "Invalid call state" },
        { 21626, 400, "Invalid 'StatusCallbackEvent'" },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const twerr_def *d = twerr_lookup(want[i].code);
        assert_non_null(d);
        assert_int_equal(d->code, want[i].code);
        assert_int_equal(d->http_status, want[i].status);
        assert_int_equal(twerr_http_status(want[i].code), want[i].status);
        assert_string_equal(d->title, want[i].title);
    }
    /* Every 21xxx asked about in the contract is a 400 with a title. */
    int c21[] = { 21210, 21211, 21212, 21214, 21215, 21216, 21217, 21218 };
    for (size_t i = 0; i < sizeof c21 / sizeof c21[0]; i++) {
        const twerr_def *d = twerr_lookup(c21[i]);
        assert_non_null(d);
        assert_int_equal(d->http_status, 400);
        assert_true(strlen(d->title) > 0);
    }
}

static void test_notification_codes(void **state)
{
    (void)state;
    static const struct { int code; const char *level, *title; } want[] = {
        { 20001, "WARNING", "Unknown parameters" },
        { 11200, "ERROR", "HTTP retrieval failure" },
        { 11205, "ERROR", "HTTP connection failure" },
        { 11206, "ERROR", "HTTP protocol violation" },
        { 11210, "ERROR", "HTTP bad host name" },
        { 11215, "ERROR", "Too many redirects" },
        { 11217, "WARNING", "HTTP error response code" },
        { 11237, "ERROR", "Certificate invalid - could not find path to certificate" },
        { 11750, "ERROR", "TwiML response body too large" },
        { 12100, "ERROR", "Document parse failure" },
        { 12102, "ERROR", "Root element must be Response" },
        { 12200, "WARNING", "Schema validation warning" },
        { 12300, "ERROR", "Invalid Content-Type" },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const twerr_def *d = twerr_lookup(want[i].code);
        assert_non_null(d);
        assert_int_equal(d->http_status, 0);
        assert_string_equal(d->log_level, want[i].level);
        assert_string_equal(d->title, want[i].title);
        /* Never an HTTP 0 even if misused on a REST path. */
        assert_int_equal(twerr_http_status(want[i].code), 400);
    }
    int more[] = { 11100, 16101, 16102, 13227 };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        assert_non_null(twerr_lookup(more[i]));
}

static void test_unknown(void **state)
{
    (void)state;
    assert_null(twerr_lookup(0));
    assert_null(twerr_lookup(99999));
    assert_null(twerr_lookup(-20003));
    assert_int_equal(twerr_http_status(99999), 400);
}

static void test_render_exact(void **state)
{
    (void)state;
    char *s = twerr_render(21211, 0, "The 'To' number 5551234567 is not a valid phone number.");
    assert_string_equal(s, "{\"code\":21211,\"message\":\"The 'To' number 5551234567 is not a valid "
                           "phone number.\",\"more_info\":\"https://www.twilio.com/docs/errors/21211\","
                           "\"status\":400}");
    free(s);
    s = twerr_render(20003, 0, NULL);
    assert_string_equal(s, "{\"code\":20003,\"message\":\"Authenticate\",\"more_info\":"
                           "\"https://www.twilio.com/docs/errors/20003\",\"status\":401}");
    free(s);
}

static void test_render_overrides_and_escaping(void **state)
{
    (void)state;
    /* An explicit status wins over the catalogue's. */
    char *s = twerr_render(20404, 410, NULL);
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 410);
    assert_string_equal(json_string_value(json_object_get(j, "message")),
                        "The requested resource was not found");
    json_decref(j);
    free(s);

    /* Quotes, backslashes and control characters come out as valid JSON. */
    s = twerr_render(21205, 0, "bad \"Url\" \\ here\n\ttab");
    j = json_loads(s, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "message")), "bad \"Url\" \\ here\n\ttab");
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);
    free(s);

    /* Invalid UTF-8 from a client still yields a parseable body. */
    s = twerr_render(21211, 0, "The 'To' number \xff\xfe is not valid");
    assert_non_null(s);
    j = json_loads(s, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "message")), "The 'To' number ?? is not valid");
    json_decref(j);
    free(s);

    /* Valid UTF-8 is kept as is. */
    s = twerr_render(21211, 0, "caf\xc3\xa9");
    j = json_loads(s, 0, &err);
    assert_string_equal(json_string_value(json_object_get(j, "message")), "caf\xc3\xa9");
    json_decref(j);
    free(s);
}

static void test_render_unknown_code(void **state)
{
    (void)state;
    char *s = twerr_render(54321, 0, NULL);
    assert_string_equal(s, "{\"code\":54321,\"message\":\"Unknown error\",\"more_info\":"
                           "\"https://www.twilio.com/docs/errors/54321\",\"status\":400}");
    free(s);
}

static void test_more_info(void **state)
{
    (void)state;
    char buf[64];
    twerr_more_info(11200, buf, sizeof buf);
    assert_string_equal(buf, "https://www.twilio.com/docs/errors/11200");
    char small[10];
    twerr_more_info(11200, small, sizeof small);
    assert_string_equal(small, "https://w");   /* truncated, still terminated */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rest_codes),
        cmocka_unit_test(test_notification_codes),
        cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_render_overrides_and_escaping),
        cmocka_unit_test(test_render_unknown_code),
        cmocka_unit_test(test_more_info),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
