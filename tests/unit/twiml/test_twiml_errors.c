/* test_twiml_errors — TwiML parsing of bad documents: each 12200 warning
 * class (names, attributes, values, caps) and the fatal 12100/12102 errors
 * (malformed, encoding, root, DOCTYPE, size, depth and verb caps, the error
 * buffer). Good documents are test_twiml.c's; the shared helpers are
 * support/twiml_rig.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "twiml/twiml.h"
#include "../support/twiml_rig.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- 12200 warnings ------------------------------------------------------ */

static void test_names_case_sensitive(void **state)
{
    (void)state;
    twiml_doc *d = ut_twiml_ok("<Response>\n<say>hi</say>\n<SAY>hi</SAY>\n"
                            "<Say Loop=\"2\" LOOP=\"3\">hi</Say>\n</Response>");
    assert_int_equal(d->n_verbs, 1);
    assert_int_equal(d->verbs[0].u.say.loop, 1);
    assert_int_equal(d->n_warnings, 4);
    ut_twiml_warning(d, 0, "line 2: 'say' is not a valid TwiML verb (names are case-sensitive)");
    ut_twiml_warning(d, 1, "line 3: 'SAY' is not a valid TwiML verb");
    ut_twiml_warning(d, 2, "line 4: 'Loop' is not a valid attribute of <Say>");
    ut_twiml_warning(d, 3, "line 4: 'LOOP' is not a valid attribute of <Say>");
    twiml_doc_destroy(d);
}

static void test_unknown_attributes(void **state)
{
    (void)state;
    twiml_doc *d = ut_twiml_ok("<Response foo=\"1\"><Play lop=\"3\" xml:lang=\"en\">a.mp3</Play>"
                            "<Record finishOnkey=\"1\"/></Response>");
    assert_int_equal(d->n_verbs, 2);
    assert_int_equal(d->verbs[0].u.play.loop, 1);
    assert_string_equal(d->verbs[1].u.record.finish_on_key, "1234567890*#");
    assert_int_equal(d->n_warnings, 4);
    ut_twiml_warning(d, 0, "'foo' is not a valid attribute of <Response>");
    ut_twiml_warning(d, 1, "'lop' is not a valid attribute of <Play>");
    ut_twiml_warning(d, 2, "'lang' is not a valid attribute of <Play>");
    ut_twiml_warning(d, 3, "'finishOnkey' is not a valid attribute of <Record>");
    twiml_doc_destroy(d);
}

/* Each bad value gives one warning, and the field keeps its default. */
static void test_bad_values_use_defaults(void **state)
{
    (void)state;
    twiml_doc *d = ut_twiml_ok(
        "<Response>"
        "<Say loop=\"x\" voice=\"   \">a</Say>"
        "<Play loop=\"1.5\" digits=\"\">u</Play>"
        "<Pause length=\"99999999999999999999999\"/>"
        "<Gather numDigits=\"0\" timeout=\"-1\" method=\"PUT\" input=\"voice\" "
        "finishOnKey=\"##\" actionOnEmptyResult=\"yes\"/>"
        "<Gather timeout=\"0\" input=\"\" finishOnKey=\"a\" numDigits=\"+3\"/>"
        "<Record timeout=\"-5\" maxLength=\"0\" finishOnKey=\"12x\" playBeep=\"1\" trim=\"yes\" "
        "method=\"get \" recordingStatusCallbackMethod=\"DELETE\" "
        "recordingStatusCallbackEvent=\"completed bogus\" transcribe=\"maybe\"/>"
        "<Redirect method=\"PATCH\">/x</Redirect>"
        "<Reject reason=\"nope\"/>"
        "</Response>");
    assert_int_equal(d->n_verbs, 8);
    assert_int_equal(d->verbs[0].u.say.loop, 1);
    assert_null(d->verbs[0].u.say.voice);   /* blank: the default, silently */
    assert_int_equal(d->verbs[1].u.play.loop, 1);
    assert_null(d->verbs[1].u.play.digits);
    assert_int_equal(d->verbs[2].u.pause.length, 1);
    const twiml_gather *g = &d->verbs[3].u.gather;
    assert_int_equal(g->num_digits, 0);
    assert_int_equal(g->timeout, 5);
    assert_int_equal(g->method, TM_POST);
    assert_int_equal(g->input, TGATHER_DTMF);
    assert_int_equal(g->finish_on_key, '#');
    assert_false(g->action_on_empty_result);
    g = &d->verbs[4].u.gather;
    assert_int_equal(g->timeout, 5);
    assert_int_equal(g->input, TGATHER_DTMF);
    assert_int_equal(g->finish_on_key, '#');
    assert_int_equal(g->num_digits, 0);
    const twiml_record *r = &d->verbs[5].u.record;
    assert_int_equal(r->timeout, 5);
    assert_int_equal(r->max_length, 3600);
    assert_string_equal(r->finish_on_key, "1234567890*#");
    assert_true(r->play_beep);
    assert_true(r->trim);
    assert_int_equal(r->method, TM_GET);   /* "get " is trimmed and accepted */
    assert_int_equal(r->rsc_method, TM_POST);
    assert_int_equal(r->rsc_events, TREC_EV_COMPLETED);
    assert_false(r->transcribe);
    assert_int_equal(d->verbs[6].u.redirect.method, TM_POST);
    assert_false(d->verbs[7].u.reject.busy);

    static const char *const expect[] = {
        "'x' is not a valid value for 'loop' on <Say>",
        "'1.5' is not a valid value for 'loop' on <Play>",
        "'' is not a valid value for 'digits' on <Play>",
        "'99999999999999999999999' is not a valid value for 'length' on <Pause>",
        "'0' is not a valid value for 'numDigits' on <Gather>",
        "'-1' is not a valid value for 'timeout' on <Gather>",
        "'PUT' is not a valid value for 'method' on <Gather>",
        "'voice' is not a valid value for 'input' on <Gather>",
        "'##' is not a valid value for 'finishOnKey' on <Gather>",
        "'yes' is not a valid value for 'actionOnEmptyResult' on <Gather>",
        "'0' is not a valid value for 'timeout' on <Gather>",
        "'' is not a valid value for 'input' on <Gather>",
        "'a' is not a valid value for 'finishOnKey' on <Gather>",
        "'+3' is not a valid value for 'numDigits' on <Gather>",
        "'-5' is not a valid value for 'timeout' on <Record>",
        "'0' is not a valid value for 'maxLength' on <Record>",
        "'12x' is not a valid value for 'finishOnKey' on <Record>",
        "'1' is not a valid value for 'playBeep' on <Record>",
        "'yes' is not a valid value for 'trim' on <Record>",
        "'DELETE' is not a valid value for 'recordingStatusCallbackMethod' on <Record>",
        "'completed bogus' is not a valid value for 'recordingStatusCallbackEvent'",
        "'maybe' is not a valid value for 'transcribe' on <Record>",
        "'PATCH' is not a valid value for 'method' on <Redirect>",
        "'nope' is not a valid value for 'reason' on <Reject>",
    };
    assert_int_equal(d->n_warnings, sizeof expect / sizeof expect[0]);
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        ut_twiml_warning(d, i, expect[i]);
        ut_twiml_warning(d, i, "the default is used");
    }
    twiml_doc_destroy(d);
}

static void test_int_cap(void **state)
{
    (void)state;
    char xml[256];
    snprintf(xml, sizeof xml, "<Response><Pause length=\"%d\"/><Pause length=\"%d\"/></Response>",
             TWIML_INT_MAX, TWIML_INT_MAX + 1);
    twiml_doc *d = ut_twiml_ok(xml);
    assert_int_equal(d->verbs[0].u.pause.length, TWIML_INT_MAX);
    assert_int_equal(d->verbs[1].u.pause.length, 1);
    assert_int_equal(d->n_warnings, 1);
    twiml_doc_destroy(d);
}

static void test_long_values_are_clipped(void **state)
{
    (void)state;
    /* 1000 × "é": the echo in the message is clipped on a character boundary. */
    size_t n = 1000;
    char *xml = malloc(64 + 2 * n);
    assert_non_null(xml);
    char *p = xml + sprintf(xml, "<Response><Say loop=\"");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "\xC3\xA9");
    strcpy(p, "\">x</Say></Response>");
    twiml_doc *d = ut_twiml_ok(xml);
    assert_int_equal(d->n_warnings, 1);
    const char *m = d->warnings[0].message;
    assert_true(strlen(m) < 200);
    ut_assert_contains(m, "\xC3\xA9...' is not a valid value for 'loop'");
    twiml_doc_destroy(d);
    free(xml);
}

static void test_warning_cap(void **state)
{
    (void)state;
    size_t n = 300;
    char *xml = malloc(32 + n * 8);
    assert_non_null(xml);
    char *p = xml + sprintf(xml, "<Response>");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "<say/>");
    strcpy(p, "<Hangup/></Response>");
    twiml_doc *d = ut_twiml_ok(xml);
    assert_int_equal(d->n_verbs, 1);
    assert_int_equal(d->n_warnings, TWIML_MAX_WARNINGS);
    ut_twiml_warning(d, TWIML_MAX_WARNINGS - 2, "'say' is not a valid TwiML verb");
    ut_twiml_warning(d, TWIML_MAX_WARNINGS - 1, "the rest are not reported");
    twiml_doc_destroy(d);
    free(xml);
}

/* ---- 12100 / 12102 ------------------------------------------------------- */

static void test_malformed(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(ut_twiml_fail("<Response>\n<Say>hi</Response>", err, sizeof err), 12100);
    ut_assert_contains(err, "line 2:");
    ut_assert_contains(err, "Opening and ending tag mismatch");
    assert_null(strchr(err, '\n'));

    assert_int_equal(ut_twiml_fail("<Response><Say>hi</Say>", err, sizeof err), 12100);
    assert_int_equal(ut_twiml_fail("<Response><Say a=1/></Response>", err, sizeof err), 12100);
    assert_int_equal(ut_twiml_fail("<Response/><Response/>", err, sizeof err), 12100);
    assert_int_equal(ut_twiml_fail("just text", err, sizeof err), 12100);
    assert_int_equal(ut_twiml_fail("<Response>&nbsp;</Response>", err, sizeof err), 12100);
    ut_assert_contains(err, "Entity 'nbsp' not defined");
    assert_int_equal(ut_twiml_fail("<Response><x:Say>a</x:Say></Response>", err, sizeof err), 12100);
    ut_assert_contains(err, "Namespace prefix x");
    assert_int_equal(ut_twiml_fail("", err, sizeof err), 12100);
    ut_assert_contains(err, "empty");
    assert_int_equal(ut_twiml_fail("   ", err, sizeof err), 12100);
    assert_int_equal(ut_twiml_fail_lim(NULL, 0, NULL, err, sizeof err), 12100);

    /* Twilio refuses whitespace before the XML declaration, and so do we. */
    assert_int_equal(ut_twiml_fail("\n<?xml version=\"1.0\"?><Response/>", err, sizeof err), 12100);
    ut_assert_contains(err, "XML declaration allowed only at the start");

    /* A NUL byte inside the given length. */
    static const char nul[] = "<Response><Say>a\0b</Say></Response>";
    assert_int_equal(ut_twiml_fail_lim(nul, sizeof nul - 1, NULL, err, sizeof err), 12100);
}

static void test_encoding(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(ut_twiml_fail("<Response><Say>\xFF\xFE</Say></Response>", err, sizeof err),
                     12100);
    ut_assert_contains(err, "not proper UTF-8");

    /* Declared Latin-1 with Latin-1 bytes: read as UTF-8, hence refused. */
    assert_int_equal(ut_twiml_fail("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>"
                                "<Response><Say>caf\xE9</Say></Response>", err, sizeof err), 12100);
    /* …while an ASCII body under any declaration is fine. */
    twiml_doc *d = ut_twiml_ok("<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><Response><Say>ok"
                            "</Say></Response>");
    assert_string_equal(d->verbs[0].u.say.text, "ok");
    twiml_doc_destroy(d);

    static const char utf16[] = "\xFF\xFE<\0R\0e\0s\0p\0o\0n\0s\0e\0/\0>\0";
    assert_int_equal(ut_twiml_fail_lim(utf16, sizeof utf16 - 1, NULL, err, sizeof err), 12100);
    ut_assert_contains(err, "TwiML must be UTF-8");
}

static void test_wrong_root(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(ut_twiml_fail("<Reply><Say>x</Say></Reply>", err, sizeof err), 12102);
    ut_assert_contains(err, "<Reply>");
    assert_int_equal(ut_twiml_fail("<response><Say>x</Say></response>", err, sizeof err), 12102);
    assert_int_equal(ut_twiml_fail("<?xml version=\"1.0\"?>\n\n<Say>x</Say>", err, sizeof err), 12102);
    ut_assert_contains(err, "line 3:");
}

static void test_doctype_refused(void **state)
{
    (void)state;
    char err[256];
    /* Billion laughs: never expanded, never even parsed past the name. */
    const char *laughs =
        "<?xml version=\"1.0\"?>\n"
        "<!DOCTYPE Response [\n"
        " <!ENTITY a \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">\n"
        " <!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">\n"
        " <!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">\n"
        " <!ENTITY d \"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">\n"
        " <!ENTITY e \"&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;\">\n"
        " <!ENTITY f \"&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;\">\n"
        "]>\n"
        "<Response><Say>&f;&f;&f;&f;</Say></Response>";
    assert_int_equal(ut_twiml_fail(laughs, err, sizeof err), 12100);
    ut_assert_contains(err, "DOCTYPE");
    ut_assert_contains(err, "line 2:");

    /* External entity (XXE) and a plain external DTD. */
    assert_int_equal(ut_twiml_fail("<!DOCTYPE Response [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
                                "<Response><Say>&x;</Say></Response>", err, sizeof err), 12100);
    ut_assert_contains(err, "DOCTYPE");
    assert_int_equal(ut_twiml_fail("<!DOCTYPE Response SYSTEM \"http://127.0.0.1:1/twiml.dtd\">"
                                "<Response/>", err, sizeof err), 12100);
    ut_assert_contains(err, "DOCTYPE");
    assert_int_equal(ut_twiml_fail("<!DOCTYPE Response><Response/>", err, sizeof err), 12100);
    ut_assert_contains(err, "DOCTYPE");
}

static void test_size_cap(void **state)
{
    (void)state;
    char err[256];
    twiml_limits lim;
    twiml_limits_default(&lim);
    assert_int_equal(lim.max_bytes, 65536);
    assert_int_equal(lim.max_depth, 16);
    assert_int_equal(lim.max_verbs, 1000);

    lim.max_bytes = 40;
    const char *fits = "<Response><Hangup/></Response>";
    twiml_doc *d = twiml_parse(fits, strlen(fits), &lim, NULL, NULL, 0);
    assert_non_null(d);
    twiml_doc_destroy(d);
    const char *big = "<Response><Say>this one is too long</Say></Response>";
    assert_int_equal(ut_twiml_fail_lim(big, strlen(big), &lim, err, sizeof err), 12100);
    ut_assert_contains(err, "size cap of 40");

    /* Default cap: exactly 64 KiB parses, one byte more does not. */
    size_t n = 65536;
    char *huge = malloc(n + 2);
    assert_non_null(huge);
    memset(huge, ' ', n + 1);
    memcpy(huge, "<Response>", 10);
    memcpy(huge + n - 11, "</Response>", 11);
    d = twiml_parse(huge, n, NULL, NULL, NULL, 0);
    assert_non_null(d);
    twiml_doc_destroy(d);
    assert_int_equal(ut_twiml_fail_lim(huge, n + 1, NULL, err, sizeof err), 12100);
    ut_assert_contains(err, "65537 bytes");
    ut_assert_contains(err, "size cap of 65536");
    free(huge);
}

static void test_depth_cap(void **state)
{
    (void)state;
    char err[256];
    char xml[1024];
    /* Response(1) > Gather(2) > Say(3) > 13 SSML levels = 16: fits. */
    char *p = xml + sprintf(xml, "<Response><Gather><Say>");
    for (int i = 0; i < 13; i++)
        p += sprintf(p, "<s>");
    p += sprintf(p, "deep");
    for (int i = 0; i < 13; i++)
        p += sprintf(p, "</s>");
    sprintf(p, "</Say></Gather></Response>");
    twiml_doc *d = ut_twiml_ok(xml);
    assert_string_equal(d->verbs[0].u.gather.children[0].u.say.text, "deep");
    twiml_doc_destroy(d);

    /* One more level, even inside an element that would be skipped. */
    p = xml + sprintf(xml, "<Response>\n<Unknown><Say>");
    for (int i = 0; i < 14; i++)
        p += sprintf(p, "<s>");
    for (int i = 0; i < 14; i++)
        p += sprintf(p, "</s>");
    sprintf(p, "</Say></Unknown></Response>");
    assert_int_equal(ut_twiml_fail(xml, err, sizeof err), 12100);
    ut_assert_contains(err, "line 2: elements nest deeper than the TwiML cap of 16 levels");

    /* libxml2's own limit also answers for absurd nesting. */
    size_t n = 2000;
    char *deep = malloc(n * 7 + 32);
    assert_non_null(deep);
    p = deep + sprintf(deep, "<Response>");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "<a>");
    sprintf(p, "</Response>");
    assert_int_equal(ut_twiml_fail(deep, err, sizeof err), 12100);
    free(deep);
}

static void test_verb_cap(void **state)
{
    (void)state;
    char err[256];
    twiml_limits lim;
    twiml_limits_default(&lim);
    lim.max_verbs = 3;
    const char *ok = "<Response><Gather><Say>a</Say></Gather><Hangup/></Response>";
    twiml_doc *d = twiml_parse(ok, strlen(ok), &lim, NULL, NULL, 0);
    assert_non_null(d);
    twiml_doc_destroy(d);
    /* Nested verbs count too. */
    const char *over = "<Response><Gather><Say>a</Say><Pause/></Gather><Hangup/></Response>";
    assert_int_equal(ut_twiml_fail_lim(over, strlen(over), &lim, err, sizeof err), 12100);
    ut_assert_contains(err, "more than 3 verbs");
}

static void test_error_buffer(void **state)
{
    (void)state;
    /* A tiny buffer gets a NUL-terminated, valid prefix; NULL outputs are fine. */
    char err[8];
    memset(err, 'x', sizeof err);
    int code = 0;
    assert_null(twiml_parse("<Reply/>", 8, NULL, &code, err, sizeof err));
    assert_int_equal(code, 12102);
    assert_int_equal(strlen(err), 7);
    assert_null(twiml_parse("<Reply/>", 8, NULL, NULL, NULL, 0));

    /* A multi-byte character cut by truncation must not leave half a
     * sequence behind. */
    char e2[64];
    const char *xml = "<R\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9/>";
    for (size_t len = 20; len < 40; len++) {
        assert_null(twiml_parse(xml, strlen(xml), NULL, &code, e2, len));
        for (const unsigned char *q = (const unsigned char *)e2; *q; q++)
            if (*q >= 0x80) {
                assert_true(q[0] == 0xC3 && q[1] == 0xA9);
                q++;
            }
    }
}

static void test_method_name(void **state)
{
    (void)state;
    assert_string_equal(twiml_method_name(TM_POST), "POST");
    assert_string_equal(twiml_method_name(TM_GET), "GET");
}

static void test_namespaces_ignored(void **state)
{
    (void)state;
    twiml_doc *d = ut_twiml_ok("<Response xmlns=\"urn:example\" xmlns:t=\"urn:t\">"
                            "<Say>hi</Say><t:Hangup/></Response>");
    assert_int_equal(d->n_verbs, 2);
    assert_int_equal(d->verbs[1].kind, TV_HANGUP);
    assert_int_equal(d->n_warnings, 0);
    twiml_doc_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_case_sensitive),
        cmocka_unit_test(test_unknown_attributes),
        cmocka_unit_test(test_bad_values_use_defaults),
        cmocka_unit_test(test_int_cap),
        cmocka_unit_test(test_long_values_are_clipped),
        cmocka_unit_test(test_warning_cap),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_encoding),
        cmocka_unit_test(test_wrong_root),
        cmocka_unit_test(test_doctype_refused),
        cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_depth_cap),
        cmocka_unit_test(test_verb_cap),
        cmocka_unit_test(test_error_buffer),
        cmocka_unit_test(test_method_name),
        cmocka_unit_test(test_namespaces_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
