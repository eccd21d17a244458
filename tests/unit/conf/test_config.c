/* Unit tests for config: defaults, the file format, every error class (with
 * the key named exactly), environment and --set overrides and their
 * precedence, printing without secrets, config_finish, reload compatibility,
 * and that conf/twigate.conf documents every key with its real default. */
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

#define SID1 "AC0123456789abcdef0123456789abcdef"
#define SID2 "ACfedcba9876543210fedcba9876543210"
#define SK1  "SK0123456789abcdef0123456789abcdef"
#define TOKEN1 "tok-1-very-secret-value"
#define KKEY1 "ak_live_secret_kkey"

/* One valid account, so config_finish can succeed. */
static const char *const ACCOUNT_OK =
    "[account.main]\n"
    "sid = " SID1 "\n"
    "auth_token = " TOKEN1 "\n"
    "kaphila_key = " KKEY1 "\n";

static int load(config *c, const char *text, char *err, size_t errlen)
{
    return config_load_string(c, text, strlen(text), "t.conf", err, errlen);
}

/* A config loaded from text; the test fails if loading does. */
static config *loaded(const char *text)
{
    config *c = config_create();
    assert_non_null(c);
    char err[512] = "";
    int rc = load(c, text, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    return c;
}

static char *capture(void (*print)(const config *, FILE *), const config *c)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    print(c, f);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return buf;
}

static void print_help_adapter(const config *c, FILE *f)
{
    (void)c;
    config_print_help(f);
}

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
    config *c = loaded(
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
    config *c = loaded("[listen]\nport = 1\n[account.a]\nsid = " SID1 "\n"
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
        if (load(c, cases[i].text, err, sizeof err) != -1)
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
    config *c = loaded(ACCOUNT_OK);
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
    config *c = loaded(file);
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
    config *c = loaded("[account.x]\nkaphila_key = 1\n[account.x_api_key]\nkaphila_key = 2\n");
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
    config *c = loaded("[listen]\nport = 9000\nthreads = 3\naddress = 10.0.0.1\n"
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

/* ---- printing --------------------------------------------------------- */

static void test_print_masks_secrets_and_round_trips(void **state)
{
    (void)state;
    config *c = loaded(
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
    char *out = capture(config_print, c);
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
    if (load(back, out, err, sizeof err) != 0)
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
    char *again = capture(config_print, back);
    assert_string_equal(again, out);
    free(again);
    config_destroy(back);
    free(out);
    config_destroy(c);
}

static void test_help_lists_every_key(void **state)
{
    (void)state;
    char *help = capture(print_help_adapter, NULL);
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
    config *c = loaded(text);
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
}

/* --print-config's finish: no account needed, every other check and derived
 * value as in config_finish. */
static void test_finish_print_needs_no_account(void **state)
{
    (void)state;
    char err[256] = "";
    config *c = loaded("");
    assert_int_equal(config_finish_print(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://127.0.0.1:8080");
    assert_int_equal((int)c->n_accounts, 0);
    assert_false(c->log_access);
    config_destroy(c);
    /* An account that is there is still checked. */
    c = loaded("[account.a]\nauth_token = t\nkaphila_key = k\n");
    assert_int_equal(config_finish_print(c, err, sizeof err), -1);
    assert_string_equal(err, "account.a.sid: missing (required for every account)");
    config_destroy(c);
}

static void test_finish_derived_values(void **state)
{
    (void)state;
    char err[256];
    config *c = loaded(ACCOUNT_OK);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://127.0.0.1:8080");
    assert_string_equal(c->accounts[0].friendly_name, "main");
    assert_int_equal(c->accounts[0].created_at, 0);
    /* Idempotent. */
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://127.0.0.1:8080");
    config_destroy(c);

    c = loaded(ACCOUNT_OK);
    assert_int_equal(config_set(c, "listen.address", "0.0.0.0", err, sizeof err), 0);
    assert_int_equal(config_set(c, "listen.port", "9999", err, sizeof err), 0);
    assert_int_equal(config_set(c, "kaphila.url", "https://kaphila.example.com:3000/", err, sizeof err), 0);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://127.0.0.1:9999");
    assert_string_equal(c->kaphila_url, "https://kaphila.example.com:3000");
    config_destroy(c);

    c = loaded(ACCOUNT_OK);
    assert_int_equal(config_set(c, "listen.address", "::", err, sizeof err), 0);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "http://[::1]:8080");
    config_destroy(c);

    c = loaded(ACCOUNT_OK);
    assert_int_equal(config_set(c, "public_url", "https://tw.example.com/base/", err, sizeof err), 0);
    assert_int_equal(config_finish(c, err, sizeof err), 0);
    assert_string_equal(c->public_url, "https://tw.example.com/base");
    config_destroy(c);

    /* Port 0: public_url waits for the bound port. */
    c = loaded(ACCOUNT_OK);
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

    c = loaded(ACCOUNT_OK);
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
    config *c = loaded("[account.a]\nsid = " SID1 "\nauth_token = t\nkaphila_key = k\n"
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
    config *a = loaded(ACCOUNT_OK);
    config *b = loaded(ACCOUNT_OK);
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
    char *sample = capture(config_print, c);
    char *defaults = capture(config_print, d);
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
    config *c = loaded(ACCOUNT_OK);
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
        cmocka_unit_test(test_print_masks_secrets_and_round_trips),
        cmocka_unit_test(test_help_lists_every_key),
        cmocka_unit_test(test_finish_errors),
        cmocka_unit_test(test_finish_print_needs_no_account),
        cmocka_unit_test(test_finish_derived_values),
        cmocka_unit_test(test_created_and_lookups),
        cmocka_unit_test(test_key_reloadable),
        cmocka_unit_test(test_reload_compatible),
        cmocka_unit_test(test_sample_documents_every_key),
        cmocka_unit_test(test_sample_loads_with_default_values),
        cmocka_unit_test(test_sim_defaults_and_bounds_are_the_simulators),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
