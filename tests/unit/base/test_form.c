/* Unit tests for form: strict decoding, repeated keys, caps, encoding as
 * Python's urlencode does it, and round trips. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/form.h"

static form_status parse_str(form *f, const char *s)
{
    return form_parse(f, s, strlen(s));
}

static void test_basic_pairs(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    assert_int_equal(parse_str(&f, "To=%2B14155551212&From=%2B15005550006&Url=http%3A%2F%2Fx.test%2Fa%3Fb%3Dc"), FORM_OK);
    assert_int_equal(f.n, 3);
    assert_string_equal(form_get(&f, "To"), "+14155551212");
    assert_string_equal(form_get(&f, "From"), "+15005550006");
    assert_string_equal(form_get(&f, "Url"), "http://x.test/a?b=c");
    assert_null(form_get(&f, "to"));   /* case-sensitive */
    assert_null(form_get(&f, "Missing"));
    form_fini(&f);
    form_fini(NULL);
}

static void test_plus_and_spaces(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    assert_int_equal(parse_str(&f, "Twiml=%3CSay%3EHello+world%3C%2FSay%3E&a+b=c%20d"), FORM_OK);
    assert_string_equal(form_get(&f, "Twiml"), "<Say>Hello world</Say>");
    assert_string_equal(form_get(&f, "a b"), "c d");
    form_fini(&f);
}

static void test_repeated_keys_in_order(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    assert_int_equal(parse_str(&f, "StatusCallbackEvent=initiated&X=1&StatusCallbackEvent=ringing"
                                   "&StatusCallbackEvent=completed"), FORM_OK);
    assert_int_equal(form_count(&f, "StatusCallbackEvent"), 3);
    assert_int_equal(form_count(&f, "X"), 1);
    assert_int_equal(form_count(&f, "Y"), 0);
    assert_string_equal(form_get(&f, "StatusCallbackEvent"), "initiated");
    assert_string_equal(form_get_nth(&f, "StatusCallbackEvent", 0), "initiated");
    assert_string_equal(form_get_nth(&f, "StatusCallbackEvent", 1), "ringing");
    assert_string_equal(form_get_nth(&f, "StatusCallbackEvent", 2), "completed");
    assert_null(form_get_nth(&f, "StatusCallbackEvent", 3));
    form_fini(&f);
}

static void test_empty_segments_and_missing_equals(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    assert_int_equal(parse_str(&f, "&&a=1&&flag&b=&=v&"), FORM_OK);
    assert_int_equal(f.n, 4);
    assert_string_equal(form_get(&f, "a"), "1");
    assert_string_equal(form_get(&f, "flag"), "");
    assert_string_equal(form_get(&f, "b"), "");
    assert_string_equal(form_get(&f, ""), "v");
    form_fini(&f);

    form_init(&f);
    assert_int_equal(form_parse(&f, "", 0), FORM_OK);
    assert_int_equal(f.n, 0);
    assert_int_equal(parse_str(&f, "a=b=c"), FORM_OK);   /* first '=' splits */
    assert_string_equal(form_get(&f, "a"), "b=c");
    form_fini(&f);
}

static void test_not_nul_terminated(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    const char body[] = "a=1&b=2XXXX";
    assert_int_equal(form_parse(&f, body, 7), FORM_OK);
    assert_string_equal(form_get(&f, "b"), "2");
    /* An escape cut by the length limit is an error, not a read past it. */
    assert_int_equal(form_parse(&f, "c=%41", 4), FORM_ERR_ENCODING);
    form_fini(&f);
}

static void test_bad_encodings(void **state)
{
    (void)state;
    const char *bad[] = { "a=%", "a=%4", "a=%G1", "a=%1G", "a=%00", "%00=x", "a%=1", "a=x%zz",
                          "a=b&c=%%" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        form f;
        form_init(&f);
        assert_int_equal(form_add(&f, "pre", "existing"), FORM_OK);
        if (parse_str(&f, bad[i]) != FORM_ERR_ENCODING)
            fail_msg("accepted '%s'", bad[i]);
        /* All-or-nothing: pairs parsed before the error are rolled back. */
        assert_int_equal(f.n, 1);
        assert_string_equal(form_get(&f, "pre"), "existing");
        form_fini(&f);
    }
    /* A raw NUL inside the body. */
    form f;
    form_init(&f);
    assert_int_equal(form_parse(&f, "a=x\0y", 5), FORM_ERR_ENCODING);
    assert_int_equal(f.n, 0);
    form_fini(&f);
}

static void test_hex_case_and_utf8(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    assert_int_equal(parse_str(&f, "n=%c3%A9t%C3%a9"), FORM_OK);
    assert_string_equal(form_get(&f, "n"), "\xc3\xa9t\xc3\xa9");
    form_fini(&f);
}

static void test_too_many_pairs(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 1 << 20);
    for (int i = 0; i < FORM_MAX_PAIRS; i++)
        assert_int_equal(buf_printf(&b, "%sk%d=v", i ? "&" : "", i), BUF_OK);
    form f;
    form_init(&f);
    assert_int_equal(form_parse(&f, b.data, b.len), FORM_OK);   /* exactly at the cap */
    assert_int_equal(f.n, FORM_MAX_PAIRS);
    assert_int_equal(form_add(&f, "one", "more"), FORM_ERR_TOO_MANY);
    form_fini(&f);

    assert_int_equal(buf_puts(&b, "&last=1"), BUF_OK);
    form_init(&f);
    assert_int_equal(form_parse(&f, b.data, b.len), FORM_ERR_TOO_MANY);
    assert_int_equal(f.n, 0);
    form_fini(&f);
    buf_fini(&b);
}

static void test_too_long_value(void **state)
{
    (void)state;
    size_t n = FORM_MAX_VALUE_LEN;
    char *s = malloc(n + 4);
    assert_non_null(s);
    memcpy(s, "v=", 2);
    memset(s + 2, 'x', n);
    s[n + 2] = '\0';
    form f;
    form_init(&f);
    assert_int_equal(form_parse(&f, s, n + 2), FORM_OK);   /* exactly the cap */
    assert_int_equal(strlen(form_get(&f, "v")), n);
    form_fini(&f);
    s[n + 2] = 'x';
    s[n + 3] = '\0';
    form_init(&f);
    assert_int_equal(form_parse(&f, s, n + 3), FORM_ERR_TOO_LONG);
    assert_int_equal(form_add(&f, "k", s + 2), FORM_ERR_TOO_LONG);
    assert_int_equal(form_add(&f, s + 2, "v"), FORM_ERR_TOO_LONG);
    assert_int_equal(f.n, 0);
    form_fini(&f);
    /* The cap applies to the decoded length: 65536 escapes of 3 chars fit. */
    size_t m = 2 + 3 * (size_t)FORM_MAX_VALUE_LEN;
    char *e = malloc(m + 1);
    assert_non_null(e);
    memcpy(e, "v=", 2);
    for (size_t i = 0; i < FORM_MAX_VALUE_LEN; i++)
        memcpy(e + 2 + 3 * i, "%41", 3);
    form_init(&f);
    assert_int_equal(form_parse(&f, e, m), FORM_OK);
    assert_int_equal(strlen(form_get(&f, "v")), FORM_MAX_VALUE_LEN);
    form_fini(&f);
    free(e);
    free(s);
}

static void test_escape_whatwg_set(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 4096);
    /* Expected strings are what Python's urllib.parse.urlencode produces. */
    assert_int_equal(form_escape(&b, "AZaz09*-._"), BUF_OK);
    assert_string_equal(buf_str(&b), "AZaz09*-._");
    buf_reset(&b);
    assert_int_equal(form_escape(&b, "a b+c&d=e/f~g'h"), BUF_OK);
    assert_string_equal(buf_str(&b), "a+b%2Bc%26d%3De%2Ff%7Eg%27h");
    buf_reset(&b);
    assert_int_equal(form_escape(&b, "+1 (415) 555-1212"), BUF_OK);
    assert_string_equal(buf_str(&b), "%2B1+%28415%29+555-1212");
    buf_reset(&b);
    assert_int_equal(form_escape(&b, "\xc3\xa9\n\x7f"), BUF_OK);
    assert_string_equal(buf_str(&b), "%C3%A9%0A%7F");
    buf_reset(&b);
    assert_int_equal(form_escape(&b, ""), BUF_OK);
    assert_string_equal(buf_str(&b), "");
    buf_fini(&b);
}

static void test_escape_cap_leaves_nothing_half_done(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_puts(&b, "x="), BUF_OK);
    assert_int_equal(form_escape(&b, "abc&&&"), BUF_TOO_BIG);   /* needs 3 + 9 */
    assert_string_equal(buf_str(&b), "x=");
    buf_fini(&b);
}

static void test_encode_order_and_round_trip(void **state)
{
    (void)state;
    form f, g;
    form_init(&f);
    form_init(&g);
    assert_int_equal(form_add(&f, "CallSid", "CA0123"), FORM_OK);
    assert_int_equal(form_add(&f, "Caller Name", "Ann & Bob = 100%"), FORM_OK);
    assert_int_equal(form_add(&f, "Empty", ""), FORM_OK);
    assert_int_equal(form_add(&f, "CallSid", "second"), FORM_OK);
    buf b;
    buf_init(&b, 4096);
    assert_int_equal(form_encode(&f, &b), BUF_OK);
    assert_string_equal(buf_str(&b),
                        "CallSid=CA0123&Caller+Name=Ann+%26+Bob+%3D+100%25&Empty=&CallSid=second");
    assert_int_equal(form_parse(&g, b.data, b.len), FORM_OK);
    assert_int_equal(g.n, f.n);
    for (size_t i = 0; i < f.n; i++) {
        assert_string_equal(g.pairs[i].key, f.pairs[i].key);
        assert_string_equal(g.pairs[i].value, f.pairs[i].value);
    }
    /* form_encode appends; an empty form appends nothing. */
    form empty;
    form_init(&empty);
    size_t before = b.len;
    assert_int_equal(form_encode(&empty, &b), BUF_OK);
    assert_int_equal(b.len, before);
    form_fini(&empty);
    /* A too-small buffer is left as it was. */
    buf small;
    buf_init(&small, 10);
    assert_int_equal(buf_puts(&small, "q?"), BUF_OK);
    assert_int_equal(form_encode(&f, &small), BUF_TOO_BIG);
    assert_string_equal(buf_str(&small), "q?");
    buf_fini(&small);
    buf_fini(&b);
    form_fini(&f);
    form_fini(&g);
}

static void test_round_trip_every_byte(void **state)
{
    (void)state;
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    form f, g;
    form_init(&f);
    form_init(&g);
    assert_int_equal(form_add(&f, all, all), FORM_OK);
    buf b;
    buf_init(&b, 4096);
    assert_int_equal(form_encode(&f, &b), BUF_OK);
    assert_int_equal(form_parse(&g, b.data, b.len), FORM_OK);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.pairs[0].key, all);
    assert_string_equal(g.pairs[0].value, all);
    buf_fini(&b);
    form_fini(&f);
    form_fini(&g);
}

static void test_unescape(void **state)
{
    (void)state;
    char *s = form_unescape("a+b%20c", 7, true);
    assert_string_equal(s, "a b c");
    free(s);
    s = form_unescape("a+b%20c", 7, false);
    assert_string_equal(s, "a+b c");
    free(s);
    s = form_unescape("abc%41", 3, true);   /* length limits the input */
    assert_non_null(s);
    assert_string_equal(s, "abc");
    free(s);
    assert_null(form_unescape("abc%41", 4, true));   /* "%" cut off */
    assert_null(form_unescape("abc%41", 5, true));   /* "%4" cut off */
    assert_null(form_unescape("%00", 3, true));
    assert_null(form_unescape("%xy", 3, false));
    s = form_unescape("", 0, true);
    assert_string_equal(s, "");
    free(s);
}

/* Strings live in the form's chunks: many pairs across chunks, values of
 * every size (small ones, and large ones that get a chunk of their own
 * between small ones), a replaced value, and a failed parse after all of
 * them leave every earlier pointer intact. */
static void test_strings_stay_put(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    char key[32], *big = malloc(5001), *mid = malloc(700);
    const char *seen[200];
    memset(big, 'b', 5000);
    big[5000] = '\0';
    memset(mid, 'm', 699);
    mid[699] = '\0';
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "Key%03d", i);
        const char *v = i % 50 == 7 ? big : i % 30 == 3 ? mid : key;
        assert_int_equal(form_add(&f, key, v), FORM_OK);
        seen[i] = f.pairs[i].value;
    }
    assert_int_equal(form_set_value(&f, 10, "replaced"), FORM_OK);
    assert_string_equal(form_get(&f, "Key010"), "replaced");
    assert_string_equal(seen[10], "Key010");   /* the old value is still readable */
    assert_int_equal(form_set_value(&f, 200, "x"), FORM_ERR_TOO_MANY);
    assert_int_equal(parse_str(&f, "A=1&B=%ZZ"), FORM_ERR_ENCODING);
    assert_int_equal(f.n, 200);
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "Key%03d", i);
        assert_string_equal(f.pairs[i].key, key);
        if (i == 10) continue;
        assert_ptr_equal(f.pairs[i].value, seen[i]);
        assert_string_equal(seen[i], i % 50 == 7 ? big : i % 30 == 3 ? mid : key);
    }
    form_fini(&f);
    assert_int_equal(f.n, 0);
    assert_null(f.chunks);
    /* A fini'd form is empty and can be used again. */
    assert_int_equal(parse_str(&f, "x=%41"), FORM_OK);
    assert_string_equal(form_get(&f, "x"), "A");
    form_fini(&f);
    free(big);
    free(mid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_pairs),
        cmocka_unit_test(test_plus_and_spaces),
        cmocka_unit_test(test_repeated_keys_in_order),
        cmocka_unit_test(test_empty_segments_and_missing_equals),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_bad_encodings),
        cmocka_unit_test(test_hex_case_and_utf8),
        cmocka_unit_test(test_too_many_pairs),
        cmocka_unit_test(test_too_long_value),
        cmocka_unit_test(test_escape_whatwg_set),
        cmocka_unit_test(test_escape_cap_leaves_nothing_half_done),
        cmocka_unit_test(test_encode_order_and_round_trip),
        cmocka_unit_test(test_round_trip_every_byte),
        cmocka_unit_test(test_unescape),
        cmocka_unit_test(test_strings_stay_put),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
