/* Unit tests for params: enum and list words match in any case when the
 * meaning is unambiguous and are stored in the table's spelling; an enum
 * whose values differ only in case keeps the case significant. And each
 * type's rule: string length caps (the table's or the default), URLs,
 * methods, booleans, integer bounds, ignored parameters, empty values as
 * "not given", unknown names collected, the table's error code on a bad
 * value. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "base/params.h"

static const param_spec spec[] = {
    {"MachineDetection", "md", P_ENUM, 0, 0, "Enable|DetectMessageEnd", 21200},
    {"Event", "ev", P_LIST, 0, 0, "initiated|ringing|answered|completed", 21626},
    {"Method", "method", P_METHOD, 0, 0, NULL, 21200},
    /* Values that differ only in case: case decides. */
    {"Odd", "odd", P_ENUM, 0, 0, "abc|ABC|Xyz", 21200},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Parses body; returns the parsed object (NULL on error, err filled). */
static json_t *parse(const char *body, param_error *err)
{
    form f;
    json_t *out = json_object();
    form_init(&f);
    assert_int_equal(form_parse(&f, body, strlen(body)), FORM_OK);
    if (!params_parse(spec, &f, out, NULL, err)) {
        json_decref(out);
        out = NULL;
    }
    form_fini(&f);
    return out;
}

static void test_enum_any_case_canonical(void **state)
{
    (void)state;
    param_error err;
    const char *enable[] = {"enable", "ENABLE", "Enable", "eNaBlE"};
    for (size_t i = 0; i < sizeof enable / sizeof enable[0]; i++) {
        char body[64];
        snprintf(body, sizeof body, "MachineDetection=%s", enable[i]);
        json_t *o = parse(body, &err);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "md")), "Enable");
        json_decref(o);
    }
    json_t *o = parse("MachineDetection=detectmessageend&Method=post", &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "md")), "DetectMessageEnd");
    assert_string_equal(json_string_value(json_object_get(o, "method")), "POST");
    json_decref(o);
}

static void test_enum_bad_value_still_refused(void **state)
{
    (void)state;
    param_error err;
    assert_null(parse("MachineDetection=enabled", &err));
    assert_int_equal(err.code, 21200);
    assert_non_null(strstr(err.message, "'enabled'"));
}

static void test_list_any_case_deduplicated(void **state)
{
    (void)state;
    param_error err;
    json_t *o = parse("Event=Initiated+ringing&Event=RINGING&Event=Completed", &err);
    assert_non_null(o);
    json_t *ev = json_object_get(o, "ev");
    assert_int_equal(json_array_size(ev), 3);
    assert_string_equal(json_string_value(json_array_get(ev, 0)), "initiated");
    assert_string_equal(json_string_value(json_array_get(ev, 1)), "ringing");
    assert_string_equal(json_string_value(json_array_get(ev, 2)), "completed");
    json_decref(o);
    assert_null(parse("Event=answred", &err));
    assert_int_equal(err.code, 21626);
}

static void test_ambiguous_enum_keeps_case(void **state)
{
    (void)state;
    param_error err;
    json_t *o = parse("Odd=ABC", &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "odd")), "ABC");
    json_decref(o);
    o = parse("Odd=abc", &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "odd")), "abc");
    json_decref(o);
    assert_null(parse("Odd=Abc", &err));   /* abc or ABC? */
    o = parse("Odd=XYZ", &err);             /* only one way to read it */
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "odd")), "Xyz");
    json_decref(o);
}

/* A table with one parameter of each remaining type. */
static const param_spec typed[] = {
    {"Name", "name", P_STR, 0, 5, NULL, 21201},
    {"Text", "text", P_STR, 0, 0, NULL, 21202},
    {"Url", "url", P_URL, 0, 0, NULL, 21205},
    {"Flag", "flag", P_BOOL, 0, 0, NULL, 21203},
    {"Timeout", "timeout", P_INT, 5, 600, NULL, 21204},
    {"Legacy", "legacy", P_IGNORE, 0, 0, NULL, 21206},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static json_t *parse_typed(const char *body, json_t *unknown, param_error *err)
{
    form f;
    json_t *out = json_object();
    form_init(&f);
    assert_int_equal(form_parse(&f, body, strlen(body)), FORM_OK);
    if (!params_parse(typed, &f, out, unknown, err)) {
        json_decref(out);
        out = NULL;
    }
    form_fini(&f);
    return out;
}

static void test_string_caps(void **state)
{
    (void)state;
    param_error err;
    json_t *o = parse_typed("Name=abcde", NULL, &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "abcde");
    json_decref(o);
    assert_null(parse_typed("Name=abcdef", NULL, &err));
    assert_int_equal(err.code, 21201);
    assert_non_null(strstr(err.message, "at most 5"));
    /* max 0: the default cap, 4096 characters */
    char body[4200];
    int n = snprintf(body, sizeof body, "Text=");
    memset(body + n, 'x', 4096);
    body[n + 4096] = '\0';
    o = parse_typed(body, NULL, &err);
    assert_non_null(o);
    json_decref(o);
    body[n + 4096] = 'x';
    body[n + 4097] = '\0';
    assert_null(parse_typed(body, NULL, &err));
    assert_int_equal(err.code, 21202);
}

static void test_url_method_bool(void **state)
{
    (void)state;
    param_error err;
    json_t *o = parse_typed("Url=https%3A%2F%2Fexample.com%2Fa%23rc%3D2&Flag=True", NULL, &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "url")), "https://example.com/a#rc=2");
    assert_true(json_is_true(json_object_get(o, "flag")));
    json_decref(o);
    o = parse_typed("Flag=FALSE", NULL, &err);
    assert_non_null(o);
    assert_true(json_is_false(json_object_get(o, "flag")));
    json_decref(o);
    assert_null(parse_typed("Flag=yes", NULL, &err));
    assert_int_equal(err.code, 21203);
    const char *bad_urls[] = {"Url=example.com%2Fa", "Url=ftp%3A%2F%2Fexample.com%2F", "Url=http%3A%2F%2F"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        assert_null(parse_typed(bad_urls[i], NULL, &err));
        assert_int_equal(err.code, 21205);
    }
    o = parse("Method=get", &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "method")), "GET");
    json_decref(o);
    assert_null(parse("Method=PUT", &err));
    assert_int_equal(err.code, 21200);
}

static void test_int_bounds(void **state)
{
    (void)state;
    param_error err;
    json_t *o = parse_typed("Timeout=5", NULL, &err);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "timeout")), 5);
    json_decref(o);
    o = parse_typed("Timeout=600", NULL, &err);
    assert_non_null(o);
    json_decref(o);
    const char *bad[] = {"Timeout=4", "Timeout=601", "Timeout=12s", "Timeout=+", "Timeout=1e2",
                         "Timeout=99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(parse_typed(bad[i], NULL, &err));
        assert_int_equal(err.code, 21204);
        assert_non_null(strstr(err.message, "between 5 and 600"));
    }
}

static void test_empty_ignored_and_unknown(void **state)
{
    (void)state;
    param_error err;
    json_t *unknown = json_array();
    /* Empty means "not given" except for free text; ignored ones are kept
     * as strings; unknown names are collected, in order. */
    json_t *o = parse_typed("Url=&Timeout=&Flag=&Name=&Legacy=x&Foo=1&Bar=2", unknown, &err);
    assert_non_null(o);
    assert_null(json_object_get(o, "url"));
    assert_null(json_object_get(o, "timeout"));
    assert_null(json_object_get(o, "flag"));
    assert_string_equal(json_string_value(json_object_get(o, "name")), "");
    assert_string_equal(json_string_value(json_object_get(o, "legacy")), "x");
    assert_int_equal(json_array_size(unknown), 2);
    assert_string_equal(json_string_value(json_array_get(unknown, 0)), "Foo");
    assert_string_equal(json_string_value(json_array_get(unknown, 1)), "Bar");
    json_decref(o);
    json_decref(unknown);
    /* Names are case-sensitive, as Twilio's are. */
    o = parse_typed("timeout=1", NULL, &err);
    assert_non_null(o);
    assert_null(json_object_get(o, "timeout"));
    json_decref(o);
}

static void test_list_separators(void **state)
{
    (void)state;
    param_error err;
    json_t *o = parse("Event=initiated,ringing++answered%2C%2Ccompleted", &err);
    assert_non_null(o);
    assert_int_equal(json_array_size(json_object_get(o, "ev")), 4);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enum_any_case_canonical),
        cmocka_unit_test(test_enum_bad_value_still_refused),
        cmocka_unit_test(test_list_any_case_deduplicated),
        cmocka_unit_test(test_ambiguous_enum_keeps_case),
        cmocka_unit_test(test_string_caps),
        cmocka_unit_test(test_url_method_bool),
        cmocka_unit_test(test_int_bounds),
        cmocka_unit_test(test_empty_ignored_and_unknown),
        cmocka_unit_test(test_list_separators),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
