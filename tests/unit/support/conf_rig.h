/* conf_rig — what the config tests share (tests/unit/conf/test_config*.c):
 * fixed credentials, one valid account, loading a config from a string, and
 * capturing what a print function writes.
 *
 * Part of the support library (Makefile: UNIT_SUPPORT). Threads: the calling
 * test's only. Failures fail the test through cmocka. Include after
 * <cmocka.h>. */
#ifndef TWIGATE_TEST_CONF_RIG_H
#define TWIGATE_TEST_CONF_RIG_H

#include <stddef.h>
#include <stdio.h>

#include "conf/config.h"

#define SID1 "AC0123456789abcdef0123456789abcdef"
#define SID2 "ACfedcba9876543210fedcba9876543210"
#define SK1  "SK0123456789abcdef0123456789abcdef"
#define TOKEN1 "tok-1-very-secret-value"
#define KKEY1 "ak_live_secret_kkey"

/* One valid account, so config_finish can succeed. */
#define UT_CONF_ACCOUNT_OK            \
    "[account.main]\n"                \
    "sid = " SID1 "\n"                \
    "auth_token = " TOKEN1 "\n"       \
    "kaphila_key = " KKEY1 "\n"

/* config_load_string of text (named "t.conf"); its return value. */
int ut_conf_load(config *c, const char *text, char *err, size_t errlen);
/* A config loaded from text; the test fails if loading does. The caller
 * owns it (config_destroy). */
config *ut_conf_loaded(const char *text);
/* What print(c, f) writes, as a heap string the caller frees. */
char *ut_conf_capture(void (*print)(const config *, FILE *), const config *c);
/* config_print_help in print's shape (c is ignored). */
void ut_conf_print_help(const config *c, FILE *f);

#endif
