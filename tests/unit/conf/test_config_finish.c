/* Unit tests for config, using what was read: printing without secrets (and
 * reading the print back), --help, config_finish's errors and derived
 * values, and reload compatibility. Reading (defaults, format, errors,
 * overrides, the sample file) is test_config.c's; the shared fixtures are
 * support/conf_rig.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "sim/sim.h"
#include "../support/conf_rig.h"

/* ---- printing --------------------------------------------------------- */

static void test_print_masks_secrets_and_round_trips(void **state)
{
    (void)state;
    config *c = ut_conf_loaded(
        "[metrics]\ntoken = metrics-secret-123\n"
        "[sim]\nadmin_token = admin-secret-456\n"
        "[webhook]\nallow = \"with \\\"quotes\\\" and \\\\ # hash\"\n"
        "[account.main]\nsid = " SID1 "\nauth_token = " TOKEN1 "\nkaphila_key = " KKEY1 "\n"
        "api_key_sid = " SK1 "\napi_key_secret = apikey-secret-789\n"
        "created = 2024-01-31T12:00:00.250Z\nmedia_auth = yes\nkaphila_voice = en-US-Neural2-C\n");
    char err[256];
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_true(c->accounts[0].media_auth);
    assert_string_equal(c->accounts[0].kaphila_voice, "en-US-Neural2-C");
    char *out = ut_conf_capture(config_print, c);
    assert_non_null(strstr(out, "media_auth = true"));
    assert_non_null(strstr(out, "kaphila_voice = \"en-US-Neural2-C\""));
    assert_null(strstr(out, "metrics-secret-123"));
    assert_null(strstr(out, "admin-secret-456"));
    assert_null(strstr(out, TOKEN1));
    assert_null(strstr(out, KKEY1));
    assert_null(strstr(out, "apikey-secret-789"));
    assert_non_null(strstr(out, "token = \"********\""));
    assert_non_null(strstr(out, "auth_token = \"********\""));
    assert_non_null(strstr(out, "sid = \"" SID1 "\""));
    assert_non_null(strstr(out, "created = 2024-01-31T12:00:00.250Z"));
    assert_non_null(strstr(out, "[account.main]"));

    /* The output is a loadable file with the same (non-secret) values. */
    config *back = config_create();
    if (ut_conf_load(back, out, err, sizeof err) != 0)
        fail_msg("printed config does not load: %s\n%s", err, out);
    assert_string_equal(back->webhook_allow, c->webhook_allow);
    assert_string_equal(back->public_url, c->public_url);
    assert_int_equal(back->listen_port, c->listen_port);
    assert_string_equal(back->sim_outcomes, c->sim_outcomes);
    assert_string_equal(back->accounts[0].sid, SID1);
    assert_string_equal(back->accounts[0].api_key_sid, SK1);
    assert_string_equal(back->accounts[0].friendly_name, "main");
    assert_int_equal(back->accounts[0].created_at, c->accounts[0].created_at);
    assert_true(back->accounts[0].media_auth);
    assert_string_equal(back->accounts[0].kaphila_voice, "en-US-Neural2-C");
    assert_string_equal(back->accounts[0].auth_token, "********");
    char *again = ut_conf_capture(config_print, back);
    assert_string_equal(again, out);
    free(again);
    config_destroy(back);
    free(out);
    config_destroy(c);
}

static void test_help_lists_every_key(void **state)
{
    (void)state;
    char *help = ut_conf_capture(ut_conf_print_help, NULL);
    for (size_t i = 0; i < config_key_count(); i++) {
        char needle[160];
        snprintf(needle, sizeof needle, "  %s  ", config_key_name(i));
        if (strstr(help, needle) == NULL)
            fail_msg("help lacks %s", config_key_name(i));
    }
    assert_non_null(strstr(help, "  listen.port  int  default 8080  range 0..65535\n"));
    assert_non_null(strstr(help, "  log.level  string  default \"info\"  [reload]\n"));
    assert_non_null(strstr(help, "  metrics.token  secret  default \"\"  [reload]\n"));
    free(help);
}

/* ---- config_finish ---------------------------------------------------- */

static void expect_finish_error(const char *text, const char *want)
{
    config *c = ut_conf_loaded(text);
    char err[512] = "";
    assert_int_equal(config_finish(c, err, sizeof err), -1);
    if (strcmp(err, want) != 0)
        fail_msg("\n got  %s\n want %s", err, want);
    config_destroy(c);
}

static void test_finish_errors(void **state)
{
    (void)state;
    expect_finish_error("", "no accounts: define at least one [account.<name>] with sid, "
                            "auth_token and kaphila_key");
    expect_finish_error("[account.a]\nauth_token = t\nkaphila_key = k\n",
                        "account.a.sid: missing (required for every account)");
    expect_finish_error("[account.a]\nsid = " SID1 "\nauth_token = \"\"\nkaphila_key = k\n",
                        "account.a.auth_token: missing (required for every account)");
    expect_finish_error("[account.a]\nsid = " SID1 "\nauth_token = t\n",
                        "account.a.kaphila_key: missing (required for every account)");
    expect_finish_error("[account.a]\nsid = " SID1 "\nauth_token = t\nkaphila_key = k\n"
                        "api_key_sid = " SK1 "\n",
                        "account.a.api_key_secret: required with api_key_sid");
    expect_finish_error("[account.a]\nsid = " SID1 "\nauth_token = t\nkaphila_key = k\n"
                        "api_key_secret = s\n",
                        "account.a.api_key_sid: required with api_key_secret");
    /* Same SID up to case is the same account. */
    expect_finish_error("[account.a]\nsid = " SID1 "\nauth_token = t\nkaphila_key = k\n"
                        "[account.b]\nsid = AC0123456789ABCDEF0123456789ABCDEF\nauth_token = t\nkaphila_key = k\n",
                        "account.b.sid: same SID as account.a.sid");
    expect_finish_error("[account.a]\nsid = " SID1 "\nauth_token = t\nkaphila_key = k\n"
                        "api_key_sid = " SK1 "\napi_key_secret = s\n"
                        "[account.b]\nsid = " SID2 "\nauth_token = t\nkaphila_key = k\n"
                        "api_key_sid = " SK1 "\napi_key_secret = s\n",
                        "account.b.api_key_sid: same SID as account.a.api_key_sid");
    /* A lease that would run out between two renewals. */
    expect_finish_error("[cluster]\nlease_ms = 1000\nrenew_ms = 1000\n"
                        "[account.a]\nsid = " SID1 "\nauth_token = t\nkaphila_key = k\n",
                        "cluster.renew_ms: 1000 is not less than cluster.lease_ms (1000):"
                        " the lease would run out between renewals");
}

/* --print-config's finish: no account needed, every other check and derived
 * value as in config_finish. */
static void test_finish_print_needs_no_account(void **state)
{
    (void)state;
    char err[256] = "";
    config *c = ut_conf_loaded("");
    assert_int_equal(config_finish_print(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://127.0.0.1:8080");
    assert_int_equal((int)c->n_accounts, 0);
    assert_false(c->log_access);
    config_destroy(c);
    /* An account that is there is still checked. */
    c = ut_conf_loaded("[account.a]\nauth_token = t\nkaphila_key = k\n");
    assert_int_equal(config_finish_print(c, err, sizeof err), -1);
    assert_string_equal(err, "account.a.sid: missing (required for every account)");
    config_destroy(c);
}

static void test_finish_derived_values(void **state)
{
    (void)state;
    char err[256];
    config *c = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://127.0.0.1:8080");
    assert_string_equal(c->accounts[0].friendly_name, "main");
    assert_int_equal(c->accounts[0].created_at, 0);
    /* Idempotent. */
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://127.0.0.1:8080");
    config_destroy(c);

    c = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    assert_int_equal(config_set(c, "listen.address", "0.0.0.0", err, sizeof err), 0);
    assert_int_equal(config_set(c, "listen.port", "9999", err, sizeof err), 0);
    assert_int_equal(config_set(c, "kaphila.url", "https://kaphila.example.com:3000/", err, sizeof err), 0);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://127.0.0.1:9999");
    assert_string_equal(c->kaphila_url, "https://kaphila.example.com:3000");
    config_destroy(c);

    c = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    assert_int_equal(config_set(c, "listen.address", "::", err, sizeof err), 0);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://[::1]:8080");
    config_destroy(c);

    c = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    assert_int_equal(config_set(c, "public_url", "https://tw.example.com/base/", err, sizeof err), 0);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "https://tw.example.com/base");
    config_destroy(c);

    /* Port 0: public_url waits for the bound port. */
    c = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    assert_int_equal(config_set(c, "listen.port", "0", err, sizeof err), 0);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "");
    assert_int_equal(config_bind_port(c, 43210, err, sizeof err), 0);
    assert_int_equal(c->listen_port, 43210);
    assert_string_equal(c->public_url, "http://127.0.0.1:43210");
    /* Once bound (or when a port was configured) it changes nothing. */
    assert_int_equal(config_bind_port(c, 1, err, sizeof err), 0);
    assert_int_equal(c->listen_port, 43210);
    config_destroy(c);

    c = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    assert_int_equal(config_set(c, "listen.port", "0", err, sizeof err), 0);
    assert_int_equal(config_set(c, "public_url", "https://fixed.example.com", err, sizeof err), 0);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_int_equal(config_bind_port(c, 5555, err, sizeof err), 0);
    assert_string_equal(c->public_url, "https://fixed.example.com");
    config_destroy(c);
}

static void test_created_and_lookups(void **state)
{
    (void)state;
    config *c = ut_conf_loaded("[account.a]\nsid = " SID1 "\nauth_token = t\nkaphila_key = k\n"
                       "created = 2024-01-31T12:00:00Z\n"
                       "[account.b]\nsid = " SID2 "\nauth_token = t\nkaphila_key = k\n"
                       "api_key_sid = " SK1 "\napi_key_secret = s\n");
    char err[256];
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_int_equal(c->accounts[0].created_at, 1706702400000LL);
    assert_int_equal(c->accounts[1].created_at, 0);
    assert_ptr_equal(config_account_by_sid(c, SID1), &c->accounts[0]);
    assert_ptr_equal(config_account_by_sid(c, SID2), &c->accounts[1]);
    assert_null(config_account_by_sid(c, "AC00000000000000000000000000000000"));
    assert_null(config_account_by_sid(c, NULL));
    assert_ptr_equal(config_account_by_key_sid(c, SK1), &c->accounts[1]);
    assert_null(config_account_by_key_sid(c, SID1));
    assert_null(config_account_by_key_sid(c, NULL));
    config_destroy(c);
}

/* ---- reload ----------------------------------------------------------- */

static void test_key_reloadable(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "account.demo.sid", "account.x.auth_token", "log.level", "log.json", "webhook.allow",
        "webhook.deny", "webhook.max_response_bytes", "limits.max_redirects",
        "limits.max_twiml_bytes", "limits.max_twiml_depth", "shutdown.grace_ms", "metrics.token",
    };
    static const char *const no[] = {
        "listen.port", "listen.address", "listen.threads", "public_url", "db.path",
        "kaphila.url", "kaphila.timeout_ms", "limits.max_body_bytes", "limits.max_live_calls",
        "sim.fast", "sim.admin_token", "no.such.key", "",
    };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!config_key_reloadable(yes[i]))
            fail_msg("%s should be reloadable", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (config_key_reloadable(no[i]))
            fail_msg("%s should not be reloadable", no[i]);
    assert_false(config_key_reloadable(NULL));
}

static void test_reload_compatible(void **state)
{
    (void)state;
    char err[256] = "";
    config *a = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    config *b = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    assert_int_equal(config_finish(a, err, sizeof err), 0);
    assert_int_equal(config_finish(b, err, sizeof err), 0);
    assert_true(config_reload_compatible(a, b, err, sizeof err));

    /* Reloadable keys and accounts may change. */
    assert_int_equal(config_set(b, "log.level", "debug", err, sizeof err), 0);
    assert_int_equal(config_set(b, "limits.max_redirects", "5", err, sizeof err), 0);
    assert_int_equal(config_set(b, "metrics.token", "new", err, sizeof err), 0);
    assert_int_equal(config_set(b, "account.main.auth_token", "rotated", err, sizeof err), 0);
    assert_int_equal(config_set(b, "account.extra.sid", SID2, err, sizeof err), 0);
    assert_true(config_reload_compatible(a, b, err, sizeof err));

    assert_int_equal(config_set(b, "listen.port", "9090", err, sizeof err), 0);
    assert_false(config_reload_compatible(a, b, err, sizeof err));
    assert_string_equal(err, "listen.port: changed from 8080 to 9090; restart to apply");
    assert_int_equal(config_set(b, "listen.port", "8080", err, sizeof err), 0);

    assert_int_equal(config_set(b, "kaphila.url", "http://k:3000", err, sizeof err), 0);
    assert_false(config_reload_compatible(a, b, err, sizeof err));
    assert_string_equal(err, "kaphila.url: changed from 'sim' to 'http://k:3000'; restart to apply");
    assert_int_equal(config_set(b, "kaphila.url", "sim", err, sizeof err), 0);

    assert_int_equal(config_set(b, "sim.fast", "yes", err, sizeof err), 0);
    assert_false(config_reload_compatible(a, b, err, sizeof err));
    assert_string_equal(err, "sim.fast: changed from false to true; restart to apply");
    assert_int_equal(config_set(b, "sim.fast", "no", err, sizeof err), 0);

    /* A secret that needs a restart is named, never shown. */
    assert_int_equal(config_set(b, "sim.admin_token", "hunter2-admin", err, sizeof err), 0);
    assert_false(config_reload_compatible(a, b, err, sizeof err));
    assert_string_equal(err, "sim.admin_token: changed; restart to apply");
    config_destroy(a);
    config_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_print_masks_secrets_and_round_trips),
        cmocka_unit_test(test_help_lists_every_key),
        cmocka_unit_test(test_finish_errors),
        cmocka_unit_test(test_finish_print_needs_no_account),
        cmocka_unit_test(test_finish_derived_values),
        cmocka_unit_test(test_created_and_lookups),
        cmocka_unit_test(test_key_reloadable),
        cmocka_unit_test(test_reload_compatible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
