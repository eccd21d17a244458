/* Unit tests for signature: the five vectors of contract §9.3 exactly, plus
 * byte-order sorting, repeated keys and empty params. Expected values beyond
 * §9.3 were computed with python3-twilio 7.7.1's RequestValidator, or (for
 * repeated keys, which 7.7.1 cannot express) with Python's hmac following
 * the ≥ 7.14 / node rule: distinct values sorted. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "base/signature.h"

static void vector_params(form *f)
{
    form_init(f);
    /* Insertion order deliberately unsorted: sorting is the module's job. */
    assert_int_equal(form_add(f, "To", "+18005551212"), FORM_OK);
    assert_int_equal(form_add(f, "Digits", "1234"), FORM_OK);
    assert_int_equal(form_add(f, "CallSid", "CA1234567890ABCDE"), FORM_OK);
    assert_int_equal(form_add(f, "From", "+14158675309"), FORM_OK);
    assert_int_equal(form_add(f, "Caller", "+14158675309"), FORM_OK);
}

static void check(const char *token, const char *url, const form *params, const char *want)
{
    char out[SIGNATURE_SIZE];
    assert_true(signature_compute(token, url, params, out));
    assert_string_equal(out, want);
}

static void test_contract_vectors(void **state)
{
    (void)state;
    form f;
    vector_params(&f);
    check("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &f, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    check("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", &f, "kvajT1Ptam85bY51eRf/AJRuM3w=");
    check("12345", "http://mycompany.com:80/myapp.php?foo=1&bar=2", &f, "0ZXoZLH/DfblKGATFgpif+LLRf4=");
    check("12345", "http://mycompany.com:1234/myapp.php?foo=1&bar=2", &f, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=");
    form_fini(&f);
}

static void test_body_sha256_vector(void **state)
{
    (void)state;
    const char body[] = "{\"property\": \"value\", \"boolean\": true}";
    char hex[65];
    signature_body_sha256(body, strlen(body), hex);
    assert_string_equal(hex, "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620");
    char url[256];
    snprintf(url, sizeof url, "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=%s", hex);
    check("12345", url, NULL, "a9nBmqA0ju/hNViExpshrM61xv4=");
}

static void test_body_sha256_empty(void **state)
{
    (void)state;
    char hex[65];
    signature_body_sha256("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_byte_order_sort(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    const char *kv[][2] = { { "b", "1" }, { "B", "2" }, { "a", "3" }, { "_", "4" },
                            { "\xc3\xa9", "5" }, { "z", "6" } };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        assert_int_equal(form_add(&f, kv[i][0], kv[i][1]), FORM_OK);
    check("tok", "https://e.test/x", &f, "FmE/FSWe7dew4FCwKonFnk8okgc=");
    form_fini(&f);
}

static void test_no_params(void **state)
{
    (void)state;
    form empty;
    form_init(&empty);
    check("tok", "https://e.test/x", NULL, "FNF52sOOqbygCgrj9N8/RamJ7AI=");
    check("tok", "https://e.test/x", &empty, "FNF52sOOqbygCgrj9N8/RamJ7AI=");
    form_fini(&empty);
}

static void test_decoded_values_with_port(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    assert_int_equal(form_parse(&f, "Caller+Name=Ann+%26+Bob&CallStatus=ringing", 42), FORM_OK);
    check("tok", "http://127.0.0.1:8080/voice?x=1", &f, "7jjv06PkpzYdhI5fMyFKWgSJZ9w=");
    form_fini(&f);
}

static void test_repeated_keys(void **state)
{
    (void)state;
    form f;
    form_init(&f);
    assert_int_equal(form_add(&f, "Z", "z"), FORM_OK);
    assert_int_equal(form_add(&f, "StatusCallbackEvent", "initiated"), FORM_OK);
    assert_int_equal(form_add(&f, "StatusCallbackEvent", "completed"), FORM_OK);
    assert_int_equal(form_add(&f, "StatusCallbackEvent", "answered"), FORM_OK);
    check("tok", "https://example.com/cb", &f, "3T9BH5nAv7kjBlqkYuELm6NyTvM=");
    /* A duplicate name=value pair is signed once, as the validators do. */
    assert_int_equal(form_add(&f, "StatusCallbackEvent", "completed"), FORM_OK);
    check("tok", "https://example.com/cb", &f, "3T9BH5nAv7kjBlqkYuELm6NyTvM=");
    form_fini(&f);
}

static void test_token_and_url_matter(void **state)
{
    (void)state;
    form f;
    vector_params(&f);
    char a[SIGNATURE_SIZE], b[SIGNATURE_SIZE];
    assert_true(signature_compute("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &f, a));
    assert_true(signature_compute("12346", "https://mycompany.com/myapp.php?foo=1&bar=2", &f, b));
    assert_string_not_equal(a, b);
    assert_true(signature_compute("12345", "https://mycompany.com/myapp.php?foo=1&bar=3", &f, b));
    assert_string_not_equal(a, b);
    assert_int_equal(strlen(a), SIGNATURE_SIZE - 1);
    assert_false(signature_compute(NULL, "https://x", &f, a));
    assert_string_equal(a, "");
    assert_false(signature_compute("k", NULL, &f, a));
    form_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contract_vectors),
        cmocka_unit_test(test_body_sha256_vector),
        cmocka_unit_test(test_body_sha256_empty),
        cmocka_unit_test(test_byte_order_sort),
        cmocka_unit_test(test_no_params),
        cmocka_unit_test(test_decoded_values_with_port),
        cmocka_unit_test(test_repeated_keys),
        cmocka_unit_test(test_token_and_url_matter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
