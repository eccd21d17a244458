/* Unit tests for the executor's pure helpers (src/engine/exec_int.h): how
 * consecutive <Say> texts merge into /voice texts (separators, loops, the
 * per-request cap and the cut at a space or a UTF-8 boundary), URL
 * resolution against the document's URL, and the media type of an answer.
 * Documents are parsed by the real twiml_parse. Verb sequencing with a call
 * (playbacks, <Gather>, <Record>) needs the engine and is covered by
 * tests/integration/test_twiml.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../../src/engine/exec_int.h"

static twiml_doc *parse(const char *xml)
{
    twiml_limits lim;
    int code = 0;
    char err[256];
    twiml_limits_default(&lim);
    twiml_doc *d = twiml_parse(xml, strlen(xml), &lim, &code, err, sizeof err);
    assert_non_null(d);
    return d;
}

static cursor cursor_of(const twiml_doc *d)
{
    cursor c = {.verbs = d->verbs, .n = d->n_verbs};
    return c;
}

/* The next merged text of cur, as a heap string ("" when nothing to say). */
static char *merge(cursor *cur)
{
    buf text;
    buf_init(&text, EXEC_MAX_VOICE_TEXT);
    assert_true(exec_say_merge(NULL, cur, &text));
    char *s = strdup(buf_str(&text));
    buf_fini(&text);
    assert_non_null(s);
    return s;
}

static void test_say_merge_consecutive(void **state)
{
    (void)state;
    twiml_doc *d = parse("<Response><Say>Hello</Say><Say>world!</Say><Say>Bye</Say>"
                         "<Pause/><Say>After</Say></Response>");
    cursor cur = cursor_of(d);
    char *s = merge(&cur);
    /* ". " joins, a space after punctuation; the <Pause> stops the merge. */
    assert_string_equal(s, "Hello. world! Bye");
    assert_int_equal(cur.pc, 3);
    free(s);
    s = merge(&cur);                 /* at a non-Say verb: nothing */
    assert_string_equal(s, "");
    assert_int_equal(cur.pc, 3);
    free(s);
    cur.pc++;
    s = merge(&cur);
    assert_string_equal(s, "After");
    assert_int_equal(cur.pc, 5);
    free(s);
    twiml_doc_destroy(d);
}

static void test_say_merge_loops_and_empty(void **state)
{
    (void)state;
    twiml_doc *d = parse("<Response><Say loop=\"3\">Hi</Say><Say></Say><Say>Ho.</Say>"
                         "<Say loop=\"2\">Go</Say></Response>");
    cursor cur = cursor_of(d);
    char *s = merge(&cur);
    assert_string_equal(s, "Hi. Hi. Hi. Ho. Go. Go");
    assert_int_equal(cur.pc, 4);
    free(s);
    twiml_doc_destroy(d);
}

/* A text longer than one /voice is cut after the last space that fits; the
 * rest goes in the next text, without its leading spaces. */
static void test_say_merge_long_text_is_cut(void **state)
{
    (void)state;
    size_t words = EXEC_MAX_VOICE_TEXT / 5 + 10;   /* "abcd " each: over the cap */
    size_t n = words * 5;
    char *xml = malloc(n + 64);
    assert_non_null(xml);
    char *p = xml + sprintf(xml, "<Response><Say>Short</Say><Say>");
    for (size_t i = 0; i < words; i++)
        p += sprintf(p, "abcd ");
    sprintf(p - 1, "</Say></Response>");
    twiml_doc *d = parse(xml);
    free(xml);
    cursor cur = cursor_of(d);

    char *s = merge(&cur);          /* the long one does not fit after "Short" */
    assert_string_equal(s, "Short");
    assert_int_equal(cur.pc, 1);
    free(s);

    s = merge(&cur);
    size_t first = strlen(s);
    assert_true(first <= EXEC_MAX_VOICE_TEXT);
    assert_true(first > EXEC_MAX_VOICE_TEXT - 5);
    assert_int_equal(s[first - 1], 'd');         /* cut at a word boundary */
    assert_int_equal(cur.pc, 1);                 /* same verb, part of it sent */
    assert_true(cur.off > 0);
    free(s);

    s = merge(&cur);
    assert_int_equal(s[0], 'a');                 /* no leading space */
    assert_int_equal(first + 1 + strlen(s), words * 5 - 1);
    assert_int_equal(cur.pc, 2);
    free(s);
    twiml_doc_destroy(d);
}

static void test_cut_point(void **state)
{
    (void)state;
    assert_int_equal(exec_cut_point("ab cd ef", 6), 5);     /* the space before "ef" */
    assert_int_equal(exec_cut_point("abcdefgh", 4), 4);     /* no space: the cap */
    /* No space: never inside a UTF-8 sequence ("é" is 0xC3 0xA9). */
    assert_int_equal(exec_cut_point("ab\xc3\xa9z", 3), 2);
    assert_int_equal(exec_cut_point("abc\xc3\xa9z", 3), 3);
}

static void test_sentence_end(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 64);
    assert_true(exec_sentence_end(&b));             /* empty: nothing to separate */
    assert_int_equal(buf_puts(&b, "Hello"), BUF_OK);
    assert_false(exec_sentence_end(&b));
    for (const char *q = ".!?;:,"; *q; q++) {
        b.data[b.len - 1] = *q;
        assert_true(exec_sentence_end(&b));
    }
    buf_fini(&b);
}

static void test_url_resolve(void **state)
{
    (void)state;
    char *u;
    /* Absolute: kept byte for byte (it is what the signature covers). */
    u = exec_url_resolve("http://base.test/a/b.xml", "HTTPS://Example.COM/x?q=%7e");
    assert_string_equal(u, "HTTPS://Example.COM/x?q=%7e");
    free(u);
    u = exec_url_resolve(NULL, "http://h.test/next");
    assert_string_equal(u, "http://h.test/next");
    free(u);
    /* Relative: against the document. */
    u = exec_url_resolve("http://base.test/app/start.xml?x=1", "next.xml");
    assert_string_equal(u, "http://base.test/app/next.xml");
    free(u);
    u = exec_url_resolve("https://base.test/app/start.xml", "/root?y=2");
    assert_string_equal(u, "https://base.test/root?y=2");
    free(u);
    /* Nothing to resolve against, not http(s), or nothing at all. */
    assert_null(exec_url_resolve(NULL, "next.xml"));
    assert_null(exec_url_resolve("http://base.test/", "ftp://files.test/a"));
    assert_null(exec_url_resolve("ftp://files.test/dir/", "a.xml"));
    assert_null(exec_url_resolve("http://base.test/", ""));
    assert_null(exec_url_resolve("http://base.test/", NULL));
}

static void test_media_type(void **state)
{
    (void)state;
    char mt[16];
    exec_media_type("Text/XML; charset=utf-8", mt, sizeof mt);
    assert_string_equal(mt, "text/xml");
    exec_media_type("  audio/mpeg", mt, sizeof mt);
    assert_string_equal(mt, "audio/mpeg");
    exec_media_type("", mt, sizeof mt);
    assert_string_equal(mt, "");
    /* Longer than out: cut, still terminated. */
    exec_media_type("application/vnd.something-long", mt, sizeof mt);
    assert_int_equal(strlen(mt), sizeof mt - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_say_merge_consecutive),
        cmocka_unit_test(test_say_merge_loops_and_empty),
        cmocka_unit_test(test_say_merge_long_text_is_cut),
        cmocka_unit_test(test_cut_point),
        cmocka_unit_test(test_sentence_end),
        cmocka_unit_test(test_url_resolve),
        cmocka_unit_test(test_media_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
