/* twiml_rig — see twiml_rig.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "twiml_rig.h"

#include <stdio.h>
#include <string.h>

twiml_doc *ut_twiml_ok(const char *xml)
{
    int code = -1;
    char err[512] = "";
    twiml_doc *d = twiml_parse(xml, strlen(xml), NULL, &code, err, sizeof err);
    if (d == NULL)
        fail_msg("parse failed (%d): %s\n--- for ---\n%s", code, err, xml);
    return d;
}

int ut_twiml_fail_lim(const char *xml, size_t len, const twiml_limits *lim,
                      char *err, size_t errlen)
{
    int code = -1;
    twiml_doc *d = twiml_parse(xml, len, lim, &code, err, errlen);
    if (d != NULL) {
        twiml_doc_destroy(d);
        fail_msg("parse unexpectedly succeeded:\n%.*s", (int)len, xml ? xml : "");
    }
    return code;
}

int ut_twiml_fail(const char *xml, char *err, size_t errlen)
{
    return ut_twiml_fail_lim(xml, strlen(xml), NULL, err, errlen);
}

void ut_twiml_warning(const twiml_doc *d, size_t i, const char *needle)
{
    assert_true(i < d->n_warnings);
    assert_int_equal(d->warnings[i].code, 12200);
    if (strstr(d->warnings[i].message, needle) == NULL)
        fail_msg("warning %zu is \"%s\", expected it to contain \"%s\"",
                 i, d->warnings[i].message, needle);
}

void ut_assert_contains(const char *s, const char *needle)
{
    if (strstr(s, needle) == NULL)
        fail_msg("\"%s\" does not contain \"%s\"", s, needle);
}

twiml_doc *ut_twiml_one_verb(const char *body, twiml_verb_kind kind)
{
    char xml[4096];
    snprintf(xml, sizeof xml, "<Response>%s</Response>", body);
    twiml_doc *d = ut_twiml_ok(xml);
    assert_int_equal(d->n_verbs, 1);
    assert_int_equal(d->verbs[0].kind, kind);
    return d;
}
