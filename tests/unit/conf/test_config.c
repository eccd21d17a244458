/* Unit tests for config, reading it in: defaults, the file format, every
 * error class (with the key named exactly), environment and --set overrides
 * and their precedence, that conf/twigate.conf documents every key with its
 * real default, and the simulator's shared defaults and bounds. Printing,
 * config_finish and reload are test_config_finish.c's; the shared fixtures
 * are support/conf_rig.h. */
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

/* ---- defaults --------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    config *c = config_create();
    assert_non_null(c);
    assert_string_equal(c->listen_address, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_int_equal(c->http_threads, 2);
    assert_string_equal(c->public_url, "");
    assert_string_equal(c->db_path, "twigate.db");
    assert_string_equal(c->kaphila_url, "sim");
    assert_int_equal(c->kaphila_timeout_ms, 10000);
    assert_int_equal(c->kaphila_connect_ms, 3000);
    assert_int_equal(c->max_body_bytes, 65536);
    assert_int_equal(c->max_params, 256);
    assert_int_equal(c->max_twiml_bytes, 65536);
    assert_int_equal(c->max_twiml_depth, 16);
    assert_int_equal(c->max_redirects, 100);
    assert_int_equal(c->max_live_calls, 20000);
    assert_int_equal(c->max_connections, 4096);
    assert_string_equal(c->webhook_allow, "");
    assert_string_equal(c->webhook_deny, "");
    assert_int_equal(c->webhook_max_response, 1048576);
    assert_string_equal(c->log_level, "info");
    assert_false(c->log_json);
    assert_string_equal(c->metrics_token, "");
    assert_int_equal(c->shutdown_grace_ms, 10000);
    assert_string_equal(c->sim_address, "127.0.0.1");
    assert_int_equal(c->sim_port, 0);
    assert_false(c->sim_fast);
    assert_int_equal(c->sim_ring_ms, 1000);
    assert_int_equal(c->sim_answer_ms, 3000);
    assert_int_equal(c->sim_tts_ms_per_char, 60);
    assert_int_equal(c->sim_play_ms, 3000);
    assert_int_equal(c->sim_kept_calls, 10000);
    assert_string_equal(c->sim_outcomes, "0001=busy,0002=no-answer,0003=failed,0004=machine");
    assert_string_equal(c->sim_admin_token, "");
    assert_int_equal(c->n_accounts, 0);
    assert_null(c->accounts);
    config_destroy(c);
    config_destroy(NULL);
}

/* Every default in the table is a legal value for its own key, and the table
 * has each key once. */
static void test_table_is_consistent(void **state)
{
    (void)state;
    config *c = config_create();
    size_t n = config_key_count();
    assert_true(n > 30);
    for (size_t i = 0; i < n; i++) {
        const char *name = config_key_name(i);
        assert_non_null(name);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(name, config_key_name(j));
        const char *def = config_key_default(i);
        if (strncmp(name, "account.", 8) == 0) {
            assert_null(def);
            continue;
        }
        assert_non_null(def);
        char err[256] = "";
        if (config_set(c, name, def, err, sizeof err) != 0)
            fail_msg("default of %s rejected: %s", name, err);
    }
    assert_null(config_key_name(n));
    config_destroy(c);
}

/* ---- the file format -------------------------------------------------- */

static void test_file_sections_quotes_comments(void **state)
{
    (void)state;
    config *c = ut_conf_loaded(
        "\xEF\xBB\xBF# leading comment after a BOM\n"
        "; semicolon comment\n"
        "\n"
        "public_url = https://voice.example.com/   # trailing comment\n"
        "listen.threads = 4\n"
        "[listen]\r\n"
        "  port=9001\r\n"
        "\taddress = 0.0.0.0 ; not a comment marker after a value\n"
        "[ webhook ]   # comment after a header\n"
        "allow = \"10.0.0.0/8, #not-a-comment \"  # but this is\n"
        "deny = a#b\n"
        "[log]\n"
        "level = \"debug\"\n"
        "json = YES\n"
        "[metrics]\n"
        "token = \"quote \\\" and backslash \\\\ kept\"\n"
        "[account.main]\n"
        "sid = " SID1 "\n"
        "auth_token = " TOKEN1 "\n"
        "kaphila_key = " KKEY1 "\n"
        "friendly_name = \"Main  account\"\n"
        "[account.other-1_x]\n"
        "sid = " SID2 "\n"
        "[sim]\n"
        "fast = on\n"
        "outcomes =\n");
    assert_string_equal(c->public_url, "https://voice.example.com/");
    assert_int_equal(c->http_threads, 4);
    assert_int_equal(c->listen_port, 9001);
    assert_string_equal(c->listen_address, "0.0.0.0 ; not a comment marker after a value");
    assert_string_equal(c->webhook_allow, "10.0.0.0/8, #not-a-comment ");
    assert_string_equal(c->webhook_deny, "a#b");
    assert_string_equal(c->log_level, "debug");
    assert_true(c->log_json);
    assert_string_equal(c->metrics_token, "quote \" and backslash \\ kept");
    assert_true(c->sim_fast);
    assert_string_equal(c->sim_outcomes, "");
    assert_int_equal(c->n_accounts, 2);
    assert_string_equal(c->accounts[0].name, "main");
    assert_string_equal(c->accounts[0].sid, SID1);
    assert_string_equal(c->accounts[0].auth_token, TOKEN1);
    assert_string_equal(c->accounts[0].kaphila_key, KKEY1);
    assert_string_equal(c->accounts[0].friendly_name, "Main  account");
    assert_string_equal(c->accounts[1].name, "other-1_x");
    assert_string_equal(c->accounts[1].sid, SID2);
    assert_null(c->accounts[1].auth_token);
    config_destroy(c);
}

static void test_file_later_wins_and_sections_reopen(void **state)
{
    (void)state;
    config *c = ut_conf_loaded("[listen]\nport = 1\n[account.a]\nsid = " SID1 "\n"
                       "[listen]\nport = 2\n[account.a]\nauth_token = x\n");
    assert_int_equal(c->listen_port, 2);
    assert_int_equal(c->n_accounts, 1);
    assert_string_equal(c->accounts[0].sid, SID1);
    assert_string_equal(c->accounts[0].auth_token, "x");
    config_destroy(c);
}

static void test_bool_spellings(void **state)
{
    (void)state;
    static const char *const yes[] = { "true", "TRUE", "yes", "On", "1" };
    static const char *const no[] = { "false", "False", "NO", "off", "0" };
    config *c = config_create();
    char err[256];
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(config_set(c, "log.json", yes[i], err, sizeof err), 0);
        assert_true(c->log_json);
        assert_int_equal(config_set(c, "log.json", no[i], err, sizeof err), 0);
        assert_false(c->log_json);
    }
    config_destroy(c);
}

static void test_load_file_from_disk(void **state)
{
    (void)state;
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "[listen]\nport = 7000\nprot = 1\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    config *c = config_create();
    char err[512] = "";
    assert_int_equal(config_load_file(c, path, err, sizeof err), -1);
    char want[600];
    snprintf(want, sizeof want, "%s:3: unknown key 'listen.prot' (did you mean 'listen.port'?)", path);
    assert_string_equal(err, want);
    assert_int_equal(c->listen_port, 7000);   /* lines before the error applied */
    config_destroy(c);
    unlink(path);

    c = config_create();
    assert_int_equal(config_load_file(c, "/nonexistent/twigate.conf", err, sizeof err), -1);
    assert_string_equal(err, "/nonexistent/twigate.conf: No such file or directory");
    assert_int_equal(config_load_file(c, "/tmp", err, sizeof err), -1);
    assert_string_equal(err, "/tmp: Is a directory");
    config_destroy(c);
}

/* ---- errors ----------------------------------------------------------- */

typedef struct { const char *text; const char *err; } error_case;

static void test_file_errors_name_key_and_line(void **state)
{
    (void)state;
    static const error_case cases[] = {
        { "\n[listen]\nport = 70000\n",
          "t.conf:3: listen.port: 70000 is out of range (0..65535)" },
        { "listen.port = -1\n", "t.conf:1: listen.port: -1 is out of range (0..65535)" },
        { "listen.port = 99999999999999999999\n",
          "t.conf:1: listen.port: 99999999999999999999 is out of range (0..65535)" },
        { "[listen]\nport = abc\n", "t.conf:2: listen.port: 'abc' is not an integer" },
        { "[listen]\nport = 80 80\n", "t.conf:2: listen.port: '80 80' is not an integer" },
        { "[listen]\nport =\n", "t.conf:2: listen.port: '' is not an integer" },
        { "[listen]\nprot = 1\n", "t.conf:2: unknown key 'listen.prot' (did you mean 'listen.port'?)" },
        { "frobnicate = 1\n", "t.conf:1: unknown key 'frobnicate'" },
        { "[Listen]\n", "t.conf:1: bad section header '[Listen]' (lower-case [a-z0-9_.-])" },
        { "[listne]\n", "t.conf:1: unknown section [listne]" },
        { "[listen\n", "t.conf:1: section header without ']'" },
        { "[listen] port = 1\n", "t.conf:1: unexpected text after ']'" },
        { "[listen]\nport 8080\n", "t.conf:2: expected 'key = value'" },
        { "[listen]\nPort = 8080\n", "t.conf:2: unknown key 'listen.Port'" },
        { "[log]\njson = maybe\n",
          "t.conf:2: log.json: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)" },
        { "[log]\nlevel = verbose\n",
          "t.conf:2: log.level: 'verbose' is not one of debug, info, warn, error" },
        { "[kaphila]\nurl = ftp://x\n",
          "t.conf:2: kaphila.url: 'ftp://x' is neither 'sim' nor an http:// or https:// URL" },
        { "public_url = http://x/?a=b\n",
          "t.conf:1: public_url: 'http://x/?a=b' is not an http:// or https:// URL without query or fragment" },
        { "[sim]\noutcomes = 0001=busy,12=fax\n",
          "t.conf:2: sim.outcomes: '12=fax' is not <digits>=busy|no-answer|failed|machine|human|unknown" },
        { "[sim]\noutcomes = busy\n",
          "t.conf:2: sim.outcomes: 'busy' is not <digits>=busy|no-answer|failed|machine|human|unknown" },
        { "[sim]\noutcomes = 1=busy,\n", "t.conf:2: sim.outcomes: trailing comma" },
        { "[db]\npath = \"\"\n", "t.conf:2: db.path: must not be empty" },
        { "[metrics]\ntoken = \"abc\n", "t.conf:2: metrics.token: missing closing quote" },
        { "[metrics]\ntoken = \"a\\nb\"\n",
          "t.conf:2: metrics.token: only \\\" and \\\\ may be escaped in a quoted value" },
        { "[metrics]\ntoken = \"ab\" cd\n",
          "t.conf:2: metrics.token: unexpected text after the closing quote" },
        { "[metrics]\ntoken = \xff\xfe\n", "t.conf:2: line is not valid UTF-8" },
        { "[metrics]\ntoken = \xc0\xaf\n", "t.conf:2: line is not valid UTF-8" },
        { "[metrics]\ntoken = a\x01" "b\n", "t.conf:2: line contains control character 0x01" },
        { "[account.demo]\nsid = ACxyz\n",
          "t.conf:2: account.demo.sid: 'ACxyz' is not an Account SID (AC + 32 hex digits)" },
        { "[account.demo]\nsid = SK0123456789abcdef0123456789abcdef\n",
          "t.conf:2: account.demo.sid: 'SK0123456789abcdef0123456789abcdef' is not an Account SID (AC + 32 hex digits)" },
        { "[account.demo]\napi_key_sid = SK0123\n",
          "t.conf:2: account.demo.api_key_sid: 'SK0123' is not an API key SID (SK + 32 hex digits)" },
        { "[listen]\nlimit_exempt = 10.0.0.300\n",
          "t.conf:2: listen.limit_exempt: '10.0.0.300' is not an IP address" },
        { "[listen]\nlimit_exempt = \"127.0.0.1, example.com\"\n",
          "t.conf:2: listen.limit_exempt: 'example.com' is not an IP address" },
        { "[listen]\nhead_timeout_ms = 99\n",
          "t.conf:2: listen.head_timeout_ms: 99 is out of range (100..600000)" },
        { "[listen]\nmax_per_client = -1\n",
          "t.conf:2: listen.max_per_client: -1 is out of range (0..1000000)" },
        { "[account.demo]\nsidd = x\n",
          "t.conf:2: unknown key 'account.demo.sidd' (did you mean 'account.demo.sid'?)" },
        { "[account.demo]\nwhatever = x\n",
          "t.conf:2: unknown key 'account.demo.whatever' (account fields: sid, auth_token, "
          "kaphila_key, friendly_name, api_key_sid, api_key_secret, created, media_auth, "
          "kaphila_voice, kaphila_rate_limit, cps)" },
        { "[account.demo]\nmedia_auth = sometimes\n",
          "t.conf:2: account.demo.media_auth: 'sometimes' is not a boolean (true/false, yes/no, on/off, 1/0)" },
        { "[account.demo]\nkaphila_voice = \"en US\"\n",
          "t.conf:2: account.demo.kaphila_voice: 'en US' is not a voice name (letters, digits, - _ . : /)" },
        { "[cluster]\ninstance_id = \"tg 1\"\n",
          "t.conf:2: cluster.instance_id: 'tg 1' is not an instance name (letters, digits, - _ . :)" },
        { "[account.demo]\ncreated = yesterday\n",
          "t.conf:2: account.demo.created: 'yesterday' is not an ISO 8601 date-time (2024-01-31T12:00:00Z)" },
        { "[account.demo]\nfriendly_name = \"\"\n",
          "t.conf:2: account.demo.friendly_name: must not be empty" },
        { "[account.d!mo]\n", "t.conf:1: bad section header '[account.d!mo]' (lower-case [a-z0-9_.-])" },
        { "[account.a.b]\n", "t.conf:1: unknown section [account.a.b]" },
        { "account.x.y.sid = " SID1 "\n",
          "t.conf:1: unknown key 'account.x.y.sid' (did you mean 'account.x.sid'?)" },
        { "account..sid = " SID1 "\n",
          "t.conf:1: account..sid: account name '' must be 1..64 characters of [a-z0-9_-]" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config *c = config_create();
        char err[512] = "";
        if (ut_conf_load(c, cases[i].text, err, sizeof err) != -1)
            fail_msg("case %zu loaded: %s", i, cases[i].text);
        if (strcmp(err, cases[i].err) != 0)
            fail_msg("case %zu:\n got  %s\n want %s", i, err, cases[i].err);
        config_destroy(c);
    }
}

static void test_nul_byte_in_file(void **state)
{
    (void)state;
    static const char text[] = "[log]\nlevel = in\0fo\n";
    config *c = config_create();
    char err[256] = "";
    assert_int_equal(config_load_string(c, text, sizeof text - 1, "t.conf", err, sizeof err), -1);
    assert_string_equal(err, "t.conf:2: line contains a NUL byte");
    config_destroy(c);
}

static void test_oversized_file(void **state)
{
    (void)state;
    size_t n = 4 * 1024 * 1024 + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, '#', n);
    config *c = config_create();
    char err[256] = "";
    assert_int_equal(config_load_string(c, big, n, "big.conf", err, sizeof err), -1);
    assert_string_equal(err, "big.conf: larger than 4194304 bytes");
    /* The same size minus one byte is a (long) comment: fine. */
    assert_int_equal(config_load_string(c, big, n - 1, "big.conf", err, sizeof err), 0);
    free(big);
    config_destroy(c);
}

static void test_set_errors(void **state)
{
    (void)state;
    config *c = config_create();
    char err[512];
    assert_int_equal(config_set(c, "listen.port", "65536", err, sizeof err), -1);
    assert_string_equal(err, "listen.port: 65536 is out of range (0..65535)");
    assert_int_equal(config_set(c, "listen.port", "0x10", err, sizeof err), -1);
    assert_string_equal(err, "listen.port: '0x10' is not an integer");
    assert_int_equal(config_set(c, "limits.max_redirects", "0", err, sizeof err), -1);
    assert_string_equal(err, "limits.max_redirects: 0 is out of range (1..100000)");
    assert_int_equal(config_set(c, "log.levl", "info", err, sizeof err), -1);
    assert_string_equal(err, "unknown key 'log.levl' (did you mean 'log.level'?)");
    assert_int_equal(config_set(c, "account.Demo.sid", SID1, err, sizeof err), -1);
    assert_string_equal(err, "account.Demo.sid: account name 'Demo' must be 1..64 characters of [a-z0-9_-]");
    assert_int_equal(config_set(c, "account.demo", SID1, err, sizeof err), -1);
    assert_string_equal(err, "account.demo: expected account.<name>.<field>");
    assert_int_equal(config_set(c, "webhook.allow", "a\nb", err, sizeof err), -1);
    assert_string_equal(err, "webhook.allow: value contains control character 0x0a");
    assert_int_equal(config_set(c, "webhook.allow", "\xe2\x82", err, sizeof err), -1);
    assert_string_equal(err, "webhook.allow: value is not valid UTF-8");
    /* 65 characters (the é counts once) is one too many. */
    char name[80];
    memset(name, 'n', 63);
    strcpy(name + 63, "\xc3\xa9");
    assert_int_equal(config_set(c, "account.a.friendly_name", name, err, sizeof err), 0);
    strcpy(name + 63, "\xc3\xa9x");
    assert_int_equal(config_set(c, "account.a.friendly_name", name, err, sizeof err), -1);
    assert_string_equal(err, "account.a.friendly_name: is longer than 64 characters");
    /* A failed set leaves the old value. */
    assert_int_equal(c->listen_port, 8080);
    config_destroy(c);
}

static void test_account_cap(void **state)
{
    (void)state;
    config *c = config_create();
    char key[64], err[256];
    for (int i = 0; i < CONFIG_MAX_ACCOUNTS; i++) {
        snprintf(key, sizeof key, "account.a%d.kaphila_key", i);
        assert_int_equal(config_set(c, key, "k", err, sizeof err), 0);
    }
    assert_int_equal(c->n_accounts, CONFIG_MAX_ACCOUNTS);
    /* Existing accounts can still be changed. */
    assert_int_equal(config_set(c, "account.a7.kaphila_key", "k2", err, sizeof err), 0);
    assert_int_equal(config_set(c, "account.one-too-many.kaphila_key", "k", err, sizeof err), -1);
    assert_string_equal(err, "account.one-too-many.kaphila_key: too many accounts (at most 1024)");

    char longname[100] = "account.";
    memset(longname + 8, 'x', 65);
    strcpy(longname + 8 + 65, ".sid");
    assert_int_equal(config_set(c, longname, SID1, err, sizeof err), -1);
    assert_non_null(strstr(err, "must be 1..64 characters"));
    config_destroy(c);
}

/* ---- environment and --set -------------------------------------------- */

static void test_env_overrides(void **state)
{
    (void)state;
    config *c = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    char *env[] = {
        "PATH=/usr/bin",
        "TWIGATE_LISTEN_PORT=9100",
        "TWIGATE_KAPHILA_CONNECT_TIMEOUT_MS=500",
        "TWIGATE_LOG_JSON=true",
        "TWIGATE_PUBLIC_URL=https://pub.example.com",
        "TWIGATE_BUILD=build-san",          /* someone else's: ignored */
        "TWIGATE_CONFIG=/etc/twigate.conf", /* ditto */
        "TWIGATE_ACCOUNT_MAIN_AUTH_TOKEN=from-env",
        /* Single-underscore form for an account that a later variable creates. */
        "TWIGATE_ACCOUNT_NEW_ONE_KAPHILA_KEY=kk-new",
        "TWIGATE_ACCOUNT__NEW_ONE__SID=" SID2,
        "TWIGATE_ACCOUNT__NEW_ONE__AUTH_TOKEN=t2",
        "TWIGATE_WEBHOOK_DENY=",
        "NOT_TWIGATE_LISTEN_PORT=1",
        NULL,
    };
    char err[512] = "";
    if (config_apply_env(c, env, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c->listen_port, 9100);
    assert_int_equal(c->kaphila_connect_ms, 500);
    assert_true(c->log_json);
    assert_string_equal(c->public_url, "https://pub.example.com");
    assert_string_equal(c->webhook_deny, "");
    assert_int_equal(c->n_accounts, 2);
    assert_string_equal(c->accounts[0].auth_token, "from-env");
    assert_string_equal(c->accounts[0].sid, SID1);
    assert_string_equal(c->accounts[1].name, "new_one");
    assert_string_equal(c->accounts[1].sid, SID2);
    assert_string_equal(c->accounts[1].auth_token, "t2");
    assert_string_equal(c->accounts[1].kaphila_key, "kk-new");
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    config_destroy(c);

    c = config_create();
    assert_int_equal(config_apply_env(c, NULL, err, sizeof err), 0);
    config_destroy(c);
}

static void expect_env_error(const char *file, const char *var, const char *want)
{
    config *c = ut_conf_loaded(file);
    char *env[] = { (char *)var, NULL };
    char err[512] = "";
    assert_int_equal(config_apply_env(c, env, err, sizeof err), -1);
    if (strcmp(err, want) != 0)
        fail_msg("\n got  %s\n want %s", err, want);
    config_destroy(c);
}

static void test_env_errors(void **state)
{
    (void)state;
    expect_env_error("", "TWIGATE_LISTEN_PORT=abc",
                     "environment TWIGATE_LISTEN_PORT: listen.port: 'abc' is not an integer");
    expect_env_error("", "TWIGATE_LISTEN_PROT=1", "environment TWIGATE_LISTEN_PROT: unknown key");
    expect_env_error("", "TWIGATE_SIM_FAST=sometimes",
                     "environment TWIGATE_SIM_FAST: sim.fast: 'sometimes' is not a boolean "
                     "(true/false, yes/no, on/off, 1/0)");
    expect_env_error("", "TWIGATE_ACCOUNT_GHOST_SID=" SID1,
                     "environment TWIGATE_ACCOUNT_GHOST_SID: no such account key; a new account "
                     "is set with TWIGATE_ACCOUNT__<NAME>__<FIELD>");
    expect_env_error("", "TWIGATE_ACCOUNT__GHOST_SID=" SID1,
                     "environment TWIGATE_ACCOUNT__GHOST_SID: expected TWIGATE_ACCOUNT__<NAME>__<FIELD>");
    expect_env_error("", "TWIGATE_ACCOUNT__GHOST__SIDE=x",
                     "environment TWIGATE_ACCOUNT__GHOST__SIDE: unknown key 'account.ghost.side' "
                     "(did you mean 'account.ghost.sid'?)");
    expect_env_error("", "TWIGATE_ACCOUNT__GHOST__SID=ACnope",
                     "environment TWIGATE_ACCOUNT__GHOST__SID: account.ghost.sid: 'ACnope' is not "
                     "an Account SID (AC + 32 hex digits)");
    /* "a-b" and "a_b" both become A_B. */
    expect_env_error("[account.a-b]\nkaphila_key = 1\n[account.a_b]\nkaphila_key = 2\n",
                     "TWIGATE_ACCOUNT_A_B_AUTH_TOKEN=t",
                     "environment TWIGATE_ACCOUNT_A_B_AUTH_TOKEN: ambiguous, matches "
                     "account.a-b.auth_token and account.a_b.auth_token; use "
                     "TWIGATE_ACCOUNT__<NAME>__<FIELD>");
    /* x's api_key_sid and x_api_key's sid. */
    expect_env_error("[account.x]\nkaphila_key = 1\n[account.x_api_key]\nkaphila_key = 2\n",
                     "TWIGATE_ACCOUNT_X_API_KEY_SID=" SK1,
                     "environment TWIGATE_ACCOUNT_X_API_KEY_SID: ambiguous, matches "
                     "account.x.api_key_sid and account.x_api_key.sid; use "
                     "TWIGATE_ACCOUNT__<NAME>__<FIELD>");
}

static void test_env_double_underscore_disambiguates(void **state)
{
    (void)state;
    config *c = ut_conf_loaded("[account.x]\nkaphila_key = 1\n[account.x_api_key]\nkaphila_key = 2\n");
    char *env[] = {
        "TWIGATE_ACCOUNT__X__API_KEY_SID=" SK1,
        "TWIGATE_ACCOUNT__X_API_KEY__SID=" SID2,
        /* A name with a double underscore: the last "__" separates the field. */
        "TWIGATE_ACCOUNT__A__B__KAPHILA_KEY=kk",
        NULL,
    };
    char err[512] = "";
    if (config_apply_env(c, env, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c->n_accounts, 3);
    assert_string_equal(c->accounts[0].api_key_sid, SK1);
    assert_null(c->accounts[0].sid);
    assert_string_equal(c->accounts[1].sid, SID2);
    assert_string_equal(c->accounts[2].name, "a__b");
    assert_string_equal(c->accounts[2].kaphila_key, "kk");
    config_destroy(c);
}

static void test_set_overrides(void **state)
{
    (void)state;
    config *c = config_create();
    char err[256];
    assert_int_equal(config_set(c, "listen.port", "0", err, sizeof err), 0);
    assert_int_equal(config_set(c, "webhook.allow", "  spaced value # kept  ", err, sizeof err), 0);
    assert_int_equal(config_set(c, "account.cli.sid", SID2, err, sizeof err), 0);
    assert_int_equal(c->listen_port, 0);
    /* --set values are taken literally: no comment or quote processing. */
    assert_string_equal(c->webhook_allow, "  spaced value # kept  ");
    assert_int_equal(c->n_accounts, 1);
    assert_string_equal(c->accounts[0].name, "cli");
    config_destroy(c);
}

static void test_precedence(void **state)
{
    (void)state;
    config *c = ut_conf_loaded("[listen]\nport = 9000\nthreads = 3\naddress = 10.0.0.1\n"
                       "[account.main]\nauth_token = file\n");
    char *env[] = { "TWIGATE_LISTEN_PORT=9001", "TWIGATE_LISTEN_THREADS=5",
                    "TWIGATE_ACCOUNT_MAIN_AUTH_TOKEN=env", NULL };
    char err[256];
    assert_int_equal(config_apply_env(c, env, err, sizeof err), 0);
    assert_int_equal(config_set(c, "listen.port", "9002", err, sizeof err), 0);
    assert_int_equal(config_set(c, "account.main.auth_token", "cli", err, sizeof err), 0);
    assert_int_equal(c->listen_port, 9002);       /* --set beats env beats file */
    assert_int_equal(c->http_threads, 5);         /* env beats file */
    assert_string_equal(c->listen_address, "10.0.0.1");  /* file beats default */
    assert_int_equal(c->max_params, 256);         /* default */
    assert_string_equal(c->accounts[0].auth_token, "cli");
    config_destroy(c);
}

/* ---- the sample file -------------------------------------------------- */

static FILE *open_sample(char *path, size_t pathlen)
{
    static const char *const dirs[] = { ".", "..", "../..", "../../.." };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(path, pathlen, "%s/conf/twigate.conf", dirs[i]);
        FILE *f = fopen(path, "r");
        if (f != NULL)
            return f;
    }
    fail_msg("conf/twigate.conf not found from the current directory");
    return NULL;
}

/* Every key of the table appears in the sample as `key = …` under its
 * section, commented out or not; account fields in some [account.*]. */
static void test_sample_documents_every_key(void **state)
{
    (void)state;
    char path[256];
    FILE *f = open_sample(path, sizeof path);
    size_t nkeys = config_key_count();
    bool *seen = calloc(nkeys, sizeof *seen);
    assert_non_null(seen);
    char section[128] = "";
    char line[1024];
    while (fgets(line, sizeof line, f) != NULL) {
        char *p = line;
        while (*p == '#' || *p == ';' || *p == ' ' || *p == '\t')
            p++;
        if (*p == '[') {
            /* Only a whole-line header: "# [reload] …" is prose. */
            char *close = strchr(p, ']');
            if (close == NULL || (close[1] != '\n' && close[1] != '\0'))
                continue;
            *close = '\0';
            if (strncmp(p + 1, "account.", 8) == 0)
                snprintf(section, sizeof section, "account.<name>");
            else
                snprintf(section, sizeof section, "%s", p + 1);
            continue;
        }
        size_t klen = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_.-");
        if (klen == 0 || strncmp(p + klen, " = ", 3) != 0)
            continue;
        char full[300];
        snprintf(full, sizeof full, "%s%s%.*s", section, section[0] ? "." : "", (int)klen, p);
        for (size_t i = 0; i < nkeys; i++)
            if (strcmp(full, config_key_name(i)) == 0)
                seen[i] = true;
    }
    fclose(f);
    for (size_t i = 0; i < nkeys; i++)
        if (!seen[i])
            fail_msg("%s does not document %s", path, config_key_name(i));
    free(seen);
}

/* The sample loads, passes config_finish, and shows the real defaults: its
 * global keys print exactly like a fresh config's. */
static void test_sample_loads_with_default_values(void **state)
{
    (void)state;
    char path[256];
    FILE *f = open_sample(path, sizeof path);
    fclose(f);
    config *c = config_create();
    char err[512] = "";
    if (config_load_file(c, path, err, sizeof err) != 0)
        fail_msg("%s", err);
    config *d = config_create();
    char *sample = ut_conf_capture(config_print, c);
    char *defaults = ut_conf_capture(config_print, d);
    char *acct = strstr(sample, "\n[account.");
    assert_non_null(acct);
    acct[0] = '\0';
    assert_string_equal(sample, defaults);
    free(sample);
    free(defaults);

    if (config_finish(c, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c->n_accounts, 1);
    assert_string_equal(c->accounts[0].name, "demo");
    assert_string_equal(c->accounts[0].sid, "ACde000000000000000000000000000001");
    assert_string_equal(c->accounts[0].kaphila_key, "ak_live_demo");
    assert_string_equal(c->accounts[0].friendly_name, "Demo account");
    assert_string_equal(c->kaphila_url, "sim");
    assert_string_equal(c->db_path, "twigate.db");
    assert_string_equal(c->public_url, "http://127.0.0.1:8080");
    config_destroy(c);
    config_destroy(d);
}

/* The sim.* keys and the simulator share one table of defaults and bounds
 * (include/sim/sim.h): the embedded simulator and kaphila-sim start alike. */
static void test_sim_defaults_and_bounds_are_the_simulators(void **state)
{
    (void)state;
    sim_config d;
    char err[256];
    sim_config_defaults(&d);
    config *c = ut_conf_loaded(UT_CONF_ACCOUNT_OK);
    assert_int_equal(c->sim_ring_ms, d.ring_ms);
    assert_int_equal(c->sim_answer_ms, d.answer_ms);
    assert_int_equal(c->sim_tts_ms_per_char, d.tts_ms_per_char);
    assert_int_equal(c->sim_play_ms, d.play_ms);
    assert_int_equal(c->sim_kept_calls, d.kept_calls);
    assert_string_equal(c->sim_outcomes, d.outcomes);
    assert_int_equal(config_set(c, "sim.tts_ms_per_char", SIM_STR(SIM_TTS_MS_PER_CHAR_MAX), err, sizeof err), 0);
    assert_int_not_equal(config_set(c, "sim.tts_ms_per_char", "10001", err, sizeof err), 0);
    assert_int_equal(config_set(c, "sim.play_ms", SIM_STR(SIM_DELAY_MS_MAX), err, sizeof err), 0);
    assert_int_not_equal(config_set(c, "sim.play_ms", "600001", err, sizeof err), 0);
    config_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_table_is_consistent),
        cmocka_unit_test(test_file_sections_quotes_comments),
        cmocka_unit_test(test_file_later_wins_and_sections_reopen),
        cmocka_unit_test(test_bool_spellings),
        cmocka_unit_test(test_load_file_from_disk),
        cmocka_unit_test(test_file_errors_name_key_and_line),
        cmocka_unit_test(test_nul_byte_in_file),
        cmocka_unit_test(test_oversized_file),
        cmocka_unit_test(test_set_errors),
        cmocka_unit_test(test_account_cap),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_env_double_underscore_disambiguates),
        cmocka_unit_test(test_set_overrides),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_sample_documents_every_key),
        cmocka_unit_test(test_sample_loads_with_default_values),
        cmocka_unit_test(test_sim_defaults_and_bounds_are_the_simulators),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
