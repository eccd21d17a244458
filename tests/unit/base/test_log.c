/* Unit tests for log: line format, context, levels, JSON mode, the line cap,
 * sanitising, per-thread context, and whole lines under concurrency.
 * stderr is pointed at a temp file with dup2 while a test logs. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/log.h"

#define LINE_CAP LOG_LINE_MAX

typedef struct capture { int saved; int fd; char path[64]; } capture;

static void cap_start(capture *c)
{
    snprintf(c->path, sizeof c->path, "/tmp/test_log.XXXXXX");
    c->fd = mkstemp(c->path);
    assert_true(c->fd >= 0);
    unlink(c->path);
    int fl = fcntl(c->fd, F_GETFL);
    assert_int_equal(fcntl(c->fd, F_SETFL, fl | O_APPEND), 0);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(c->fd, STDERR_FILENO) >= 0);
}

/* Restores stderr and returns everything logged (caller frees). */
static char *cap_end(capture *c)
{
    fflush(stderr);
    assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
    close(c->saved);
    off_t n = lseek(c->fd, 0, SEEK_END);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(pread(c->fd, s, (size_t)n, 0), n);
    s[n] = '\0';
    close(c->fd);
    return s;
}

static int setup(void **state)
{
    (void)state;
    log_setup(LOG_DEBUG, false);
    log_context_clear();
    return 0;
}

static void assert_matches(const char *s, const char *re)
{
    regex_t r;
    assert_int_equal(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0);
    int m = regexec(&r, s, 0, NULL, 0);
    regfree(&r);
    if (m != 0)
        fail_msg("'%s' does not match /%s/", s, re);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

#define TS "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

static void test_text_line(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    log_info("route", "created %s in %d ms", "CA1", 12);
    char *out = cap_end(&c);
    assert_matches(out, "^" TS " INFO \\[route\\] created CA1 in 12 ms\n$");
    free(out);
}

static void test_context(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    log_context("r-42", "AC0123456789abcdef0123456789abcdef", "CAfedcba9876543210fedcba9876543210");
    log_warn("engine", "answered");
    log_context("r-43", NULL, NULL);
    log_error("http", "oops");
    log_context_clear();
    log_debug("store", "plain");
    char *out = cap_end(&c);
    assert_int_equal(count_lines(out), 3);
    assert_matches(out, "^" TS " WARN \\[engine\\] req=r-42 AC0123456789abcdef0123456789abcdef "
                        "CAfedcba9876543210fedcba9876543210 answered\n");
    assert_matches(out, "\n" TS " ERROR \\[http\\] req=r-43 oops\n");
    assert_matches(out, "\n" TS " DEBUG \\[store\\] plain\n$");
    free(out);
}

static void test_context_sanitised(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    log_context("a b\nc=d", NULL, NULL);   /* e.g. a hostile request id */
    log_info("m", "x");
    log_context_clear();
    char *out = cap_end(&c);
    assert_matches(out, "^" TS " INFO \\[m\\] req=a\\?b\\?c=d x\n$");
    free(out);
}

static void test_levels(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    log_setup(LOG_WARN, false);
    log_debug("m", "no");
    log_info("m", "no");
    log_warn("m", "yes-warn");
    log_error("m", "yes-error");
    log_setup(LOG_DEBUG, false);
    char *out = cap_end(&c);
    assert_int_equal(count_lines(out), 2);
    assert_null(strstr(out, " no"));
    assert_non_null(strstr(out, "WARN [m] yes-warn\n"));
    assert_non_null(strstr(out, "ERROR [m] yes-error\n"));
    free(out);
}

static void test_level_parse(void **state)
{
    (void)state;
    log_level l = LOG_ERROR;
    assert_true(log_level_parse("debug", &l));
    assert_int_equal(l, LOG_DEBUG);
    assert_true(log_level_parse("INFO", &l));
    assert_int_equal(l, LOG_INFO);
    assert_true(log_level_parse("warn", &l));
    assert_int_equal(l, LOG_WARN);
    assert_true(log_level_parse("Warning", &l));
    assert_int_equal(l, LOG_WARN);
    assert_true(log_level_parse("error", &l));
    assert_int_equal(l, LOG_ERROR);
    l = LOG_INFO;
    assert_false(log_level_parse("verbose", &l));
    assert_false(log_level_parse("", &l));
    assert_false(log_level_parse(NULL, &l));
    assert_int_equal(l, LOG_INFO);
}

static void test_one_line_per_call(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    log_info("m", "two\nlines\r\tand\x1b[31m escape");
    char *out = cap_end(&c);
    assert_int_equal(count_lines(out), 1);
    assert_non_null(strstr(out, "[m] two lines  and [31m escape\n"));
    free(out);
}

static void test_text_truncation(void **state)
{
    (void)state;
    char *big = malloc(10001);
    assert_non_null(big);
    memset(big, 'x', 10000);
    big[10000] = '\0';
    capture c;
    cap_start(&c);
    log_context("req", "AC0123456789abcdef0123456789abcdef", NULL);
    log_info("m", "%s", big);
    log_context_clear();
    char *out = cap_end(&c);
    size_t n = strlen(out);
    assert_true(n <= LINE_CAP);
    assert_true(n > LINE_CAP - 8);   /* filled, not cut short */
    assert_int_equal(count_lines(out), 1);
    assert_string_equal(out + n - 4, "\xe2\x80\xa6\n");
    free(out);
    free(big);
}

static void test_truncation_keeps_utf8_whole(void **state)
{
    (void)state;
    /* 3-byte characters: any byte cap falls inside one at some offset. */
    for (size_t pad = 0; pad < 3; pad++) {
        char *big = malloc(3 * 2000 + pad + 1);
        assert_non_null(big);
        memset(big, 'a', pad);
        for (size_t i = 0; i < 2000; i++)
            memcpy(big + pad + 3 * i, "\xe2\x82\xac", 3);   /* € */
        big[pad + 6000] = '\0';
        for (int json = 0; json < 2; json++) {
            capture c;
            cap_start(&c);
            log_setup(LOG_DEBUG, json);
            log_info("m", "%s", big);
            log_setup(LOG_DEBUG, false);
            char *out = cap_end(&c);
            assert_true(strlen(out) <= LINE_CAP);
            /* jansson rejects invalid UTF-8, so this validates the whole line. */
            json_t *j = json_stringn(out, strlen(out));
            assert_non_null(j);
            json_decref(j);
            free(out);
        }
        free(big);
    }
}

static void test_json_mode(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    log_setup(LOG_DEBUG, true);
    log_context("r-1", NULL, "CA0123456789abcdef0123456789abcdef");
    log_info("webhook", "said \"hi\"\nthen \\ left");
    log_context_clear();
    log_setup(LOG_DEBUG, false);
    char *out = cap_end(&c);
    assert_int_equal(count_lines(out), 1);
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    if (j == NULL)
        fail_msg("not JSON: %s (%s)", out, err.text);
    assert_int_equal(json_object_size(j), 7);
    assert_matches(json_string_value(json_object_get(j, "ts")), "^" TS "$");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "INFO");
    assert_string_equal(json_string_value(json_object_get(j, "module")), "webhook");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "r-1");
    assert_true(json_is_null(json_object_get(j, "account_sid")));
    assert_string_equal(json_string_value(json_object_get(j, "call_sid")),
                        "CA0123456789abcdef0123456789abcdef");
    /* Control characters become spaces even in JSON: one grep-able line. */
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "said \"hi\" then \\ left");
    json_decref(j);
    free(out);
}

static void test_json_truncation_with_escapes(void **state)
{
    (void)state;
    /* Quotes double in size when escaped: the cap must hold after escaping. */
    char *big = malloc(5001);
    assert_non_null(big);
    memset(big, '"', 5000);
    big[5000] = '\0';
    capture c;
    cap_start(&c);
    log_setup(LOG_DEBUG, true);
    log_error("m", "%s", big);
    log_error("m", "bad utf8 \xff-\xc3!");
    log_setup(LOG_DEBUG, false);
    char *out = cap_end(&c);
    assert_int_equal(count_lines(out), 2);
    char *nl = strchr(out, '\n');
    assert_true((size_t)(nl - out) + 1 <= LINE_CAP);
    assert_true((size_t)(nl - out) + 1 > LINE_CAP - 16);
    *nl = '\0';
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    assert_non_null(j);
    const char *msg = json_string_value(json_object_get(j, "msg"));
    size_t ml = strlen(msg);
    assert_true(ml > 1000);
    assert_string_equal(msg + ml - 3, "\xe2\x80\xa6");
    json_decref(j);
    j = json_loads(nl + 1, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "bad utf8 ?-?!");
    json_decref(j);
    free(out);
    free(big);
}

static void test_errno_preserved(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    errno = ENOENT;
    log_info("m", "x");
    assert_int_equal(errno, ENOENT);
    free(cap_end(&c));
}

struct worker { char ch; bool ctx; };

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char line[3001];
    memset(line, w->ch, 3000);
    line[3000] = '\0';
    if (w->ctx)
        log_context("mine", NULL, NULL);
    for (int i = 0; i < 200; i++)
        log_info("t", "%s", line);
    return NULL;
}

static void test_threads_whole_lines_and_own_context(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    struct worker w[4] = { { 'a', true }, { 'b', false }, { 'c', true }, { 'd', false } };
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *out = cap_end(&c);
    assert_int_equal(count_lines(out), 800);
    for (char *line = out, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        char *msg = strstr(line, "[t] ");
        assert_non_null(msg);
        msg += 4;
        bool has_ctx = strncmp(msg, "req=mine ", 9) == 0;
        if (has_ctx)
            msg += 9;
        char ch = msg[0];
        assert_int_equal(strlen(msg), 3000);
        assert_int_equal(strspn(msg, (char[]){ ch, '\0' }), 3000);   /* not interleaved */
        assert_int_equal(has_ctx, ch == 'a' || ch == 'c');           /* context is per thread */
    }
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_text_line, setup),
        cmocka_unit_test_setup(test_context, setup),
        cmocka_unit_test_setup(test_context_sanitised, setup),
        cmocka_unit_test_setup(test_levels, setup),
        cmocka_unit_test_setup(test_level_parse, setup),
        cmocka_unit_test_setup(test_one_line_per_call, setup),
        cmocka_unit_test_setup(test_text_truncation, setup),
        cmocka_unit_test_setup(test_truncation_keeps_utf8_whole, setup),
        cmocka_unit_test_setup(test_json_mode, setup),
        cmocka_unit_test_setup(test_json_truncation_with_escapes, setup),
        cmocka_unit_test_setup(test_errno_preserved, setup),
        cmocka_unit_test_setup(test_threads_whole_lines_and_own_context, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
