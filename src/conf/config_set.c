/* config_set.c — set_value, the environment and --set, cross-key checks (see config.c for the map of the config files). */
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

/* ---- typed parsing ---------------------------------------------------- */

static bool parse_int(const char *v, int min, int max, int *out, char *why, size_t whylen)
{
    const char *p = v;
    if (*p == '+' || *p == '-')
        p++;
    if (*p == '\0' || strspn(p, "0123456789") != strlen(p)) {
        config_fail(why, whylen, "'%s' is not an integer", v);
        return false;
    }
    errno = 0;
    long long n = strtoll(v, NULL, 10);
    if (errno == ERANGE || n < min || n > max) {
        config_fail(why, whylen, "%s is out of range (%d..%d)", v, min, max);
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
    config_fail(why, whylen, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", v);
    return false;
}

static bool parse_time(const char *v, long long *out, char *why, size_t whylen)
{
    int64_t ms;
    bool date_only;
    if (!timefmt_parse_iso8601(v, &ms, &date_only)) {
        config_fail(why, whylen, "'%s' is not an ISO 8601 date-time (2024-01-31T12:00:00Z)", v);
        return false;
    }
    *out = (long long)ms;
    return true;
}

/* ---- setting one key ---------------------------------------------------- */

config_account *config_find_account(config *c, const char *name, size_t n)
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
        config_fail(why, whylen, "%s: expected account.<name>.<field>", key);
        return -1;
    }
    size_t name_len = (size_t)(dot - name);
    if (!config_valid_account_name(name, name_len)) {
        config_fail(why, whylen, "%s: account name '%.*s' must be 1..%d characters of [a-z0-9_-]",
             key, (int)name_len, name, CONFIG_MAX_ACCOUNT_NAME);
        return -1;
    }
    const field_def *f = config_find_field(dot + 1);
    if (f == NULL) {
        const char *best = NULL;
        for (size_t i = 0; i < config_n_fields && best == NULL; i++)
            if (config_edit_distance(dot + 1, config_fields[i].name) <= 2)
                best = config_fields[i].name;
        if (best != NULL)
            config_fail(why, whylen, "unknown key '%s' (did you mean '%.*s%s'?)", key,
                 (int)(dot + 1 - key), key, best);
        else
            config_fail(why, whylen, "unknown key '%s' (account fields: sid, auth_token, kaphila_key, "
                 "friendly_name, api_key_sid, api_key_secret, created, media_auth, "
                 "kaphila_voice, kaphila_rate_limit, cps)", key);
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

    config_account *a = config_find_account(c, name, name_len);
    if (a == NULL) {
        if (c->n_accounts >= CONFIG_MAX_ACCOUNTS) {
            config_fail(why, whylen, "%s: too many accounts (at most %d)", key, CONFIG_MAX_ACCOUNTS);
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
    if (!config_replace_str(config_str_field(a, f->offset), value))
        goto oom;
    return 0;

bad:
    config_fail(why, whylen, "%s: %s", key, reason);
    return -1;
oom:
    config_fail(why, whylen, "%s: out of memory", key);
    return -1;
}

/* The one place a key gets a value. why gets "key: reason" on failure. */
int config_set_value(config *c, const char *key, const char *value, char *why, size_t whylen)
{
    int cc = config_control_char(value, strlen(value));
    if (cc >= 0) {
        config_fail(why, whylen, "%s: value contains control character 0x%02x", key, cc);
        return -1;
    }
    const char *bad_utf8 = config_utf8_problem((const unsigned char *)value, strlen(value));
    if (bad_utf8 != NULL) {
        config_fail(why, whylen, "%s: value is %s", key, bad_utf8);
        return -1;
    }
    if (strncmp(key, ACCOUNT_PREFIX, ACCOUNT_PREFIX_LEN) == 0)
        return set_account_value(c, key, value, why, whylen);

    const key_def *k = config_find_key(key);
    if (k == NULL) {
        config_unknown_key(key, why, whylen);
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
        if (!config_replace_str(config_str_field(c, k->offset), value)) {
            config_fail(why, whylen, "%s: out of memory", key);
            return -1;
        }
        return 0;
    case KT_TIME:
        break;
    }
    assert(!"global keys are never KT_TIME");
    return -1;

bad:
    config_fail(why, whylen, "%s: %s", key, reason);
    return -1;
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
    for (size_t i = 0; i < config_n_keys; i++) {
        const char *dot = strchr(config_keys[i].name, '.');
        if (dot == NULL)
            continue;
        char pre[KEY_MAX + ENV_PREFIX_LEN];
        char sec[KEY_MAX];
        size_t sl = (size_t)(dot - config_keys[i].name);
        memcpy(sec, config_keys[i].name, sl);
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
    for (size_t i = 0; i < config_n_keys; i++) {
        env_name(config_keys[i].name, cand, sizeof cand);
        if (strlen(cand) == n && strncmp(cand, var, n) == 0)
            return &config_keys[i];
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
        config_fail(err, errlen, "environment %.*s: expected %s<NAME>__<FIELD>", (int)n, var,
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
    if (config_set_value(c, key, value, why, sizeof why) != 0) {
        config_fail(err, errlen, "environment %.*s: %s", (int)n, var, why);
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
        for (size_t f = 0; f < config_n_fields; f++) {
            snprintf(key, sizeof key, "%s%s.%s", ACCOUNT_PREFIX, c->accounts[a].name,
                     config_fields[f].name);
            env_name(key, cand, sizeof cand);
            if (strlen(cand) != n || strncmp(cand, var, n) != 0)
                continue;
            if (match != NULL) {
                config_fail(err, errlen, "environment %.*s: ambiguous, matches account.%s.%s and "
                     "account.%s.%s; use %s<NAME>__<FIELD>", (int)n, var,
                     c->accounts[match_acct].name, match, c->accounts[a].name, config_fields[f].name,
                     ENV_ACCOUNT_NEW);
                return -1;
            }
            match = config_fields[f].name;
            match_acct = a;
        }
    }
    if (match != NULL) {
        char why[512];
        snprintf(key, sizeof key, "%s%s.%s", ACCOUNT_PREFIX, c->accounts[match_acct].name, match);
        if (config_set_value(c, key, value, why, sizeof why) != 0) {
            config_fail(err, errlen, "environment %.*s: %s", (int)n, var, why);
            return -1;
        }
        return 0;
    }
    if (strncmp(var, ENV_ACCOUNT, strlen(ENV_ACCOUNT)) == 0) {
        config_fail(err, errlen, "environment %.*s: no such account key; a new account is set "
             "with %s<NAME>__<FIELD>", (int)n, var, ENV_ACCOUNT_NEW);
        return -1;
    }
    if (env_in_our_namespace(var, n)) {
        config_fail(err, errlen, "environment %.*s: unknown key", (int)n, var);
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
                if (config_set_value(c, k->name, value, why, sizeof why) != 0) {
                    config_fail(err, errlen, "environment %.*s: %s", (int)n, *e, why);
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
        config_fail(err, errlen, "unknown key '%.40s…'", key);
        return -1;
    }
    return config_set_value(c, key, value, err, errlen);
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
        config_fail(err, errlen, "public_url: out of memory");
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
        config_fail(err, errlen, "no accounts: define at least one [account.<name>] with sid, "
             "auth_token and kaphila_key");
        return -1;
    }
    for (size_t i = 0; i < c->n_accounts; i++) {
        config_account *a = &c->accounts[i];
        for (size_t f = 0; f < config_n_fields; f++) {
            if (!config_fields[f].required)
                continue;
            const char *v = *config_str_field(a, config_fields[f].offset);
            if (v == NULL || *v == '\0') {
                config_fail(err, errlen, "account.%s.%s: missing (required for every account)",
                     a->name, config_fields[f].name);
                return -1;
            }
        }
        if (a->api_key_sid != NULL && (a->api_key_secret == NULL || *a->api_key_secret == '\0')) {
            config_fail(err, errlen, "account.%s.api_key_secret: required with api_key_sid", a->name);
            return -1;
        }
        if (a->api_key_sid == NULL && a->api_key_secret != NULL) {
            config_fail(err, errlen, "account.%s.api_key_sid: required with api_key_secret", a->name);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            const config_account *b = &c->accounts[j];
            if (strcasecmp(a->sid, b->sid) == 0) {
                config_fail(err, errlen, "account.%s.sid: same SID as account.%s.sid", a->name, b->name);
                return -1;
            }
            if (a->api_key_sid != NULL && b->api_key_sid != NULL &&
                strcasecmp(a->api_key_sid, b->api_key_sid) == 0) {
                config_fail(err, errlen, "account.%s.api_key_sid: same SID as account.%s.api_key_sid",
                     a->name, b->name);
                return -1;
            }
        }
        if (a->friendly_name == NULL && !config_replace_str(&a->friendly_name, a->name)) {
            config_fail(err, errlen, "account.%s.friendly_name: out of memory", a->name);
            return -1;
        }
    }

    if (c->cluster_renew_ms >= c->cluster_lease_ms) {
        config_fail(err, errlen, "cluster.renew_ms: %d is not less than cluster.lease_ms (%d):"
                    " the lease would run out between renewals", c->cluster_renew_ms,
                    c->cluster_lease_ms);
        return -1;
    }
    strip_trailing_slash(c->kaphila_url);
    if (c->public_url[0] == '\0') {
        /* With listen.port = 0 the real port is known only after binding;
         * config_bind_port() derives the URL then. */
        if (c->listen_port != 0 && derive_public_url(c, err, errlen) != 0)
            return -1;
    } else {
        strip_trailing_slash(c->public_url);
        if (!config_http_url_ok(c->public_url)) {
            config_fail(err, errlen, "public_url: '%s' has no host", c->public_url);
            return -1;
        }
    }
    if (!config_http_url_ok(c->kaphila_url) && strcmp(c->kaphila_url, "sim") != 0) {
        config_fail(err, errlen, "kaphila.url: '%s' has no host", c->kaphila_url);
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
