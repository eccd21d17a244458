/* Unit tests for jsonw: every output is json_dumps(j, JSON_COMPACT)'s,
 * byte for byte — on random trees of what the writer renders itself (every
 * ASCII byte, NUL included, in keys and values; integers to both limits;
 * nesting) and on what it hands back to jansson (reals, UTF-8, bad UTF-8,
 * deep nesting, a bare scalar). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/jsonw.h"

static void same(json_t *j)
{
    char *want = json_dumps(j, JSON_COMPACT);
    char *got = jsonw_dumps(j);
    if (!want) {
        assert_null(got);
    } else {
        assert_non_null(got);
        assert_string_equal(got, want);
    }
    free(want);
    free(got);
}

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static json_t *rnd_str(unsigned *s)
{
    char b[24];
    size_t n = rnd(s) % sizeof b;
    for (size_t i = 0; i < n; i++) b[i] = (char)(rnd(s) % 128);   /* every ASCII byte */
    return json_stringn(b, n);
}

static json_t *rnd_tree(unsigned *s, int depth)
{
    switch (depth > 4 ? rnd(s) % 5 : rnd(s) % 7) {
    case 0: return rnd_str(s);
    case 1: {
        json_int_t v = (json_int_t)rnd(s) * (rnd(s) % 2 ? -1 : 1) * (json_int_t)rnd(s) * 99991;
        if (rnd(s) % 8 == 0) v = rnd(s) % 2 ? INT64_MAX : INT64_MIN;
        return json_integer(v);
    }
    case 2: return json_true();
    case 3: return json_false();
    case 4: return json_null();
    case 5: {
        json_t *o = json_object();
        for (unsigned i = rnd(s) % 6; i > 0; i--) {
            json_t *k = rnd_str(s);
            json_object_setn_new(o, json_string_value(k), json_string_length(k), rnd_tree(s, depth + 1));
            json_decref(k);
        }
        return o;
    }
    default: {
        json_t *a = json_array();
        for (unsigned i = rnd(s) % 6; i > 0; i--) json_array_append_new(a, rnd_tree(s, depth + 1));
        return a;
    }
    }
}

static void test_random_trees_match_jansson(void **state)
{
    (void)state;
    unsigned s = 22;
    for (int i = 0; i < 3000; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "t", rnd_tree(&s, 0));
        same(o);
        json_decref(o);
    }
}

static void test_what_jansson_renders_itself(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:f, s:s, s:[i, f]}", "r", 0.1, "u", "caf\xc3\xa9", "a", 1, 1e300);
    same(o);
    json_decref(o);
    o = json_object();
    json_object_set_new_nocheck(o, "bad", json_stringn_nocheck("\xff", 1));   /* not UTF-8: NULL */
    same(o);
    json_decref(o);
    json_t *deep = json_array();
    for (int i = 0; i < JSONW_MAX_DEPTH + 8; i++) {
        json_t *up = json_array();
        json_array_append_new(up, deep);
        deep = up;
    }
    same(deep);
    json_decref(deep);
    json_t *scalar = json_integer(3);   /* not an object or array: NULL */
    same(scalar);
    json_decref(scalar);
    o = json_pack("{s:s, s:i, s:b, s:n, s:{}, s:[]}", "twiml", "<Response><Say voice=\"x\">a/b</Say></Response>",
                  "timeout", 60, "async_amd", 1, "x", "o", "a");
    same(o);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_trees_match_jansson),
        cmocka_unit_test(test_what_jansson_renders_itself),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
