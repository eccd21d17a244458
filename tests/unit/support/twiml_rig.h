/* twiml_rig — what the TwiML parser's tests share
 * (tests/unit/twiml/test_twiml*.c): parsing that must succeed or must fail,
 * and assertions on 12200 warnings and on message text.
 *
 * Part of the support library (Makefile: UNIT_SUPPORT). Threads: the calling
 * test's only. Failures fail the test through cmocka (with the document or
 * message quoted). Include after <cmocka.h>. */
#ifndef TWIGATE_TEST_TWIML_RIG_H
#define TWIGATE_TEST_TWIML_RIG_H

#include <stddef.h>

#include "twiml/twiml.h"

/* Parses xml with default limits; the document must parse. Caller owns it. */
twiml_doc *ut_twiml_ok(const char *xml);
/* Parses a document that must fail; returns the code, message in err. */
int ut_twiml_fail_lim(const char *xml, size_t len, const twiml_limits *lim,
                      char *err, size_t errlen);
/* ut_twiml_fail_lim of a C string with default limits. */
int ut_twiml_fail(const char *xml, char *err, size_t errlen);
/* Warning i of d exists, is a 12200, and its message contains needle. */
void ut_twiml_warning(const twiml_doc *d, size_t i, const char *needle);
/* s contains needle. */
void ut_assert_contains(const char *s, const char *needle);
/* Parses "<Response>" body "</Response>" that must give exactly one verb,
 * of kind. Caller owns the document. */
twiml_doc *ut_twiml_one_verb(const char *body, twiml_verb_kind kind);

#endif
