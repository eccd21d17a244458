/* test_kevent — Kaphila event decoding and its Twilio meaning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "net/kevent.h"

static kevent parse(const char *js)
{
    kevent k;
    json_t *j = json_loads(js, 0, NULL);
    assert_non_null(j);
    assert_true(kevent_parse(j, &k));
    json_decref(j);
    return k;
}

static void test_rejects_non_events(void **state)
{
    (void)state;
    const char *bad[] = {"[]", "{}", "{\"event\":3}", "\"call.ended\"", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kevent k;
        json_t *j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        assert_false(kevent_parse(j, &k));
        json_decref(j);
    }
}

static void test_kinds(void **state)
{
    (void)state;
    assert_int_equal(parse("{\"event\":\"call.initiated\"}").kind, KE_INITIATED);
    assert_int_equal(parse("{\"event\":\"call.answered\"}").kind, KE_ANSWERED);
    assert_int_equal(parse("{\"event\":\"call.ended\"}").kind, KE_ENDED);
    assert_int_equal(parse("{\"event\":\"dtmf.received\",\"digit\":\"5\"}").kind, KE_DTMF);
    assert_int_equal(parse("{\"event\":\"gather.complete\"}").kind, KE_GATHER);
    assert_int_equal(parse("{\"event\":\"tts.played\"}").kind, KE_TTS_PLAYED);
    assert_int_equal(parse("{\"event\":\"recording.completed\"}").kind, KE_RECORDING);
    assert_int_equal(parse("{\"event\":\"call.transferred\"}").kind, KE_OTHER);
    assert_int_equal(parse("{\"event\":\"call.ended.extra\"}").kind, KE_OTHER);
}

static void test_ended_fields_in_both_spellings(void **state)
{
    (void)state;
    kevent k = parse("{\"event\":\"call.ended\",\"status\":\"busy\",\"hangupCause\":\"17\","
                     "\"wasAnswered\":false,\"callDuration\":0,\"endReason\":\"busy\"}");
    assert_int_equal(k.hangup_cause, 17);
    assert_string_equal(k.status, "busy");
    assert_string_equal(k.end_reason, "busy");
    assert_false(k.was_answered);
    assert_int_equal(k.duration, 0);
    k = parse("{\"event\":\"call.ended\",\"hangupCause\":16,\"wasAnswered\":true,\"duration\":\"42\"}");
    assert_int_equal(k.hangup_cause, 16);
    assert_true(k.was_answered);
    assert_int_equal(k.duration, 42);
    /* Wrong types read as absent. */
    k = parse("{\"event\":\"call.ended\",\"hangupCause\":\"x\",\"wasAnswered\":\"yes\","
              "\"callDuration\":-5,\"status\":7}");
    assert_int_equal(k.hangup_cause, 0);
    assert_false(k.was_answered);
    assert_int_equal(k.duration, -1);
    assert_string_equal(k.status, "");
    assert_string_equal(k.end_reason, "");
    /* An endReason longer than the field is cut, never overflows it. */
    k = parse("{\"event\":\"call.ended\",\"endReason\":\"a_very_long_end_reason_from_kaphila\"}");
    assert_int_equal(strlen(k.end_reason), sizeof k.end_reason - 1);
}

static void test_amd(void **state)
{
    (void)state;
    kevent k = parse("{\"event\":\"call.answered\",\"amd\":{\"status\":\"MACHINE\","
                     "\"confidence\":0.9,\"durationMs\":2500}}");
    assert_true(k.has_amd);
    assert_string_equal(k.amd_status, "MACHINE");
    assert_int_equal(k.amd_ms, 2500);
    assert_string_equal(kevent_answered_by(k.amd_status, false), "machine_start");
    assert_string_equal(kevent_answered_by(k.amd_status, true), "machine_end_other");
    assert_string_equal(kevent_answered_by("HUMAN", false), "human");
    assert_string_equal(kevent_answered_by("NOTSURE", false), "human");
    assert_string_equal(kevent_answered_by("UNKNOWN", false), "unknown");
    assert_string_equal(kevent_answered_by("NOAMD", false), "unknown");
    assert_string_equal(kevent_answered_by("", false), "unknown");
    k = parse("{\"event\":\"call.answered\"}");
    assert_false(k.has_amd);
}

static void test_terminal_status(void **state)
{
    (void)state;
    static const struct { const char *js; bool seen, cancel; const char *want; } cases[] = {
        {"{\"event\":\"call.ended\",\"wasAnswered\":true}", false, false, "completed"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"17\"}", true, false, "completed"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"16\"}", false, true, "canceled"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"17\"}", false, false, "busy"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"21\"}", false, false, "busy"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"18\"}", false, false, "no-answer"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"19\"}", false, false, "no-answer"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"1\"}", false, false, "failed"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"3\"}", false, false, "failed"},
        {"{\"event\":\"call.ended\",\"hangupCause\":\"28\"}", false, false, "failed"},
        {"{\"event\":\"call.ended\",\"status\":\"failed\"}", false, false, "failed"},
        {"{\"event\":\"call.ended\",\"status\":\"completed\"}", false, false, "no-answer"},
        {"{\"event\":\"call.ended\",\"status\":\"weird\"}", false, false, "no-answer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kevent k = parse(cases[i].js);
        assert_string_equal(kevent_terminal_status(&k, cases[i].seen, cases[i].cancel), cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rejects_non_events),
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_ended_fields_in_both_spellings),
        cmocka_unit_test(test_amd),
        cmocka_unit_test(test_terminal_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
