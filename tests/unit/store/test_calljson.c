/* test_calljson — the Call resource's bytes. The expected bodies were
 * produced by the calljson_call + json_dumps of commit 2e9cfc3 (before the
 * fetch path was optimised), so any change to the key set, order, value
 * formats or escaping shows up here before a client sees it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "store/calljson.h"

static const char *const ended_want =
    "{\"account_sid\":\"ACde000000000000000000000000000001\",\"annotation\":null,\"answered_b"
    "y\":null,\"api_version\":\"2010-04-01\",\"caller_name\":null,\"date_created\":\"Wed, 03 "
    "Jul 2024 09:46:40 +0000\",\"date_updated\":\"Wed, 03 Jul 2024 09:46:45 +0000\",\"directi"
    "on\":\"outbound-api\",\"duration\":\"4\",\"end_time\":\"Wed, 03 Jul 2024 09:46:45 +0000"
    "\",\"forwarded_from\":null,\"from\":\"+14155550199\",\"from_formatted\":\"(415) 555-0199"
    "\",\"group_sid\":null,\"parent_call_sid\":null,\"phone_number_sid\":null,\"price\":null,"
    "\"price_unit\":\"USD\",\"queue_time\":\"0\",\"sid\":\"CA0123456789abcdef0123456789abcdef"
    "\",\"start_time\":\"Wed, 03 Jul 2024 09:46:41 +0000\",\"status\":\"completed\",\"subreso"
    "urce_uris\":{\"notifications\":\"/2010-04-01/Accounts/ACde000000000000000000000000000001"
    "/Calls/CA0123456789abcdef0123456789abcdef/Notifications.json\",\"recordings\":\"/2010-04"
    "-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123456789abcdef0123456789abcdef"
    "/Recordings.json\",\"payments\":\"/2010-04-01/Accounts/ACde00000000000000000000000000000"
    "1/Calls/CA0123456789abcdef0123456789abcdef/Payments.json\",\"events\":\"/2010-04-01/Acco"
    "unts/ACde000000000000000000000000000001/Calls/CA0123456789abcdef0123456789abcdef/Events."
    "json\",\"siprec\":\"/2010-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123"
    "456789abcdef0123456789abcdef/Siprec.json\",\"streams\":\"/2010-04-01/Accounts/ACde000000"
    "000000000000000000000001/Calls/CA0123456789abcdef0123456789abcdef/Streams.json\",\"trans"
    "criptions\":\"/2010-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123456789"
    "abcdef0123456789abcdef/Transcriptions.json\",\"user_defined_message_subscriptions\":\"/2"
    "010-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123456789abcdef0123456789"
    "abcdef/UserDefinedMessageSubscriptions.json\",\"user_defined_messages\":\"/2010-04-01/Ac"
    "counts/ACde000000000000000000000000000001/Calls/CA0123456789abcdef0123456789abcdef/UserD"
    "efinedMessages.json\"},\"to\":\"+14155550100\",\"to_formatted\":\"(415) 555-0100\",\"tru"
    "nk_sid\":null,\"uri\":\"/2010-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA"
    "0123456789abcdef0123456789abcdef.json\"}";

static const char *const live_want =
    "{\"account_sid\":\"AC0000000000000000000000000000ffff\",\"annotation\":null,\"answered_b"
    "y\":\"machine_start\",\"api_version\":\"2010-04-01\",\"caller_name\":null,\"date_created"
    "\":\"Tue, 29 Feb 2000 00:00:00 +0000\",\"date_updated\":\"Tue, 29 Feb 2000 00:01:00 +000"
    "0\",\"direction\":\"outbound-dial\",\"duration\":null,\"end_time\":null,\"forwarded_from"
    "\":null,\"from\":\"+14155550199\",\"from_formatted\":\"(415) 555-0199\",\"group_sid\":nu"
    "ll,\"parent_call_sid\":\"CA11111111111111111111111111111111\",\"phone_number_sid\":null,"
    "\"price\":null,\"price_unit\":\"USD\",\"queue_time\":\"123\",\"sid\":\"CAfedcba987654321"
    "0fedcba9876543210\",\"start_time\":\"Tue, 29 Feb 2000 00:00:01 +0000\",\"status\":\"in-p"
    "rogress\",\"subresource_uris\":{\"notifications\":\"/2010-04-01/Accounts/AC0000000000000"
    "000000000000000ffff/Calls/CAfedcba9876543210fedcba9876543210/Notifications.json\",\"reco"
    "rdings\":\"/2010-04-01/Accounts/AC0000000000000000000000000000ffff/Calls/CAfedcba9876543"
    "210fedcba9876543210/Recordings.json\",\"payments\":\"/2010-04-01/Accounts/AC000000000000"
    "0000000000000000ffff/Calls/CAfedcba9876543210fedcba9876543210/Payments.json\",\"events\""
    ":\"/2010-04-01/Accounts/AC0000000000000000000000000000ffff/Calls/CAfedcba9876543210fedcb"
    "a9876543210/Events.json\",\"siprec\":\"/2010-04-01/Accounts/AC00000000000000000000000000"
    "00ffff/Calls/CAfedcba9876543210fedcba9876543210/Siprec.json\",\"streams\":\"/2010-04-01/"
    "Accounts/AC0000000000000000000000000000ffff/Calls/CAfedcba9876543210fedcba9876543210/Str"
    "eams.json\",\"transcriptions\":\"/2010-04-01/Accounts/AC0000000000000000000000000000ffff"
    "/Calls/CAfedcba9876543210fedcba9876543210/Transcriptions.json\",\"user_defined_message_s"
    "ubscriptions\":\"/2010-04-01/Accounts/AC0000000000000000000000000000ffff/Calls/CAfedcba9"
    "876543210fedcba9876543210/UserDefinedMessageSubscriptions.json\",\"user_defined_messages"
    "\":\"/2010-04-01/Accounts/AC0000000000000000000000000000ffff/Calls/CAfedcba9876543210fed"
    "cba9876543210/UserDefinedMessages.json\"},\"to\":\"+442071838750\",\"to_formatted\":\"+4"
    "42071838750\",\"trunk_sid\":null,\"uri\":\"/2010-04-01/Accounts/AC0000000000000000000000"
    "000000ffff/Calls/CAfedcba9876543210fedcba9876543210.json\"}";

/* Odd bytes in a row (which twigate never writes, but a database edited by
 * hand might hold): UTF-8 kept as is, a quote escaped, and a value that is
 * not UTF-8 left out, key and all, as jansson's json_string does. */
static const char *const odd_want =
    "{\"account_sid\":\"ACde000000000000000000000000000001\",\"annotation\":null,\"answered"
    "_by\":null,\"api_version\":\"2010-04-01\",\"caller_name\":null,\"date_created\":\"Wed,"
    " 03 Jul 2024 09:46:40 +0000\",\"date_updated\":\"Wed, 03 Jul 2024 09:46:45 +0000\",\"d"
    "irection\":\"outbound-api\",\"duration\":\"0\",\"end_time\":null,\"forwarded_from\":nu"
    "ll,\"group_sid\":null,\"parent_call_sid\":null,\"phone_number_sid\":null,\"price\":nul"
    "l,\"price_unit\":\"USD\",\"queue_time\":\"0\",\"sid\":\"CA0123456789abcdef0123456789ab"
    "cdef\",\"start_time\":null,\"status\":\"completed\",\"subresource_uris\":{\"notificati"
    "ons\":\"/2010-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123456789abcd"
    "ef0123456789abcdef/Notifications.json\",\"recordings\":\"/2010-04-01/Accounts/ACde0000"
    "00000000000000000000000001/Calls/CA0123456789abcdef0123456789abcdef/Recordings.json\","
    "\"payments\":\"/2010-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123456"
    "789abcdef0123456789abcdef/Payments.json\",\"events\":\"/2010-04-01/Accounts/ACde000000"
    "000000000000000000000001/Calls/CA0123456789abcdef0123456789abcdef/Events.json\",\"sipr"
    "ec\":\"/2010-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123456789abcde"
    "f0123456789abcdef/Siprec.json\",\"streams\":\"/2010-04-01/Accounts/ACde000000000000000"
    "000000000000001/Calls/CA0123456789abcdef0123456789abcdef/Streams.json\",\"transcriptio"
    "ns\":\"/2010-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123456789abcde"
    "f0123456789abcdef/Transcriptions.json\",\"user_defined_message_subscriptions\":\"/2010"
    "-04-01/Accounts/ACde000000000000000000000000000001/Calls/CA0123456789abcdef0123456789a"
    "bcdef/UserDefinedMessageSubscriptions.json\",\"user_defined_messages\":\"/2010-04-01/A"
    "ccounts/ACde000000000000000000000000000001/Calls/CA0123456789abcdef0123456789abcdef/Us"
    "erDefinedMessages.json\"},\"to\":\"+1415\xc3""\xa9""\\\"x\",\"to_formatted\":\"+1415"
    "\xc3""\xa9""\\\"x\",\"trunk_sid\":null,\"uri\":\"/2010-04-01/Accounts/ACde000000000000"
    "000000000000000001/Calls/CA0123456789abcdef0123456789abcdef.json\"}";

static store_call ended_call(void)
{
    store_call c = {0};
    strcpy(c.sid, "CA0123456789abcdef0123456789abcdef");
    strcpy(c.account_sid, "ACde000000000000000000000000000001");
    strcpy(c.to, "+14155550100");
    strcpy(c.from, "+14155550199");
    strcpy(c.status, "completed");
    strcpy(c.direction, "outbound-api");
    c.date_created = 1720000000000;
    c.date_updated = 1720000005000;
    c.start_time = 1720000001000;
    c.end_time = 1720000005000;
    c.duration = 4;
    return c;
}

/* Nulls where the ended call has values and values where it has nulls. */
static store_call live_call(void)
{
    store_call c = {0};
    strcpy(c.sid, "CAfedcba9876543210fedcba9876543210");
    strcpy(c.account_sid, "AC0000000000000000000000000000ffff");
    strcpy(c.parent_call_sid, "CA11111111111111111111111111111111");
    strcpy(c.to, "+442071838750");
    strcpy(c.from, "+14155550199");
    strcpy(c.status, "in-progress");
    strcpy(c.direction, "outbound-dial");
    strcpy(c.answered_by, "machine_start");
    c.date_created = 951782400000;
    c.date_updated = 951782460999;
    c.start_time = 951782401000;
    c.duration = -1;
    c.queue_time = 123;
    return c;
}

static store_call odd_call(void)
{
    store_call c = ended_call();
    strcpy(c.to, "+1415\xc3\xa9\"x");
    strcpy(c.from, "bad\xff");
    c.start_time = c.end_time = 0;
    c.duration = 0;
    return c;
}

static void check(const store_call *c, const char *want)
{
    char out[4096];
    size_t n = calljson_call_render(c, out, sizeof out);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    /* The tree itself, as http_reply_json and the list pages send it. */
    json_t *j = calljson_call(c);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, want);
    free(s);
    json_decref(j);
}

static void test_call_bytes(void **state)
{
    (void)state;
    store_call a = ended_call(), b = live_call(), o = odd_call();
    check(&a, ended_want);
    check(&b, live_want);
    check(&o, odd_want);
}

/* ASCII that needs escaping (controls, quote, backslash) and that does
 * not ('/', DEL): the direct writer and jansson's dump agree byte for byte. */
static void test_render_escapes_as_jansson(void **state)
{
    (void)state;
    store_call a = ended_call();
    char out[4096];
    strcpy(a.to, "a\"b\\c/d\x7f\x01\x1f\b\f\n\r\t");
    strcpy(a.answered_by, "x\ty");
    strcpy(a.status, "\"");
    json_t *j = calljson_call(&a);
    char *s = json_dumps(j, JSON_COMPACT);
    size_t n = calljson_call_render(&a, out, sizeof out);
    assert_int_equal(n, strlen(s));
    assert_memory_equal(out, s, n);
    assert_non_null(strstr(s, "\\u0001\\u001F"));
    free(s);
    json_decref(j);
}

static void test_render_reports_the_size_it_needs(void **state)
{
    (void)state;
    store_call a = ended_call();
    char small[64];
    size_t n = calljson_call_render(&a, small, sizeof small);
    assert_int_equal(n, strlen(ended_want));
    assert_true(n > sizeof small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_bytes),
        cmocka_unit_test(test_render_reports_the_size_it_needs),
        cmocka_unit_test(test_render_escapes_as_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
