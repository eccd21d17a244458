/* Unit tests for the executor's checkpoint state (src/engine/exec_ckpt.c):
 * encode then decode onto the same document gives back every field a resume
 * needs (cursors, <Gather> digits, waits, due time, the pending fetch), and
 * a state that does not fit the document is refused rather than run. The
 * resume itself needs the engine and Kaphila: tests/integration/test_resume.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../../src/engine/exec_int.h"

static const char DOC[] =
    "<Response><Say loop=\"2\">Hello there</Say>"
    "<Gather numDigits=\"3\" action=\"/a\"><Say>Press</Say><Play>http://x/y.wav</Play></Gather>"
    "<Pause length=\"3\"/><Record/></Response>";

static exec *with_doc(void)
{
    twiml_limits lim;
    int code = 0;
    char err[256];
    twiml_limits_default(&lim);
    twiml_doc *d = twiml_parse(DOC, strlen(DOC), &lim, &code, err, sizeof err);
    assert_non_null(d);
    exec *x = calloc(1, sizeof *x);
    assert_non_null(x);
    exec_doc_set(x, d, "http://h/doc", "POST", "xml", DOC, strlen(DOC));
    return x;
}

static void drop(exec *x)
{
    twiml_doc_destroy(x->doc);
    free(x->doc_url);
    free(x->doc_method);
    free(x->src);
    free(x->f_url);
    free(x->f_method);
    json_decref(x->f_extra);
    free(x);
}

static void test_round_trip_gather(void **state)
{
    (void)state;
    exec *a = with_doc(), *b = with_doc();
    a->mode = M_GATHER;
    a->wait = W_PLAYBACK;
    a->top.pc = 1;
    a->g = &a->doc->verbs[1].u.gather;
    a->prompt.verbs = a->g->children;
    a->prompt.n = a->g->n_children;
    a->prompt.pc = 2;
    a->pb_at.pc = 1;
    a->pb_at.iter = 0;
    a->pb_in_prompt = true;
    snprintf(a->digits, sizeof a->digits, "12");
    a->n_digits = 2;
    a->due_ms = 1700000000123LL;
    a->reported = REP_SAY_VOICE | REP_BARGE_IN;
    a->f_url = strdup("http://h/a");
    a->f_method = strdup("GET");
    a->f_extra = json_pack("[[s, s]]", "Digits", "12");
    json_t *st = exec_ckpt_encode(a, 4);
    assert_non_null(st);
    /* Through text, as stored. */
    char *txt = json_dumps(st, JSON_COMPACT);
    json_decref(st);
    st = json_loads(txt, 0, NULL);
    free(txt);
    int red = 0;
    assert_true(exec_ckpt_decode(b, st, &red));
    json_decref(st);
    assert_int_equal(red, 4);
    assert_int_equal(b->wait, W_PLAYBACK);
    assert_int_equal(b->mode, M_GATHER);
    assert_int_equal(b->top.pc, 1);
    assert_ptr_equal(b->g, &b->doc->verbs[1].u.gather);
    assert_ptr_equal(b->prompt.verbs, b->g->children);
    assert_int_equal(b->prompt.pc, 2);
    assert_true(b->pb_in_prompt);
    assert_int_equal(b->pb_at.pc, 1);
    assert_ptr_equal(b->pb_at.verbs, b->g->children);
    assert_string_equal(b->digits, "12");
    assert_int_equal(b->n_digits, 2);
    assert_int_equal(b->due_ms, 1700000000123LL);
    assert_int_equal(b->reported, REP_SAY_VOICE | REP_BARGE_IN);
    assert_string_equal(b->f_url, "http://h/a");
    assert_string_equal(b->f_method, "GET");
    assert_string_equal(json_string_value(json_array_get(json_array_get(b->f_extra, 0), 1)), "12");
    drop(a);
    drop(b);
}

static void test_round_trip_say_offset_and_pause(void **state)
{
    (void)state;
    exec *a = with_doc(), *b = with_doc();
    a->wait = W_PAUSE;
    a->top.pc = 0;
    a->top.iter = 1;
    a->top.off = 6;          /* inside "Hello there" */
    a->due_ms = 42;
    json_t *st = exec_ckpt_encode(a, 0);
    int red = -1;
    assert_true(exec_ckpt_decode(b, st, &red));
    json_decref(st);
    assert_int_equal(b->wait, W_PAUSE);
    assert_int_equal(b->mode, M_NONE);
    assert_int_equal(b->top.iter, 1);
    assert_int_equal(b->top.off, 6);
    assert_int_equal(b->due_ms, 42);
    assert_null(b->f_url);
    drop(a);
    drop(b);
}

/* States that do not fit the document: refused, never run. */
static void test_decode_refuses_what_does_not_fit(void **state)
{
    (void)state;
    exec *a = with_doc(), *b = with_doc();
    int red = 0;
    json_t *st;

    a->top.pc = 9;                       /* past the end */
    st = exec_ckpt_encode(a, 0);
    assert_false(exec_ckpt_decode(b, st, &red));
    json_decref(st);

    a->top.pc = 0;
    a->top.off = 99;                     /* beyond the <Say>'s text */
    st = exec_ckpt_encode(a, 0);
    assert_false(exec_ckpt_decode(b, st, &red));
    json_decref(st);

    a->top.off = 0;
    a->top.pc = 2;                       /* a <Pause>, not a <Gather> */
    a->mode = M_GATHER;
    st = exec_ckpt_encode(a, 0);
    assert_false(exec_ckpt_decode(b, st, &red));
    json_decref(st);

    a->mode = M_NONE;
    a->wait = W_FETCH;                   /* a fetch with no URL */
    st = exec_ckpt_encode(a, 0);
    assert_false(exec_ckpt_decode(b, st, &red));
    json_decref(st);

    st = json_pack("{s:i}", "v", 99);    /* another version */
    assert_false(exec_ckpt_decode(b, st, &red));
    json_decref(st);
    drop(a);
    drop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_gather),
        cmocka_unit_test(test_round_trip_say_offset_and_pause),
        cmocka_unit_test(test_decode_refuses_what_does_not_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
