/* config — the key table and everything it drives.
 *
 * Map of this file:
 *   caps and the key table (global keys, then the account fields)
 *   value checks (SIDs, URLs, sim.outcomes …) referenced from the table
 *   set_value: the one place a key gets a value, whatever the source
 *   the file parser (sections, quotes, comments, UTF-8)
 *   environment and --set
 *   config_finish: cross-key checks and derived values
 *   printing (effective config, help), lookups, reload compatibility
 *
 * Every source funnels into set_value(), so a key behaves the same whether it
 * comes from the file, the environment or the command line, and every error
 * names the key the same way. */
#include "conf/config.h"
#include "net/connguard.h"
#include "sim/sim.h"
#include "base/timefmt.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The longest legal key is account.<64>.api_key_secret (~88 bytes); anything
 * past this is a typo or garbage, and a fixed buffer keeps the parser simple. */
#define KEY_MAX 128
/* 1024 accounts with every field and a comment each fit in well under 1 MiB;
 * a bigger file is not a config file. */
#define CONFIG_MAX_FILE_BYTES (4 * 1024 * 1024)
/* Twilio's own limit on friendly_name (Twilio's Accounts resource: 64 characters). */
#define FRIENDLY_NAME_MAX 64
/* E.164 numbers have at most 15 digits, so a longer suffix can never match. */
#define OUTCOME_SUFFIX_MAX 15
/* Kaphila's voice names are like en-US-Neural2-A; 64 leaves room for any
 * vendor prefix and stays well under the 256 bytes Kaphila's fields take. */
#define CONFIG_MAX_VOICE_NAME 64

typedef enum { KT_STRING, KT_SECRET, KT_INT, KT_BOOL, KT_TIME } key_type;

/* Extra shape check for a string value; fills why (without the key) on failure. */
typedef bool (*value_check)(const char *v, char *why, size_t whylen);

typedef struct key_def {
    const char *name;
    key_type    type;
    const char *def;        /* default, as it would be written in the file */
    int         min, max;   /* ints only */
    bool        reloadable;
    size_t      offset;     /* of the field in struct config */
    value_check check;
    const char *desc;
} key_def;

typedef struct field_def {
    const char *name;       /* the <field> in account.<name>.<field> */
    key_type    type;
    bool        required;
    size_t      offset;     /* of the field in struct config_account */
    value_check check;
    const char *desc;
} field_def;

static bool check_account_sid(const char *v, char *why, size_t whylen);
static bool check_key_sid(const char *v, char *why, size_t whylen);
static bool check_public_url(const char *v, char *why, size_t whylen);
static bool check_kaphila_url(const char *v, char *why, size_t whylen);
static bool check_log_level(const char *v, char *why, size_t whylen);
static bool check_outcomes(const char *v, char *why, size_t whylen);
static bool check_friendly_name(const char *v, char *why, size_t whylen);
static bool check_nonempty(const char *v, char *why, size_t whylen);
static bool check_voice_name(const char *v, char *why, size_t whylen);
static bool check_addr_list(const char *v, char *why, size_t whylen);

#define STR(n, f, d, r, chk, desc)  { n, KT_STRING, d, 0, 0, r, offsetof(config, f), chk, desc }
#define SEC(n, f, r, desc)          { n, KT_SECRET, "", 0, 0, r, offsetof(config, f), NULL, desc }
#define INT(n, f, d, lo, hi, r, desc) { n, KT_INT, d, lo, hi, r, offsetof(config, f), NULL, desc }
#define BOOL(n, f, d, r, desc)      { n, KT_BOOL, d, 0, 0, r, offsetof(config, f), NULL, desc }

/* Keys without a dot come first: in a file they must precede every [section].
 * Sections appear in this order in --print-config and conf/twigate.conf. */
static const key_def KEYS[] = {
    STR("public_url", public_url, "", false, check_public_url,
        "Base URL clients and webhooks see; empty = http://<listen.address>:<listen.port>"),

    STR("listen.address", listen_address, "127.0.0.1", false, check_nonempty,
        "Address the REST API binds to (0.0.0.0 or :: for all interfaces)"),
    INT("listen.port", listen_port, "8080", 0, 65535, false,
        "TCP port of the REST API; 0 picks any free port"),
    INT("listen.threads", http_threads, "2", 1, 64, false,
        "HTTP worker threads; the handlers never block, so a few suffice"),
    INT("listen.max_per_client", max_per_client, "1024", 0, 1000000, false,
        "Most open connections from one client address (exempt ones aside); 0 = no limit"),
    INT("listen.head_timeout_ms", head_timeout_ms, "10000", 100, 600000, false,
        "A new connection's request head must be complete within this, however it trickles"),
    STR("listen.limit_exempt", limit_exempt, "", false, check_addr_list,
        "Comma list of IP addresses listen.max_per_client does not apply to (Kaphila's, a proxy's)"),

    STR("db.path", db_path, "twigate.db", false, check_nonempty,
        "SQLite database file (WAL mode); :memory: keeps nothing across restarts"),
    INT("db.call_cache_entries", call_cache_entries, "4096", 0, 1000000, false,
        "Ended calls whose JSON is kept in memory for fetches (~2 KB each); 0 disables"),

    STR("kaphila.url", kaphila_url, "sim", false, check_kaphila_url,
        "Kaphila base URL (http:// or https://), or sim for the built-in simulator"),
    INT("kaphila.timeout_ms", kaphila_timeout_ms, "10000", 100, 600000, false,
        "Whole-request timeout for calls to Kaphila"),
    INT("kaphila.connect_timeout_ms", kaphila_connect_ms, "3000", 100, 60000, false,
        "TCP/TLS connect timeout for calls to Kaphila"),
    INT("kaphila.reconcile_quiet_ms", reconcile_quiet_ms, "300000", 100, 86400000, false,
        "A live call with no Kaphila event for this long is checked with GET /calls/:callId"),
    INT("kaphila.reconcile_interval_ms", reconcile_interval_ms, "10000", 50, 3600000, false,
        "How often the reconciler looks for quiet calls and lists Kaphila's calls (GET /calls)"),
    INT("kaphila.hangup_retries", hangup_retries, "5", 0, 20, false,
        "Retries of a failed /hangup (backoff doubling) before the call is reconciled"),
    INT("kaphila.hangup_backoff_ms", hangup_backoff_ms, "1000", 10, 600000, false,
        "Delay before the first /hangup retry; doubles with each retry"),
    INT("kaphila.orphan_wait_ms", orphan_wait_ms, "30000", 100, 3600000, false,
        "After a /makecall answer is lost, wait this long for the call's events before checking GET /calls"),

    INT("limits.max_body_bytes", max_body_bytes, "65536", 1024, 16777216, false,
        "Largest REST request body accepted (larger gets 413)"),
    INT("limits.max_params", max_params, "256", 1, 10000, false,
        "Most form parameters accepted in one REST request"),
    INT("limits.max_twiml_bytes", max_twiml_bytes, "65536", 1024, 16777216, true,
        "Largest TwiML document accepted (Twilio's own limit is 64 KiB)"),
    INT("limits.max_twiml_depth", max_twiml_depth, "16", 2, 256, true,
        "Deepest element nesting accepted in TwiML"),
    INT("limits.max_redirects", max_redirects, "100", 1, 100000, true,
        "Most <Redirect>s and action fetches followed in one call, to stop loops"),
    INT("limits.max_live_calls", max_live_calls, "20000", 1, 1000000, false,
        "Most calls in progress at once; more are refused with 20429"),
    INT("limits.max_connections", max_connections, "4096", 16, 1000000, false,
        "Most simultaneous HTTP connections (bounded by the fd limit)"),

    STR("webhook.allow", webhook_allow, "", true, NULL,
        "Comma list of CIDRs or host names webhooks may reach; empty = any public address (private ranges need a CIDR here)"),
    STR("webhook.deny", webhook_deny, "", true, NULL,
        "Comma list of CIDRs or host names webhooks must not reach; wins over allow"),
    INT("webhook.max_response_bytes", webhook_max_response, "1048576", 1024, 67108864, true,
        "Largest webhook response read; the rest is cut off (11200)"),
    STR("webhook.proxy", webhook_proxy, "", true, NULL,
        "Proxy URL for every webhook; empty = direct (http_proxy & co are ignored)"),

    STR("play.sound_map", play_sound_map, "", true, NULL,
        "<Play> URLs mapped to Kaphila sound names: URL=sound,URL=sound (exact URL match)"),
    STR("play.sound_prefix", play_sound_prefix, "custom/", true, NULL,
        "Prefix for unmapped <Play> URLs: prefix + the URL's file name without extension"),

    STR("log.level", log_level, "info", true, check_log_level,
        "Least severe level logged: debug, info, warn or error"),
    BOOL("log.json", log_json, "false", true,
        "Log JSON lines instead of plain text"),
    BOOL("log.access", log_access, "false", true,
        "Log one line per HTTP request: method, path (query values hidden), status, bytes, time"),

    SEC("metrics.token", metrics_token, true,
        "Bearer token required by /metrics; empty = open"),

    INT("shutdown.grace_ms", shutdown_grace_ms, "10000", 0, 600000, true,
        "How long a stop waits for in-flight requests and webhooks"),

    STR("sim.address", sim_address, "127.0.0.1", false, check_nonempty,
        "Address the built-in simulator binds to (kaphila.url = sim)"),
    INT("sim.port", sim_port, "0", 0, 65535, false,
        "Port of the built-in simulator; 0 picks any free port"),
    BOOL("sim.fast", sim_fast, "false", false,
        "Divide every simulated delay by 20, for tests"),
    INT("sim.ring_ms", sim_ring_ms, SIM_STR(SIM_RING_MS_DEFAULT), 0, SIM_DELAY_MS_MAX, false,
        "Simulated time from dialling to ringing"),
    INT("sim.answer_ms", sim_answer_ms, SIM_STR(SIM_ANSWER_MS_DEFAULT), 0, SIM_DELAY_MS_MAX, false,
        "Simulated time from ringing to answer (or failure)"),
    INT("sim.tts_ms_per_char", sim_tts_ms_per_char, SIM_STR(SIM_TTS_MS_PER_CHAR_DEFAULT), 0,
        SIM_TTS_MS_PER_CHAR_MAX, false,
        "Simulated speech length per character of <Say> text"),
    INT("sim.play_ms", sim_play_ms, SIM_STR(SIM_PLAY_MS_DEFAULT), 0, SIM_DELAY_MS_MAX, false,
        "Simulated length of every <Play>ed file"),
    INT("sim.kept_calls", sim_kept_calls, SIM_STR(SIM_KEPT_CALLS_DEFAULT), 0, SIM_MAX_KEPT_CALLS, false,
        "Ended calls the simulator remembers (transcripts, GET /calls/:callId); oldest forgotten first"),
    STR("sim.outcomes", sim_outcomes, SIM_OUTCOMES_DEFAULT,
        false, check_outcomes,
        "Outcome by number suffix: <digits>=busy|no-answer|failed|machine|human|unknown, comma-separated"),
    SEC("sim.admin_token", sim_admin_token, false,
        "Token for the simulator's control API from non-loopback peers; empty = loopback only"),

    BOOL("accounts.kaphila_keys", kaphila_keys, "false", true,
         "Basic auth with any AC SID and a Kaphila API key that Kaphila accepts is an account"),
    /* console (issue 20): the web console at /console/ (docs/console.md) */
    BOOL("console.enabled", console_enabled, "false", false,
         "Serve the web console at /console/ (Basic auth with the account's REST credentials)"),
};
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

#define FIELD(n, t, req, f, chk, desc) { n, t, req, offsetof(config_account, f), chk, desc }
static const field_def FIELDS[] = {
    FIELD("sid", KT_STRING, true, sid, check_account_sid,
          "Account SID (AC + 32 hex digits); the Basic auth username"),
    FIELD("auth_token", KT_SECRET, true, auth_token, NULL,
          "Auth token: Basic auth password and webhook signing key"),
    FIELD("kaphila_key", KT_SECRET, true, kaphila_key, NULL,
          "Kaphila API key used for this account's calls"),
    FIELD("friendly_name", KT_STRING, false, friendly_name, check_friendly_name,
          "Account friendly_name (at most 64 characters); default: the <name>"),
    FIELD("api_key_sid", KT_STRING, false, api_key_sid, check_key_sid,
          "Optional API key SID (SK + 32 hex digits) accepted as Basic auth username"),
    FIELD("api_key_secret", KT_SECRET, false, api_key_secret, NULL,
          "Secret of api_key_sid; required with it"),
    FIELD("created", KT_TIME, false, created_at, NULL,
          "Account date_created, ISO 8601 (2024-01-31T12:00:00Z); default: first start"),
    FIELD("media_auth", KT_BOOL, false, media_auth, NULL,
          "Recording media (RecordingUrl) needs Basic auth, as Twilio's \"HTTP Basic auth"
          " for media\"; default false: the unguessable URL is enough"),
    FIELD("kaphila_voice", KT_STRING, false, kaphila_voice, check_voice_name,
          "Kaphila voiceName sent with /makecall for this account's calls; empty = Kaphila's"
          " default"),
};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

#define ACCOUNT_PREFIX "account."
#define ACCOUNT_PREFIX_LEN (sizeof ACCOUNT_PREFIX - 1)
#define ENV_PREFIX "TWIGATE_"
#define ENV_PREFIX_LEN (sizeof ENV_PREFIX - 1)
#define ENV_ACCOUNT "TWIGATE_ACCOUNT_"
#define ENV_ACCOUNT_NEW "TWIGATE_ACCOUNT__"
#define MASK "********"

/* ---- small helpers ---------------------------------------------------- */

__attribute__((format(printf, 3, 4)))
static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char **str_field(void *base, size_t offset)
{
    return (char **)((char *)base + offset);
}

/* Replaces a heap string field; false on out-of-memory (field untouched). */
static bool replace_str(char **slot, const char *v)
{
    char *copy = strdup(v);
    if (copy == NULL)
        return false;
    free(*slot);
    *slot = copy;
    return true;
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool sid_shape(const char *v, const char *prefix)
{
    return strlen(v) == 34 && strncmp(v, prefix, 2) == 0 && is_hex(v + 2, 32);
}

static bool is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
}

static bool is_key_char(char ch)
{
    return is_name_char(ch) || ch == '.';
}

static bool valid_account_name(const char *s, size_t n)
{
    if (n == 0 || n > CONFIG_MAX_ACCOUNT_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char(s[i]))
            return false;
    return true;
}

/* Returns NULL when s (of length n) is valid UTF-8, else a reason. */
static const char *utf8_problem(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((b & 0xE0) == 0xC0) { len = 2; cp = b & 0x1F; min = 0x80; }
        else if ((b & 0xF0) == 0xE0) { len = 3; cp = b & 0x0F; min = 0x800; }
        else if ((b & 0xF8) == 0xF0) { len = 4; cp = b & 0x07; min = 0x10000; }
        else return "not valid UTF-8";
        if (n - i < len)
            return "not valid UTF-8";
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return "not valid UTF-8";
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return "not valid UTF-8";
        i += len;
    }
    return NULL;
}

/* Control characters would corrupt logs and the printed config; tab is only
 * allowed as whitespace in the file, never inside a value. */
static int control_char(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7F)
            return ch;
    }
    return -1;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* Edit distance for "did you mean"; keys are short, so O(n*m) on the stack. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la >= KEY_MAX || lb >= KEY_MAX)
        return SIZE_MAX;
    size_t prev[KEY_MAX + 1], cur[KEY_MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof prev[0]);
    }
    return prev[lb];
}

static const key_def *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].name, name) == 0)
            return &KEYS[i];
    return NULL;
}

static const field_def *find_field(const char *name)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (strcmp(FIELDS[i].name, name) == 0)
            return &FIELDS[i];
    return NULL;
}

static void unknown_key(const char *key, char *why, size_t whylen)
{
    const char *best = NULL;
    size_t best_d = 3;   /* suggest only close misspellings */
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t d = edit_distance(key, KEYS[i].name);
        if (d < best_d) {
            best_d = d;
            best = KEYS[i].name;
        }
    }
    if (best != NULL)
        fail(why, whylen, "unknown key '%s' (did you mean '%s'?)", key, best);
    else
        fail(why, whylen, "unknown key '%s'", key);
}

/* ---- value checks ----------------------------------------------------- */

static bool check_nonempty(const char *v, char *why, size_t whylen)
{
    if (*v != '\0')
        return true;
    fail(why, whylen, "must not be empty");
    return false;
}

/* Kaphila voice names are short tokens (en-US-Neural2-A); the simulator
 * takes at most 256 bytes. Quotes and spaces would only be typos. */
static bool check_voice_name(const char *v, char *why, size_t whylen)
{
    size_t n = strlen(v);
    if (n > CONFIG_MAX_VOICE_NAME) {
        fail(why, whylen, "at most %d characters", CONFIG_MAX_VOICE_NAME);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)v[i]) && !strchr("-_.:/", v[i])) {
            fail(why, whylen, "'%s' is not a voice name (letters, digits, - _ . : /)", v);
            return false;
        }
    return true;
}

static bool check_addr_list(const char *v, char *why, size_t whylen)
{
    int n = 0;
    for (const char *p = v; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        unsigned char key[16];
        while (len && (*p == ' ' || *p == '\t')) p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        if (len && !connguard_parse_addr(p, len, key)) {
            snprintf(why, whylen, "'%.*s' is not an IP address", (int)(len > 64 ? 64 : len), p);
            return false;
        }
        if (len && ++n > CONNGUARD_MAX_EXEMPT) {
            snprintf(why, whylen, "more than %d addresses", CONNGUARD_MAX_EXEMPT);
            return false;
        }
        if (!e) break;
        p = e + 1;
    }
    return true;
}

static bool check_account_sid(const char *v, char *why, size_t whylen)
{
    if (sid_shape(v, "AC"))
        return true;
    fail(why, whylen, "'%s' is not an Account SID (AC + 32 hex digits)", v);
    return false;
}

static bool check_key_sid(const char *v, char *why, size_t whylen)
{
    if (sid_shape(v, "SK"))
        return true;
    fail(why, whylen, "'%s' is not an API key SID (SK + 32 hex digits)", v);
    return false;
}

static bool check_friendly_name(const char *v, char *why, size_t whylen)
{
    if (*v == '\0') {
        fail(why, whylen, "must not be empty");
        return false;
    }
    if (utf8_chars(v) > FRIENDLY_NAME_MAX) {
        fail(why, whylen, "is longer than %d characters", FRIENDLY_NAME_MAX);
        return false;
    }
    return true;
}

/* An absolute http(s) URL with a host and no query or fragment, because
 * request paths are appended to it. */
static bool http_url_ok(const char *v)
{
    const char *rest;
    if (strncmp(v, "http://", 7) == 0)
        rest = v + 7;
    else if (strncmp(v, "https://", 8) == 0)
        rest = v + 8;
    else
        return false;
    if (*rest == '\0' || *rest == '/' || *rest == ':')
        return false;
    return strpbrk(v, "?# ") == NULL;
}

static bool check_public_url(const char *v, char *why, size_t whylen)
{
    if (*v == '\0' || http_url_ok(v))
        return true;
    fail(why, whylen, "'%s' is not an http:// or https:// URL without query or fragment", v);
    return false;
}

static bool check_kaphila_url(const char *v, char *why, size_t whylen)
{
    if (strcmp(v, "sim") == 0 || http_url_ok(v))
        return true;
    fail(why, whylen, "'%s' is neither 'sim' nor an http:// or https:// URL", v);
    return false;
}

static bool check_log_level(const char *v, char *why, size_t whylen)
{
    static const char *const levels[] = { "debug", "info", "warn", "error" };
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (strcmp(v, levels[i]) == 0)
            return true;
    fail(why, whylen, "'%s' is not one of debug, info, warn, error", v);
    return false;
}

static bool check_outcomes(const char *v, char *why, size_t whylen)
{
    static const char *const words[] = {
        "busy", "no-answer", "failed", "machine", "human", "unknown",
    };
    const char *p = v;
    while (*p != '\0') {
        const char *item = p;
        size_t digits = strspn(p, "0123456789");
        p += digits;
        bool ok = digits > 0 && digits <= OUTCOME_SUFFIX_MAX && *p == '=';
        if (ok) {
            p++;
            size_t wlen = strcspn(p, ",");
            ok = false;
            for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
                if (strlen(words[i]) == wlen && strncmp(p, words[i], wlen) == 0)
                    ok = true;
            p += wlen;
        }
        if (!ok) {
            int len = (int)strcspn(item, ",");
            fail(why, whylen, "'%.*s' is not <digits>=busy|no-answer|failed|machine|human|unknown",
                 len, item);
            return false;
        }
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                fail(why, whylen, "trailing comma");
                return false;
            }
        }
    }
    return true;
}

/* ---- typed parsing ---------------------------------------------------- */

static bool parse_int(const char *v, int min, int max, int *out, char *why, size_t whylen)
{
    const char *p = v;
    if (*p == '+' || *p == '-')
        p++;
    if (*p == '\0' || strspn(p, "0123456789") != strlen(p)) {
        fail(why, whylen, "'%s' is not an integer", v);
        return false;
    }
    errno = 0;
    long long n = strtoll(v, NULL, 10);
    if (errno == ERANGE || n < min || n > max) {
        fail(why, whylen, "%s is out of range (%d..%d)", v, min, max);
        return false;
    }
    *out = (int)n;
    return true;
}

static bool parse_bool(const char *v, bool *out, char *why, size_t whylen)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) { *out = true; return true; }
        if (strcasecmp(v, no[i]) == 0) { *out = false; return true; }
    }
    fail(why, whylen, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", v);
    return false;
}

static bool parse_time(const char *v, long long *out, char *why, size_t whylen)
{
    int64_t ms;
    bool date_only;
    if (!timefmt_parse_iso8601(v, &ms, &date_only)) {
        fail(why, whylen, "'%s' is not an ISO 8601 date-time (2024-01-31T12:00:00Z)", v);
        return false;
    }
    *out = (long long)ms;
    return true;
}

/* ---- setting one key ---------------------------------------------------- */

static config_account *find_account(config *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->n_accounts; i++)
        if (strlen(c->accounts[i].name) == n && strncmp(c->accounts[i].name, name, n) == 0)
            return &c->accounts[i];
    return NULL;
}

static config_account *add_account(config *c, const char *name, size_t n)
{
    /* Grows one at a time: at most CONFIG_MAX_ACCOUNTS, once, at load. */
    config_account *grown = realloc(c->accounts, (c->n_accounts + 1) * sizeof *grown);
    if (grown == NULL)
        return NULL;
    c->accounts = grown;
    config_account *a = &grown[c->n_accounts];
    memset(a, 0, sizeof *a);
    a->name = strndup(name, n);
    if (a->name == NULL)
        return NULL;
    c->n_accounts++;
    return a;
}

static int set_account_value(config *c, const char *key, const char *value, char *why, size_t whylen)
{
    const char *name = key + ACCOUNT_PREFIX_LEN;
    const char *dot = strchr(name, '.');
    if (dot == NULL) {
        fail(why, whylen, "%s: expected account.<name>.<field>", key);
        return -1;
    }
    size_t name_len = (size_t)(dot - name);
    if (!valid_account_name(name, name_len)) {
        fail(why, whylen, "%s: account name '%.*s' must be 1..%d characters of [a-z0-9_-]",
             key, (int)name_len, name, CONFIG_MAX_ACCOUNT_NAME);
        return -1;
    }
    const field_def *f = find_field(dot + 1);
    if (f == NULL) {
        const char *best = NULL;
        for (size_t i = 0; i < N_FIELDS && best == NULL; i++)
            if (edit_distance(dot + 1, FIELDS[i].name) <= 2)
                best = FIELDS[i].name;
        if (best != NULL)
            fail(why, whylen, "unknown key '%s' (did you mean '%.*s%s'?)", key,
                 (int)(dot + 1 - key), key, best);
        else
            fail(why, whylen, "unknown key '%s' (account fields: sid, auth_token, kaphila_key, "
                 "friendly_name, api_key_sid, api_key_secret, created, media_auth, "
                 "kaphila_voice)", key);
        return -1;
    }

    char reason[256];
    long long ms = 0;
    bool b = false;
    if (f->type == KT_TIME) {
        if (!parse_time(value, &ms, reason, sizeof reason))
            goto bad;
    } else if (f->type == KT_BOOL) {
        if (!parse_bool(value, &b, reason, sizeof reason))
            goto bad;
    } else if (f->check != NULL && !f->check(value, reason, sizeof reason)) {
        goto bad;
    }

    config_account *a = find_account(c, name, name_len);
    if (a == NULL) {
        if (c->n_accounts >= CONFIG_MAX_ACCOUNTS) {
            fail(why, whylen, "%s: too many accounts (at most %d)", key, CONFIG_MAX_ACCOUNTS);
            return -1;
        }
        a = add_account(c, name, name_len);
        if (a == NULL)
            goto oom;
    }
    if (f->type == KT_TIME) {
        *(long long *)((char *)a + f->offset) = ms;
        return 0;
    }
    if (f->type == KT_BOOL) {
        *(bool *)((char *)a + f->offset) = b;
        return 0;
    }
    if (!replace_str(str_field(a, f->offset), value))
        goto oom;
    return 0;

bad:
    fail(why, whylen, "%s: %s", key, reason);
    return -1;
oom:
    fail(why, whylen, "%s: out of memory", key);
    return -1;
}

/* The one place a key gets a value. why gets "key: reason" on failure. */
static int set_value(config *c, const char *key, const char *value, char *why, size_t whylen)
{
    int cc = control_char(value, strlen(value));
    if (cc >= 0) {
        fail(why, whylen, "%s: value contains control character 0x%02x", key, cc);
        return -1;
    }
    const char *bad_utf8 = utf8_problem((const unsigned char *)value, strlen(value));
    if (bad_utf8 != NULL) {
        fail(why, whylen, "%s: value is %s", key, bad_utf8);
        return -1;
    }
    if (strncmp(key, ACCOUNT_PREFIX, ACCOUNT_PREFIX_LEN) == 0)
        return set_account_value(c, key, value, why, whylen);

    const key_def *k = find_key(key);
    if (k == NULL) {
        unknown_key(key, why, whylen);
        return -1;
    }
    char reason[256];
    switch (k->type) {
    case KT_INT: {
        int n;
        if (!parse_int(value, k->min, k->max, &n, reason, sizeof reason))
            goto bad;
        *(int *)((char *)c + k->offset) = n;
        return 0;
    }
    case KT_BOOL: {
        bool b;
        if (!parse_bool(value, &b, reason, sizeof reason))
            goto bad;
        *(bool *)((char *)c + k->offset) = b;
        return 0;
    }
    case KT_STRING:
    case KT_SECRET:
        if (k->check != NULL && !k->check(value, reason, sizeof reason))
            goto bad;
        if (!replace_str(str_field(c, k->offset), value)) {
            fail(why, whylen, "%s: out of memory", key);
            return -1;
        }
        return 0;
    case KT_TIME:
        break;
    }
    assert(!"global keys are never KT_TIME");
    return -1;

bad:
    fail(why, whylen, "%s: %s", key, reason);
    return -1;
}

/* ---- lifecycle -------------------------------------------------------- */

config *config_create(void)
{
    config *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    for (size_t i = 0; i < N_KEYS; i++) {
        char why[256];
        if (set_value(c, KEYS[i].name, KEYS[i].def, why, sizeof why) != 0) {
            /* Only out-of-memory can get here: the table's defaults are
             * checked by tests/unit/conf/test_config.c. */
            config_destroy(c);
            return NULL;
        }
    }
    return c;
}

void config_destroy(config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < N_KEYS; i++)
        if (KEYS[i].type == KT_STRING || KEYS[i].type == KT_SECRET)
            free(*str_field(c, KEYS[i].offset));
    for (size_t i = 0; i < c->n_accounts; i++) {
        config_account *a = &c->accounts[i];
        free(a->name);
        for (size_t f = 0; f < N_FIELDS; f++)
            if (FIELDS[f].type != KT_TIME && FIELDS[f].type != KT_BOOL)
                free(*str_field(a, FIELDS[f].offset));
    }
    free(c->accounts);
    free(c);
}

/* ---- the file format -------------------------------------------------- */

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* A section is known when some key lives under it, or it is account.<name>. */
static bool section_known(const char *s)
{
    if (strncmp(s, ACCOUNT_PREFIX, ACCOUNT_PREFIX_LEN) == 0)
        return valid_account_name(s + ACCOUNT_PREFIX_LEN, strlen(s + ACCOUNT_PREFIX_LEN));
    size_t n = strlen(s);
    for (size_t i = 0; i < N_KEYS; i++)
        if (strncmp(KEYS[i].name, s, n) == 0 && KEYS[i].name[n] == '.')
            return true;
    return false;
}

/* Parses one line (without its newline) and applies it. section is the
 * current [section] (empty at the top) and is updated by headers. Returns 0,
 * or -1 with the reason (no location) in why. */
static int parse_line(config *c, const char *line, size_t len, char section[KEY_MAX],
                      char *why, size_t whylen)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (memchr(line, '\0', len) != NULL) {
        fail(why, whylen, "line contains a NUL byte");
        return -1;
    }
    const char *bad_utf8 = utf8_problem((const unsigned char *)line, len);
    if (bad_utf8 != NULL) {
        fail(why, whylen, "line is %s", bad_utf8);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7F) {
            fail(why, whylen, "line contains control character 0x%02x", ch);
            return -1;
        }
    }

    const char *p = line, *end = line + len;
    while (p < end && is_ws(*p))
        p++;
    if (p == end || *p == '#' || *p == ';')
        return 0;

    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (close == NULL) {
            fail(why, whylen, "section header without ']'");
            return -1;
        }
        const char *rest = close + 1;
        while (rest < end && is_ws(*rest))
            rest++;
        if (rest < end && *rest != '#' && *rest != ';') {
            fail(why, whylen, "unexpected text after ']'");
            return -1;
        }
        const char *s = p + 1, *e = close;
        while (s < e && is_ws(*s))
            s++;
        while (e > s && is_ws(e[-1]))
            e--;
        size_t n = (size_t)(e - s);
        bool chars_ok = n > 0 && n < KEY_MAX;
        for (size_t i = 0; chars_ok && i < n; i++)
            chars_ok = is_key_char(s[i]);
        if (!chars_ok) {
            fail(why, whylen, "bad section header '[%.*s]' (lower-case [a-z0-9_.-])",
                 (int)(close - p - 1), p + 1);
            return -1;
        }
        char name[KEY_MAX];
        memcpy(name, s, n);
        name[n] = '\0';
        if (!section_known(name)) {
            fail(why, whylen, "unknown section [%s]", name);
            return -1;
        }
        memcpy(section, name, n + 1);
        return 0;
    }

    const char *k = p;
    while (p < end && !is_ws(*p) && *p != '=')
        p++;
    size_t klen = (size_t)(p - k);
    while (p < end && is_ws(*p))
        p++;
    if (p == end || *p != '=') {
        fail(why, whylen, "expected 'key = value'");
        return -1;
    }
    p++;

    char key[KEY_MAX];
    size_t slen = strlen(section);
    if (slen + 1 + klen >= KEY_MAX) {
        fail(why, whylen, "key '%.*s' is too long", (int)klen, k);
        return -1;
    }
    for (size_t i = 0; i < klen; i++) {
        if (!is_key_char(k[i])) {
            fail(why, whylen, "unknown key '%.*s%s%.*s'", (int)slen, section,
                 slen ? "." : "", (int)klen, k);
            return -1;
        }
    }
    size_t o = 0;
    if (slen > 0) {
        memcpy(key, section, slen);
        key[slen] = '.';
        o = slen + 1;
    }
    memcpy(key + o, k, klen);
    key[o + klen] = '\0';

    while (p < end && is_ws(*p))
        p++;
    /* The value is never longer than the rest of the line. */
    char *value = malloc((size_t)(end - p) + 1);
    if (value == NULL) {
        fail(why, whylen, "%s: out of memory", key);
        return -1;
    }
    int rc = -1;
    size_t vlen = 0;
    if (p < end && *p == '"') {
        p++;
        for (;;) {
            if (p == end) {
                fail(why, whylen, "%s: missing closing quote", key);
                goto out;
            }
            if (*p == '"')
                break;
            if (*p == '\\') {
                p++;
                if (p == end || (*p != '"' && *p != '\\')) {
                    fail(why, whylen, "%s: only \\\" and \\\\ may be escaped in a quoted value", key);
                    goto out;
                }
            }
            value[vlen++] = *p++;
        }
        p++;
        while (p < end && is_ws(*p))
            p++;
        if (p < end && *p != '#' && *p != ';') {
            fail(why, whylen, "%s: unexpected text after the closing quote", key);
            goto out;
        }
    } else {
        /* A '#' at the start of the value or after whitespace opens a
         * trailing comment; quote the value to keep one. */
        const char *v = p, *stop = end;
        for (const char *q = p; q < end; q++) {
            if (*q == '#' && (q == v || is_ws(q[-1]))) {
                stop = q;
                break;
            }
        }
        while (stop > v && is_ws(stop[-1]))
            stop--;
        vlen = (size_t)(stop - v);
        memcpy(value, v, vlen);
    }
    value[vlen] = '\0';
    if (strlen(value) != vlen) {
        fail(why, whylen, "%s: value contains a NUL byte", key);
        goto out;
    }
    rc = set_value(c, key, value, why, whylen);
out:
    free(value);
    return rc;
}

int config_load_string(config *c, const char *text, size_t len, const char *name,
                       char *err, size_t errlen)
{
    if (name == NULL)
        name = "<string>";
    if (len > CONFIG_MAX_FILE_BYTES) {
        fail(err, errlen, "%s: larger than %d bytes", name, CONFIG_MAX_FILE_BYTES);
        return -1;
    }
    /* A UTF-8 byte-order mark is legal at the start of a UTF-8 file. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }
    char section[KEY_MAX] = "";
    const char *p = text, *end = text + len;
    int line_no = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        line_no++;
        char why[512];
        if (parse_line(c, p, n, section, why, sizeof why) != 0) {
            fail(err, errlen, "%s:%d: %s", name, line_no, why);
            return -1;
        }
        p += n + (nl != NULL);
    }
    return 0;
}

int config_load_file(config *c, const char *path, char *err, size_t errlen)
{
    int rc = -1;
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    /* Read one byte past the cap so an oversized file is detected. */
    text = malloc(CONFIG_MAX_FILE_BYTES + 1);
    if (text == NULL) {
        fail(err, errlen, "%s: out of memory", path);
        goto out;
    }
    errno = 0;
    size_t n = fread(text, 1, CONFIG_MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        /* A directory opens fine and fails here with EISDIR. */
        fail(err, errlen, "%s: %s", path, errno != 0 ? strerror(errno) : "read error");
        goto out;
    }
    rc = config_load_string(c, text, n, path, err, errlen);
out:
    free(text);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* ---- environment and --set -------------------------------------------- */

/* TWIGATE_ + the key upper-cased with dots and dashes as underscores. */
static void env_name(const char *key, char *out, size_t outlen)
{
    size_t o = 0;
    for (const char *s = ENV_PREFIX; *s && o + 1 < outlen; s++)
        out[o++] = *s;
    for (const char *s = key; *s && o + 1 < outlen; s++)
        out[o++] = (*s == '.' || *s == '-') ? '_' : (char)toupper((unsigned char)*s);
    out[o] = '\0';
}

/* True when a TWIGATE_ variable looks meant for a key (its first word is a
 * section of the table), so a typo there is an error while unrelated
 * variables such as TWIGATE_BUILD are left alone. */
static bool env_in_our_namespace(const char *var, size_t n)
{
    if (n >= strlen(ENV_ACCOUNT) && strncmp(var, ENV_ACCOUNT, strlen(ENV_ACCOUNT)) == 0)
        return true;
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *dot = strchr(KEYS[i].name, '.');
        if (dot == NULL)
            continue;
        char pre[KEY_MAX + ENV_PREFIX_LEN];
        char sec[KEY_MAX];
        size_t sl = (size_t)(dot - KEYS[i].name);
        memcpy(sec, KEYS[i].name, sl);
        sec[sl] = '\0';
        env_name(sec, pre, sizeof pre);
        size_t pl = strlen(pre);
        if (n > pl && strncmp(var, pre, pl) == 0 && var[pl] == '_')
            return true;
    }
    return false;
}

/* The global key a variable names, or NULL. */
static const key_def *env_global_key(const char *var, size_t n)
{
    char cand[KEY_MAX + ENV_PREFIX_LEN];
    for (size_t i = 0; i < N_KEYS; i++) {
        env_name(KEYS[i].name, cand, sizeof cand);
        if (strlen(cand) == n && strncmp(cand, var, n) == 0)
            return &KEYS[i];
    }
    return NULL;
}

/* TWIGATE_ACCOUNT__<NAME>__<FIELD>: fields never contain "__", so the last
 * "__" splits name from field, whatever the name holds. */
static int apply_env_new_account(config *c, const char *var, size_t n, const char *value,
                                 char *err, size_t errlen)
{
    size_t pl = strlen(ENV_ACCOUNT_NEW);
    const char *name = var + pl, *sep = NULL;
    for (const char *s = name; s + 1 < var + n; s++)
        if (s[0] == '_' && s[1] == '_')
            sep = s;
    size_t name_len = sep != NULL ? (size_t)(sep - name) : 0;
    size_t field_len = sep != NULL ? (size_t)(var + n - sep - 2) : 0;
    char key[KEY_MAX];
    if (sep == NULL || name_len == 0 || field_len == 0 ||
        ACCOUNT_PREFIX_LEN + name_len + field_len + 2 > sizeof key) {
        fail(err, errlen, "environment %.*s: expected %s<NAME>__<FIELD>", (int)n, var,
             ENV_ACCOUNT_NEW);
        return -1;
    }
    size_t o = ACCOUNT_PREFIX_LEN;
    memcpy(key, ACCOUNT_PREFIX, ACCOUNT_PREFIX_LEN);
    for (size_t i = 0; i < name_len; i++)
        key[o++] = (char)tolower((unsigned char)name[i]);
    key[o++] = '.';
    for (size_t i = 0; i < field_len; i++)
        key[o++] = (char)tolower((unsigned char)sep[2 + i]);
    key[o] = '\0';
    char why[512];
    if (set_value(c, key, value, why, sizeof why) != 0) {
        fail(err, errlen, "environment %.*s: %s", (int)n, var, why);
        return -1;
    }
    return 0;
}

/* TWIGATE_ACCOUNT_<NAME>_<FIELD> for accounts already known (from the file or
 * a double-underscore variable), matched by converting every account key the
 * way global keys are. Two keys may map to one variable ("a-b" and "a_b", or
 * account x's api_key_sid and account x_api_key's sid): then it is refused.
 * Anything else in our namespace is an error; other TWIGATE_ variables (such
 * as TWIGATE_BUILD) belong to someone else and are left alone. */
static int apply_env_known_account(config *c, const char *var, size_t n, const char *value,
                                   char *err, size_t errlen)
{
    char key[KEY_MAX];
    char cand[KEY_MAX + ENV_PREFIX_LEN];
    const char *match = NULL;
    size_t match_acct = 0;
    for (size_t a = 0; a < c->n_accounts; a++) {
        for (size_t f = 0; f < N_FIELDS; f++) {
            snprintf(key, sizeof key, "%s%s.%s", ACCOUNT_PREFIX, c->accounts[a].name,
                     FIELDS[f].name);
            env_name(key, cand, sizeof cand);
            if (strlen(cand) != n || strncmp(cand, var, n) != 0)
                continue;
            if (match != NULL) {
                fail(err, errlen, "environment %.*s: ambiguous, matches account.%s.%s and "
                     "account.%s.%s; use %s<NAME>__<FIELD>", (int)n, var,
                     c->accounts[match_acct].name, match, c->accounts[a].name, FIELDS[f].name,
                     ENV_ACCOUNT_NEW);
                return -1;
            }
            match = FIELDS[f].name;
            match_acct = a;
        }
    }
    if (match != NULL) {
        char why[512];
        snprintf(key, sizeof key, "%s%s.%s", ACCOUNT_PREFIX, c->accounts[match_acct].name, match);
        if (set_value(c, key, value, why, sizeof why) != 0) {
            fail(err, errlen, "environment %.*s: %s", (int)n, var, why);
            return -1;
        }
        return 0;
    }
    if (strncmp(var, ENV_ACCOUNT, strlen(ENV_ACCOUNT)) == 0) {
        fail(err, errlen, "environment %.*s: no such account key; a new account is set "
             "with %s<NAME>__<FIELD>", (int)n, var, ENV_ACCOUNT_NEW);
        return -1;
    }
    if (env_in_our_namespace(var, n)) {
        fail(err, errlen, "environment %.*s: unknown key", (int)n, var);
        return -1;
    }
    return 0;
}

int config_apply_env(config *c, char *const *envp, char *err, size_t errlen)
{
    if (envp == NULL)
        return 0;
    /* Two passes so that the single-underscore account form can refer to an
     * account created by a double-underscore variable, whatever their order. */
    for (int pass = 0; pass < 2; pass++) {
        for (char *const *e = envp; *e != NULL; e++) {
            if (strncmp(*e, ENV_PREFIX, ENV_PREFIX_LEN) != 0)
                continue;
            const char *eq = strchr(*e, '=');
            if (eq == NULL)
                continue;
            size_t n = (size_t)(eq - *e);
            const char *value = eq + 1;
            const key_def *k = env_global_key(*e, n);
            bool new_account = strncmp(*e, ENV_ACCOUNT_NEW, strlen(ENV_ACCOUNT_NEW)) == 0;
            int rc = 0;
            if (pass == 0 && k != NULL) {
                char why[512];
                if (set_value(c, k->name, value, why, sizeof why) != 0) {
                    fail(err, errlen, "environment %.*s: %s", (int)n, *e, why);
                    rc = -1;
                }
            } else if (pass == 0 && new_account) {
                rc = apply_env_new_account(c, *e, n, value, err, errlen);
            } else if (pass == 1 && k == NULL && !new_account) {
                rc = apply_env_known_account(c, *e, n, value, err, errlen);
            }
            if (rc != 0)
                return -1;
        }
    }
    return 0;
}

int config_set(config *c, const char *key, const char *value, char *err, size_t errlen)
{
    if (strlen(key) >= KEY_MAX) {
        fail(err, errlen, "unknown key '%.40s…'", key);
        return -1;
    }
    return set_value(c, key, value, err, errlen);
}

/* ---- cross-key checks ------------------------------------------------- */

static bool strip_trailing_slash(char *s)
{
    size_t n = strlen(s);
    bool stripped = n > 0 && s[n - 1] == '/';
    if (stripped)
        s[n - 1] = '\0';
    return stripped;
}

static int derive_public_url(config *c, char *err, size_t errlen)
{
    const char *host = c->listen_address;
    bool v6 = strchr(host, ':') != NULL;
    /* A wildcard bind address is not something a client can dial. */
    if (strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    char *url = NULL;
    if (asprintf(&url, "http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "",
                 c->listen_port) < 0) {
        fail(err, errlen, "public_url: out of memory");
        return -1;
    }
    free(c->public_url);
    c->public_url = url;
    return 0;
}

static int finish(config *c, bool need_account, char *err, size_t errlen)
{
    /* With Kaphila-key accounts a file may define none. */
    if (need_account && c->n_accounts == 0 && !c->kaphila_keys) {
        fail(err, errlen, "no accounts: define at least one [account.<name>] with sid, "
             "auth_token and kaphila_key");
        return -1;
    }
    for (size_t i = 0; i < c->n_accounts; i++) {
        config_account *a = &c->accounts[i];
        for (size_t f = 0; f < N_FIELDS; f++) {
            if (!FIELDS[f].required)
                continue;
            const char *v = *str_field(a, FIELDS[f].offset);
            if (v == NULL || *v == '\0') {
                fail(err, errlen, "account.%s.%s: missing (required for every account)",
                     a->name, FIELDS[f].name);
                return -1;
            }
        }
        if (a->api_key_sid != NULL && (a->api_key_secret == NULL || *a->api_key_secret == '\0')) {
            fail(err, errlen, "account.%s.api_key_secret: required with api_key_sid", a->name);
            return -1;
        }
        if (a->api_key_sid == NULL && a->api_key_secret != NULL) {
            fail(err, errlen, "account.%s.api_key_sid: required with api_key_secret", a->name);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            const config_account *b = &c->accounts[j];
            if (strcasecmp(a->sid, b->sid) == 0) {
                fail(err, errlen, "account.%s.sid: same SID as account.%s.sid", a->name, b->name);
                return -1;
            }
            if (a->api_key_sid != NULL && b->api_key_sid != NULL &&
                strcasecmp(a->api_key_sid, b->api_key_sid) == 0) {
                fail(err, errlen, "account.%s.api_key_sid: same SID as account.%s.api_key_sid",
                     a->name, b->name);
                return -1;
            }
        }
        if (a->friendly_name == NULL && !replace_str(&a->friendly_name, a->name)) {
            fail(err, errlen, "account.%s.friendly_name: out of memory", a->name);
            return -1;
        }
    }

    strip_trailing_slash(c->kaphila_url);
    if (c->public_url[0] == '\0') {
        /* With listen.port = 0 the real port is known only after binding;
         * config_bind_port() derives the URL then. */
        if (c->listen_port != 0 && derive_public_url(c, err, errlen) != 0)
            return -1;
    } else {
        strip_trailing_slash(c->public_url);
        if (!http_url_ok(c->public_url)) {
            fail(err, errlen, "public_url: '%s' has no host", c->public_url);
            return -1;
        }
    }
    if (!http_url_ok(c->kaphila_url) && strcmp(c->kaphila_url, "sim") != 0) {
        fail(err, errlen, "kaphila.url: '%s' has no host", c->kaphila_url);
        return -1;
    }
    return 0;
}

int config_finish(config *c, char *err, size_t errlen)
{
    return finish(c, true, err, errlen);
}

int config_finish_print(config *c, char *err, size_t errlen)
{
    return finish(c, false, err, errlen);
}

int config_bind_port(config *c, int port, char *err, size_t errlen)
{
    if (c->listen_port != 0)
        return 0;
    c->listen_port = port;
    if (c->public_url[0] == '\0')
        return derive_public_url(c, err, errlen);
    return 0;
}

/* ---- printing --------------------------------------------------------- */

static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void format_iso8601(long long ms, char *out, size_t outlen)
{
    time_t secs = (time_t)(ms / 1000);
    long long frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, outlen, "invalid");
        return;
    }
    char base[64];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac != 0)
        snprintf(out, outlen, "%s.%03lldZ", base, frac);
    else
        snprintf(out, outlen, "%sZ", base);
}

static size_t section_len(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot != NULL ? (size_t)(dot - name) : 0;
}

void config_print(const config *c, FILE *out)
{
    fprintf(out, "# twigate effective configuration; secrets are shown as %s\n", MASK);
    const char *prev = NULL;
    size_t prev_len = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        size_t sl = section_len(k->name);
        if (sl > 0 && (prev == NULL || sl != prev_len || strncmp(prev, k->name, sl) != 0))
            fprintf(out, "\n[%.*s]\n", (int)sl, k->name);
        prev = k->name;
        prev_len = sl;
        fprintf(out, "%s = ", k->name + (sl ? sl + 1 : 0));
        const void *field = (const char *)c + k->offset;
        switch (k->type) {
        case KT_INT:
            fprintf(out, "%d\n", *(const int *)field);
            break;
        case KT_BOOL:
            fprintf(out, "%s\n", *(const bool *)field ? "true" : "false");
            break;
        case KT_STRING:
        case KT_SECRET:
        case KT_TIME: {
            const char *v = *(char *const *)field;
            print_quoted(out, k->type == KT_SECRET && v[0] != '\0' ? MASK : v);
            fputc('\n', out);
            break;
        }
        }
    }
    for (size_t i = 0; i < c->n_accounts; i++) {
        const config_account *a = &c->accounts[i];
        fprintf(out, "\n[account.%s]\n", a->name);
        for (size_t f = 0; f < N_FIELDS; f++) {
            const field_def *fd = &FIELDS[f];
            if (fd->type == KT_TIME) {
                if (a->created_at != 0) {
                    char iso[80];
                    format_iso8601(a->created_at, iso, sizeof iso);
                    fprintf(out, "%s = %s\n", fd->name, iso);
                }
                continue;
            }
            if (fd->type == KT_BOOL) {
                fprintf(out, "%s = %s\n", fd->name,
                        *(const bool *)((const char *)a + fd->offset) ? "true" : "false");
                continue;
            }
            const char *v = *(char *const *)((const char *)a + fd->offset);
            if (v == NULL)
                continue;
            fprintf(out, "%s = ", fd->name);
            print_quoted(out, fd->type == KT_SECRET ? MASK : v);
            fputc('\n', out);
        }
    }
}

static const char *type_name(key_type t)
{
    switch (t) {
    case KT_STRING: return "string";
    case KT_SECRET: return "secret";
    case KT_INT:    return "int";
    case KT_BOOL:   return "bool";
    case KT_TIME:   return "time";
    }
    return "?";
}

void config_print_help(FILE *out)
{
    fprintf(out,
            "Configuration keys (file < TWIGATE_<KEY> environment < --set key=value).\n"
            "[reload] marks keys a SIGHUP applies; the others need a restart.\n\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        fprintf(out, "  %s  %s  default ", k->name, type_name(k->type));
        if (k->type == KT_STRING || k->type == KT_SECRET)
            print_quoted(out, k->def);
        else
            fputs(k->def, out);
        if (k->type == KT_INT)
            fprintf(out, "  range %d..%d", k->min, k->max);
        fprintf(out, "%s\n      %s\n", k->reloadable ? "  [reload]" : "", k->desc);
    }
    fprintf(out, "\nAccount keys, one [account.<name>] section per account "
            "(<name>: [a-z0-9_-], at most %d accounts):\n\n", CONFIG_MAX_ACCOUNTS);
    for (size_t f = 0; f < N_FIELDS; f++) {
        const field_def *fd = &FIELDS[f];
        fprintf(out, "  account.<name>.%s  %s  %s  [reload]\n      %s\n", fd->name,
                type_name(fd->type), fd->required ? "required" : "optional", fd->desc);
    }
}

/* ---- table introspection ---------------------------------------------- */

size_t config_key_count(void)
{
    return N_KEYS + N_FIELDS;
}

const char *config_key_name(size_t i)
{
    /* Account keys are templates; their names are static so they can be
     * returned without the caller owning anything. */
    static const char *const account_keys[] = {
        "account.<name>.sid", "account.<name>.auth_token", "account.<name>.kaphila_key",
        "account.<name>.friendly_name", "account.<name>.api_key_sid",
        "account.<name>.api_key_secret", "account.<name>.created",
        "account.<name>.media_auth", "account.<name>.kaphila_voice",
    };
    _Static_assert(sizeof account_keys / sizeof account_keys[0] == N_FIELDS,
                   "one template per account field");
    if (i < N_KEYS)
        return KEYS[i].name;
    if (i < N_KEYS + N_FIELDS) {
        assert(strcmp(account_keys[i - N_KEYS] + strlen("account.<name>."),
                      FIELDS[i - N_KEYS].name) == 0);
        return account_keys[i - N_KEYS];
    }
    return NULL;
}

const char *config_key_default(size_t i)
{
    return i < N_KEYS ? KEYS[i].def : NULL;
}

/* ---- lookups and reload ----------------------------------------------- */

const config_account *config_account_by_sid(const config *c, const char *sid)
{
    if (sid == NULL)
        return NULL;
    for (size_t i = 0; i < c->n_accounts; i++)
        if (c->accounts[i].sid != NULL && strcmp(c->accounts[i].sid, sid) == 0)
            return &c->accounts[i];
    return c->account_hook ? c->account_hook(c->account_hook_ctx, sid) : NULL;
}

const config_account *config_account_by_key_sid(const config *c, const char *sk)
{
    if (sk == NULL)
        return NULL;
    for (size_t i = 0; i < c->n_accounts; i++)
        if (c->accounts[i].api_key_sid != NULL && strcmp(c->accounts[i].api_key_sid, sk) == 0)
            return &c->accounts[i];
    return NULL;
}

bool config_key_reloadable(const char *key)
{
    if (key == NULL)
        return false;
    if (strncmp(key, ACCOUNT_PREFIX, ACCOUNT_PREFIX_LEN) == 0)
        return true;
    const key_def *k = find_key(key);
    return k != NULL && k->reloadable;
}

bool config_reload_compatible(const config *old_c, const config *new_c, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        if (k->reloadable)
            continue;
        const void *a = (const char *)old_c + k->offset;
        const void *b = (const char *)new_c + k->offset;
        switch (k->type) {
        case KT_INT:
            if (*(const int *)a != *(const int *)b) {
                fail(err, errlen, "%s: changed from %d to %d; restart to apply", k->name,
                     *(const int *)a, *(const int *)b);
                return false;
            }
            break;
        case KT_BOOL:
            if (*(const bool *)a != *(const bool *)b) {
                fail(err, errlen, "%s: changed from %s to %s; restart to apply", k->name,
                     *(const bool *)a ? "true" : "false", *(const bool *)b ? "true" : "false");
                return false;
            }
            break;
        case KT_STRING:
        case KT_SECRET:
        case KT_TIME: {
            const char *sa = *(char *const *)a, *sb = *(char *const *)b;
            if (strcmp(sa, sb) == 0)
                break;
            if (k->type == KT_SECRET)
                fail(err, errlen, "%s: changed; restart to apply", k->name);
            else
                fail(err, errlen, "%s: changed from '%s' to '%s'; restart to apply", k->name,
                     sa, sb);
            return false;
        }
        }
    }
    return true;
}
