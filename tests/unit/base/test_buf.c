/* Unit tests for buf: growth, the hard cap, NUL termination, steal. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

static void test_empty_is_empty_string(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 100);
    assert_null(b.data);
    assert_string_equal(buf_str(&b), "");
    assert_int_equal(b.len, 0);
    buf_fini(&b);
    buf_fini(NULL);   /* tolerated, like every destroy */
}

static void test_append_grows_and_terminates(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_append(&b, "abc", 3), BUF_OK);
    assert_int_equal(b.len, 3000);
    assert_true(b.alloc > 3000);
    assert_int_equal(b.data[3000], '\0');
    assert_int_equal(strlen(buf_str(&b)), 3000);
    assert_memory_equal(b.data + 2997, "abc", 3);
    buf_fini(&b);
    assert_null(b.data);
}

static void test_cap_is_exact(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_puts(&b, "0123456789"), BUF_OK);   /* exactly cap */
    assert_int_equal(b.len, 10);
    assert_true(b.alloc <= 11);   /* never allocates beyond cap + NUL */
    assert_int_equal(buf_append(&b, "x", 1), BUF_TOO_BIG);
    assert_string_equal(buf_str(&b), "0123456789");   /* unchanged on failure */
    assert_int_equal(buf_append(&b, "", 0), BUF_OK);
    buf_fini(&b);
}

static void test_cap_refuses_whole_append(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_puts(&b, "abcd"), BUF_OK);
    assert_int_equal(buf_puts(&b, "efghi"), BUF_TOO_BIG);   /* 9 > 8: nothing appended */
    assert_string_equal(buf_str(&b), "abcd");
    assert_int_equal(buf_puts(&b, "efgh"), BUF_OK);
    assert_string_equal(buf_str(&b), "abcdefgh");
    buf_fini(&b);
}

static void test_zero_cap(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 0);
    assert_int_equal(buf_puts(&b, "a"), BUF_TOO_BIG);
    assert_int_equal(buf_puts(&b, ""), BUF_OK);
    assert_string_equal(buf_str(&b), "");
    buf_fini(&b);
}

static void test_printf(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 64);
    assert_int_equal(buf_printf(&b, "%s=%d", "n", 42), BUF_OK);
    assert_int_equal(buf_printf(&b, "&%05.1f", 3.14159), BUF_OK);
    assert_string_equal(buf_str(&b), "n=42&003.1");
    assert_int_equal(b.len, strlen("n=42&003.1"));
    /* Output that would exceed the cap is refused whole. */
    assert_int_equal(buf_printf(&b, "%60s", "x"), BUF_TOO_BIG);
    assert_string_equal(buf_str(&b), "n=42&003.1");
    buf_fini(&b);
}

static void test_printf_large(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 100000);
    assert_int_equal(buf_printf(&b, "%5000d|", 7), BUF_OK);
    assert_int_equal(b.len, 5001);
    assert_int_equal(b.data[4999], '7');
    assert_int_equal(b.data[5000], '|');
    buf_fini(&b);
}

static void test_reset_keeps_memory(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 100);
    assert_int_equal(buf_puts(&b, "hello"), BUF_OK);
    char *before = b.data;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, before);
    assert_string_equal(buf_str(&b), "");
    assert_int_equal(buf_puts(&b, "bye"), BUF_OK);
    assert_string_equal(buf_str(&b), "bye");
    buf_fini(&b);
}

static void test_steal(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 100);
    assert_int_equal(buf_puts(&b, "owned"), BUF_OK);
    char *s = buf_steal(&b);
    assert_string_equal(s, "owned");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
    /* Stealing an empty buffer still yields a freeable string. */
    s = buf_steal(&b);
    assert_non_null(s);
    assert_string_equal(s, "");
    free(s);
    /* The buffer is reusable after a steal, with the same cap. */
    assert_int_equal(buf_puts(&b, "again"), BUF_OK);
    assert_int_equal(b.cap, 100);
    buf_fini(&b);
}

static void test_binary_data(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 16);
    const char bin[4] = { 'a', '\0', 'b', '\0' };
    assert_int_equal(buf_append(&b, bin, sizeof bin), BUF_OK);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, bin, 4);
    assert_int_equal(b.data[4], '\0');
    buf_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_is_empty_string),
        cmocka_unit_test(test_append_grows_and_terminates),
        cmocka_unit_test(test_cap_is_exact),
        cmocka_unit_test(test_cap_refuses_whole_append),
        cmocka_unit_test(test_zero_cap),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_printf_large),
        cmocka_unit_test(test_reset_keeps_memory),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_binary_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
