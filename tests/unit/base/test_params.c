/* Unit tests for params: enum and list words match in any case when the
 * meaning is unambiguous and are stored in the table's spelling; an enum
 * whose values differ only in case keeps the case significant. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enum_any_case_canonical),
        cmocka_unit_test(test_enum_bad_value_still_refused),
        cmocka_unit_test(test_list_any_case_deduplicated),
        cmocka_unit_test(test_ambiguous_enum_keeps_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
