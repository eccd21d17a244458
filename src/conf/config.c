/* config — the key table and everything it drives.
 *
 * Files (the one table stays here; the other files read it, the caps and
 * the shared helpers through config_int.h):
 *   config.c        the key table (global keys, then the account
 *                   fields), the value checks it references, small helpers,
 *                   lifecycle, table introspection, lookups, reload rules
 *   config_set.c    set_value: the one place a key gets a value, whatever the
 *                   source; environment and --set; config_finish's cross-key
 *                   checks and derived values
 *   config_file.c   the file parser (sections, quotes, comments, UTF-8)
 *   config_print.c  printing (effective config, help)
 *
 * Every source funnels into config_set_value(), so a key behaves the same
 * whether it comes from the file, the environment or the command line, and
 * every error names the key the same way. */
#include "config_int.h"
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
static bool check_count(const char *v, char *why, size_t whylen);
static bool check_instance_id(const char *v, char *why, size_t whylen);

#define STR(n, f, d, r, chk, desc)  { n, KT_STRING, d, 0, 0, r, offsetof(config, f), chk, desc }
#define SEC(n, f, r, desc)          { n, KT_SECRET, "", 0, 0, r, offsetof(config, f), NULL, desc }
#define INT(n, f, d, lo, hi, r, desc) { n, KT_INT, d, lo, hi, r, offsetof(config, f), NULL, desc }
#define BOOL(n, f, d, r, desc)      { n, KT_BOOL, d, 0, 0, r, offsetof(config, f), NULL, desc }

/* Keys without a dot come first: in a file they must precede every [section].
 * Sections appear in this order in --print-config and conf/twigate.conf. */
const key_def config_keys[] = {
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
    SEC("db.url", db_url, false,
        "PostgreSQL URL (postgresql://user:pass@host:port/db); empty = SQLite at db.path"),
    INT("db.call_cache_entries", call_cache_entries, "4096", 0, 1000000, false,
        "Ended calls whose JSON is kept in memory for fetches (~2 KB each); 0 disables"),

    STR("cluster.instance_id", cluster_instance_id, "", false, check_instance_id,
        "This instance's name among the twigates sharing db.url; empty = <host name>:<listen.port>"),
    INT("cluster.lease_ms", cluster_lease_ms, "3000", 500, 600000, false,
        "An instance that has not renewed its lease for this long is fenced and its calls adopted"),
    INT("cluster.renew_ms", cluster_renew_ms, "1000", 100, 60000, false,
        "How often an instance renews its lease (less than cluster.lease_ms). Past lease_ms"
        " - renew_ms without a renewal that succeeded, the instance holds its Kaphila"
        " commands until one does"),
    INT("cluster.adopt_ms", cluster_adopt_ms, "500", 50, 60000, false,
        "How often each instance looks for calls whose owner is gone"),
    INT("cluster.poll_ms", cluster_poll_ms, "200", 10, 60000, false,
        "How often an instance reads the events the others received for its calls"),

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
    INT("kaphila.rate_window_ms", kaphila_rate_window_ms, "3600000", 100, 86400000, false,
        "Kaphila's rate-limit window per key (an hour); each account's kaphila_rate_limit applies per window"),
    INT("kaphila.me_interval_ms", kaphila_me_interval_ms, "300000", 1000, 86400000, false,
        "How often each key's limit and credits are read again from GET /api/me"
        " (also at once after a 429)"),
    INT("kaphila.credits_poll_ms", kaphila_credits_poll_ms, "5000", 100, 3600000, false,
        "While a 402 pauses a key's queue, how often GET /api/me is asked whether credits came back"),

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
    INT("limits.max_queue_time_s", max_queue_time_s, "86400", 1, 864000, false,
        "A create whose estimated wait in its key's queue exceeds this is refused with 22005 (Twilio: 24 h)"),
    INT("limits.engine_stall_ms", engine_stall_ms, "30000", 1000, 3600000, true,
        "An engine loop turn longer than this fails /healthz (503) and is logged as a stall"),

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
    INT("sim.rate_limit", sim_rate_limit, SIM_STR(SIM_RATE_LIMIT_DEFAULT), 0, SIM_RATE_LIMIT_MAX, false,
        "Kaphila's per-key limit on /makecall, /batchcall, /voice, /play, /gather and /hangup: "
        "requests accepted in any sim.rate_window_ms (sliding); 0 = unlimited"),
    INT("sim.rate_window_ms", sim_rate_window_ms, SIM_STR(SIM_RATE_WINDOW_MS_DEFAULT), 1,
        SIM_RATE_WINDOW_MS_MAX, false,
        "Window of sim.rate_limit (Kaphila's is an hour; tests shorten it)"),
    INT("sim.credits", sim_credits, SIM_STR(SIM_CREDITS_DEFAULT), 0, SIM_CREDITS_MAX, false,
        "Credits each simulated key starts with; one is spent per answered call, /makecall at 0 is 402"),
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
const size_t config_n_keys = sizeof config_keys / sizeof config_keys[0];

#define FIELD(n, t, req, f, chk, desc) { n, t, req, offsetof(config_account, f), chk, desc }
const field_def config_fields[] = {
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
    FIELD("kaphila_rate_limit", KT_STRING, false, kaphila_rate_limit, check_count,
          "Counted Kaphila requests per kaphila.rate_window_ms on this account's key (shared by"
          " every account using the key); 0 = Kaphila's rateLimit from GET /api/me"),
    FIELD("cps", KT_STRING, false, cps, check_count,
          "Calls dialled per second at most from this account's queue (Twilio's CPS); 0 = no cap"
          " beyond the key's budget"),
};
const size_t config_n_fields = sizeof config_fields / sizeof config_fields[0];

/* ---- small helpers ---------------------------------------------------- */

__attribute__((format(printf, 3, 4)))
void config_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

char **config_str_field(void *base, size_t offset)
{
    return (char **)((char *)base + offset);
}

/* Replaces a heap string field; false on out-of-memory (field untouched). */
bool config_replace_str(char **slot, const char *v)
{
    char *copy = strdup(v);
    if (copy == NULL)
        return false;
    free(*slot);
    *slot = copy;
    return true;
}

bool config_is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

bool config_sid_shape(const char *v, const char *prefix)
{
    return strlen(v) == 34 && strncmp(v, prefix, 2) == 0 && config_is_hex(v + 2, 32);
}

static bool is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
}

bool config_is_key_char(char ch)
{
    return is_name_char(ch) || ch == '.';
}

bool config_valid_account_name(const char *s, size_t n)
{
    if (n == 0 || n > CONFIG_MAX_ACCOUNT_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char(s[i]))
            return false;
    return true;
}

/* Returns NULL when s (of length n) is valid UTF-8, else a reason. */
const char *config_utf8_problem(const unsigned char *s, size_t n)
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
int config_control_char(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7F)
            return ch;
    }
    return -1;
}

size_t config_utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* Edit distance for "did you mean"; keys are short, so O(n*m) on the stack. */
size_t config_edit_distance(const char *a, const char *b)
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

const key_def *config_find_key(const char *name)
{
    for (size_t i = 0; i < config_n_keys; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

const field_def *config_find_field(const char *name)
{
    for (size_t i = 0; i < config_n_fields; i++)
        if (strcmp(config_fields[i].name, name) == 0)
            return &config_fields[i];
    return NULL;
}

void config_unknown_key(const char *key, char *why, size_t whylen)
{
    const char *best = NULL;
    size_t best_d = 3;   /* suggest only close misspellings */
    for (size_t i = 0; i < config_n_keys; i++) {
        size_t d = config_edit_distance(key, config_keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = config_keys[i].name;
        }
    }
    if (best != NULL)
        config_fail(why, whylen, "unknown key '%s' (did you mean '%s'?)", key, best);
    else
        config_fail(why, whylen, "unknown key '%s'", key);
}

/* ---- value checks ----------------------------------------------------- */

static bool check_nonempty(const char *v, char *why, size_t whylen)
{
    if (*v != '\0')
        return true;
    config_fail(why, whylen, "must not be empty");
    return false;
}

/* A short token of letters, digits and the punctuation in extra (shown so
 * in the message), at most max characters; what names it ("a voice name"). */
static bool check_token(const char *v, size_t max, const char *extra, const char *shown,
                        const char *what, char *why, size_t whylen)
{
    size_t n = strlen(v);
    if (n > max) {
        config_fail(why, whylen, "at most %zu characters", max);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)v[i]) && !strchr(extra, v[i])) {
            config_fail(why, whylen, "'%s' is not %s (letters, digits, %s)", v, what, shown);
            return false;
        }
    return true;
}

/* Kaphila voice names are short tokens (en-US-Neural2-A); the simulator
 * takes at most 256 bytes. Quotes and spaces would only be typos. */
static bool check_voice_name(const char *v, char *why, size_t whylen)
{
    return check_token(v, CONFIG_MAX_VOICE_NAME, "-_.:/", "- _ . : /", "a voice name", why,
                       whylen);
}

/* An instance's name (store/cluster.h): stored, logged and put in metrics
 * as it is. */
static bool check_instance_id(const char *v, char *why, size_t whylen)
{
    return check_token(v, CONFIG_MAX_INSTANCE_ID, "-_.:", "- _ . :", "an instance name", why,
                       whylen);
}

/* A whole number 0..1,000,000,000 (account fields kept as text). */
static bool check_count(const char *v, char *why, size_t whylen)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < 0 || n > 1000000000LL) {
        config_fail(why, whylen, "'%s' is not a whole number from 0 to 1000000000", v);
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
    if (config_sid_shape(v, "AC"))
        return true;
    config_fail(why, whylen, "'%s' is not an Account SID (AC + 32 hex digits)", v);
    return false;
}

static bool check_key_sid(const char *v, char *why, size_t whylen)
{
    if (config_sid_shape(v, "SK"))
        return true;
    config_fail(why, whylen, "'%s' is not an API key SID (SK + 32 hex digits)", v);
    return false;
}

static bool check_friendly_name(const char *v, char *why, size_t whylen)
{
    if (*v == '\0') {
        config_fail(why, whylen, "must not be empty");
        return false;
    }
    if (config_utf8_chars(v) > FRIENDLY_NAME_MAX) {
        config_fail(why, whylen, "is longer than %d characters", FRIENDLY_NAME_MAX);
        return false;
    }
    return true;
}

/* An absolute http(s) URL with a host and no query or fragment, because
 * request paths are appended to it. */
bool config_http_url_ok(const char *v)
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
    if (*v == '\0' || config_http_url_ok(v))
        return true;
    config_fail(why, whylen, "'%s' is not an http:// or https:// URL without query or fragment", v);
    return false;
}

static bool check_kaphila_url(const char *v, char *why, size_t whylen)
{
    if (strcmp(v, "sim") == 0 || config_http_url_ok(v))
        return true;
    config_fail(why, whylen, "'%s' is neither 'sim' nor an http:// or https:// URL", v);
    return false;
}

static bool check_log_level(const char *v, char *why, size_t whylen)
{
    static const char *const levels[] = { "debug", "info", "warn", "error" };
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (strcmp(v, levels[i]) == 0)
            return true;
    config_fail(why, whylen, "'%s' is not one of debug, info, warn, error", v);
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
            config_fail(why, whylen, "'%.*s' is not <digits>=busy|no-answer|failed|machine|human|unknown",
                 len, item);
            return false;
        }
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                config_fail(why, whylen, "trailing comma");
                return false;
            }
        }
    }
    return true;
}

/* ---- lifecycle -------------------------------------------------------- */

config *config_create(void)
{
    config *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    for (size_t i = 0; i < config_n_keys; i++) {
        char why[256];
        if (config_set_value(c, config_keys[i].name, config_keys[i].def, why, sizeof why) != 0) {
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
    for (size_t i = 0; i < config_n_keys; i++)
        if (config_keys[i].type == KT_STRING || config_keys[i].type == KT_SECRET)
            free(*config_str_field(c, config_keys[i].offset));
    for (size_t i = 0; i < c->n_accounts; i++) {
        config_account *a = &c->accounts[i];
        free(a->name);
        for (size_t f = 0; f < config_n_fields; f++)
            if (config_fields[f].type != KT_TIME && config_fields[f].type != KT_BOOL)
                free(*config_str_field(a, config_fields[f].offset));
    }
    free(c->accounts);
    free(c);
}

/* ---- table introspection ---------------------------------------------- */

size_t config_key_count(void)
{
    return config_n_keys + config_n_fields;
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
        "account.<name>.kaphila_rate_limit", "account.<name>.cps",
    };
    _Static_assert(sizeof account_keys / sizeof account_keys[0] ==
                   sizeof config_fields / sizeof config_fields[0],
                   "one template per account field");
    if (i < config_n_keys)
        return config_keys[i].name;
    if (i < config_n_keys + config_n_fields) {
        assert(strcmp(account_keys[i - config_n_keys] + strlen("account.<name>."),
                      config_fields[i - config_n_keys].name) == 0);
        return account_keys[i - config_n_keys];
    }
    return NULL;
}

const char *config_key_default(size_t i)
{
    return i < config_n_keys ? config_keys[i].def : NULL;
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
    const key_def *k = config_find_key(key);
    return k != NULL && k->reloadable;
}

bool config_reload_compatible(const config *old_c, const config *new_c, char *err, size_t errlen)
{
    for (size_t i = 0; i < config_n_keys; i++) {
        const key_def *k = &config_keys[i];
        if (k->reloadable)
            continue;
        const void *a = (const char *)old_c + k->offset;
        const void *b = (const char *)new_c + k->offset;
        switch (k->type) {
        case KT_INT:
            if (*(const int *)a != *(const int *)b) {
                config_fail(err, errlen, "%s: changed from %d to %d; restart to apply", k->name,
                     *(const int *)a, *(const int *)b);
                return false;
            }
            break;
        case KT_BOOL:
            if (*(const bool *)a != *(const bool *)b) {
                config_fail(err, errlen, "%s: changed from %s to %s; restart to apply", k->name,
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
                config_fail(err, errlen, "%s: changed; restart to apply", k->name);
            else
                config_fail(err, errlen, "%s: changed from '%s' to '%s'; restart to apply", k->name,
                     sa, sb);
            return false;
        }
        }
    }
    return true;
}
