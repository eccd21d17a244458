/* config — twigate's configuration: one table of keys (name, type, default,
 * bounds, reloadable, secret) that drives file parsing, environment and
 * command-line overrides, --help, --print-config and conf/twigate.conf.
 *
 * Sources, later wins: built-in defaults < the config file < environment
 * (TWIGATE_<KEY> with dots and dashes as underscores, upper case:
 * kaphila.url → TWIGATE_KAPHILA_URL) < command line (--set key=value).
 * Accounts are a family of keys, account.<name>.<field>; in the environment
 * TWIGATE_ACCOUNT_<NAME>_<FIELD> reaches an account already defined, and
 * TWIGATE_ACCOUNT__<NAME>__<FIELD> (double underscores) any account, new or
 * not (docs/configuration.md has the full rules).
 *
 * Building a config (create, load, env, set, finish, bind_port) is for one
 * thread. Every string in it is owned by the config and freed by
 * config_destroy; lookups return pointers into it, valid until then.
 *
 * A loaded config is immutable and may be read from any thread. On SIGHUP a
 * new one is built and swapped in whole (see main.c); never mutate one that
 * has been published. */
#ifndef TWIGATE_CONFIG_H
#define TWIGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Accounts are linear-scanned on every authenticated request and all live
 * in one file; a deployment with more wants a real account store. */
#define CONFIG_MAX_ACCOUNTS 1024
/* Account names appear in keys, environment names and logs. */
#define CONFIG_MAX_ACCOUNT_NAME 64
/* cluster.instance_id: at most this long (store/cluster.h's
 * STORE_INSTANCE_LEN holds it with its NUL; main.c checks that at build). */
#define CONFIG_MAX_INSTANCE_ID 71

typedef struct config_account {
    char *name;            /* the <name> in account.<name>.* */
    char *sid;             /* AC + 32 hex */
    char *auth_token;      /* secret */
    char *kaphila_key;     /* secret: Bearer key for this account's Kaphila requests */
    char *friendly_name;   /* default: the name */
    char *api_key_sid;     /* optional SK + 32 hex usable as Basic username */
    char *api_key_secret;  /* secret, required with api_key_sid */
    long long created_at;  /* ms; from account.<name>.created (ISO 8601), default 0 = first start */
    bool  media_auth;      /* recording media needs Basic auth (default false, as on Twilio) */
    char *kaphila_voice;   /* voiceName for /makecall; NULL or "" = Kaphila's default */
    /* Kept as the text the check accepted (an integer >= 0; NULL = 0): the
     * account table has no integer fields. */
    char *kaphila_rate_limit;   /* counted requests per window on its key; 0 = Kaphila's (/api/me) */
    char *cps;             /* dials per second, Twilio's CPS; 0 = only the budget paces */
    bool kaphila_key_account;   /* not from the file: a Kaphila-key account (keyauth.h) */
} config_account;

typedef struct config {
    /* [listen] */
    char *listen_address;        /* listen.address   = 127.0.0.1 */
    int   listen_port;           /* listen.port      = 8080 (0 = any free port) */
    int   http_threads;          /* listen.threads   = 2 */
    int   max_per_client;        /* listen.max_per_client = 1024 (0 = no limit) */
    int   head_timeout_ms;       /* listen.head_timeout_ms = 10000 */
    char *limit_exempt;          /* listen.limit_exempt = "" (comma list of IP addresses) */
    char *public_url;            /* public_url       = "" → http://<listen.address>:<port> */
    /* [storage] */
    char *db_path;               /* db.path          = twigate.db */
    char *db_url;                /* db.url           = "" (empty: SQLite at db.path) */
    int   call_cache_entries;    /* db.call_cache_entries = 4096 (0 = no call cache) */
    /* [cluster] — instances sharing db.url (docs/scale-out.md §4) */
    char *cluster_instance_id;   /* cluster.instance_id = "" (<host name>:<listen.port>) */
    int   cluster_lease_ms;      /* cluster.lease_ms  = 3000 */
    int   cluster_renew_ms;      /* cluster.renew_ms  = 1000 (< lease_ms) */
    int   cluster_adopt_ms;      /* cluster.adopt_ms  = 500 */
    int   cluster_poll_ms;       /* cluster.poll_ms   = 200 */
    /* [kaphila] */
    char *kaphila_url;           /* kaphila.url      = sim */
    int   kaphila_timeout_ms;    /* kaphila.timeout_ms = 10000 */
    int   kaphila_connect_ms;    /* kaphila.connect_timeout_ms = 3000 */
    int   reconcile_quiet_ms;    /* kaphila.reconcile_quiet_ms = 300000 */
    int   reconcile_interval_ms; /* kaphila.reconcile_interval_ms = 10000 */
    int   hangup_retries;        /* kaphila.hangup_retries = 5 */
    int   hangup_backoff_ms;     /* kaphila.hangup_backoff_ms = 1000 */
    int   orphan_wait_ms;        /* kaphila.orphan_wait_ms = 30000 */
    int   kaphila_rate_window_ms;  /* kaphila.rate_window_ms = 3600000 */
    int   kaphila_me_interval_ms;  /* kaphila.me_interval_ms = 300000 */
    int   kaphila_credits_poll_ms; /* kaphila.credits_poll_ms = 5000 */
    /* [limits] */
    int   max_body_bytes;        /* limits.max_body_bytes = 65536 */
    int   max_params;            /* limits.max_params = 256 */
    int   max_twiml_bytes;       /* limits.max_twiml_bytes = 65536 */
    int   max_twiml_depth;       /* limits.max_twiml_depth = 16 */
    int   max_redirects;         /* limits.max_redirects = 100 (per call) */
    int   max_live_calls;        /* limits.max_live_calls = 20000 */
    int   max_connections;       /* limits.max_connections = 4096 */
    int   max_queue_time_s;      /* limits.max_queue_time_s = 86400 */
    int   engine_stall_ms;       /* limits.engine_stall_ms = 30000 */
    /* [webhook] */
    char *webhook_allow;         /* webhook.allow = "" (comma list of CIDRs/hosts; empty = all) */
    char *webhook_deny;          /* webhook.deny  = "" */
    int   webhook_max_response;  /* webhook.max_response_bytes = 1048576 */
    char *webhook_proxy;         /* webhook.proxy = "" (none; proxy environment ignored) */
    /* [log] */
    char *log_level;             /* log.level = info */
    bool  log_json;              /* log.json  = false */
    bool  log_access;            /* log.access = false (one line per HTTP request) */
    /* [metrics] */
    char *metrics_token;         /* metrics.token = "" (secret; empty = open) */
    /* [shutdown] */
    int   shutdown_grace_ms;     /* shutdown.grace_ms = 10000 */
    /* [play] — <Play> URL → Kaphila sound name (docs/twiml.md) */
    char *play_sound_map;        /* play.sound_map = "" (URL=sound,URL=sound) */
    char *play_sound_prefix;     /* play.sound_prefix = custom/ */
    /* [sim] — the built-in Kaphila simulator, used when kaphila.url = sim */
    char *sim_address;           /* sim.address = 127.0.0.1 */
    int   sim_port;              /* sim.port = 0 (any free port) */
    bool  sim_fast;              /* sim.fast = false */
    int   sim_ring_ms;           /* sim.ring_ms = 1000 */
    int   sim_answer_ms;         /* sim.answer_ms = 3000 */
    int   sim_tts_ms_per_char;   /* sim.tts_ms_per_char = 60 */
    int   sim_play_ms;           /* sim.play_ms = 3000 */
    int   sim_kept_calls;        /* sim.kept_calls = 10000 */
    int   sim_rate_limit;        /* sim.rate_limit = 0 (unlimited) */
    int   sim_rate_window_ms;    /* sim.rate_window_ms = 3600000 */
    int   sim_credits;           /* sim.credits = 100000 */
    char *sim_outcomes;          /* sim.outcomes = 0001=busy,0002=no-answer,0003=failed,0004=machine */
    char *sim_admin_token;       /* sim.admin_token = "" (secret) */
    /* [accounts] */
    bool  kaphila_keys;          /* accounts.kaphila_keys = false (keyauth.h) */
    /* [console] (issue 20) */
    bool  console_enabled;       /* console.enabled = false (docs/console.md) */
    /* accounts */
    config_account *accounts;
    size_t          n_accounts;
    /* Accounts not in the file (Kaphila-key accounts, keyauth.h): main.c
     * sets the hook on every config before publishing it, and
     * config_account_by_sid asks it for a SID the file does not have. */
    const config_account *(*account_hook)(void *ctx, const char *sid);
    void *account_hook_ctx;
} config;

/* Defaults only. NULL on out-of-memory. */
config *config_create(void);
void    config_destroy(config *c);   /* accepts NULL */

/* Each returns 0 on success or -1 with one line in err naming the key (and
 * the file line when there is one), e.g.
 * "twigate.conf:12: listen.port: 70000 is out of range (0..65535)". */
__attribute__((warn_unused_result))
int config_load_file(config *c, const char *path, char *err, size_t errlen);
/* The same, from memory (text need not be NUL-terminated); name is used in
 * messages in place of the file name (NULL → "<string>"). */
__attribute__((warn_unused_result))
int config_load_string(config *c, const char *text, size_t len, const char *name,
                       char *err, size_t errlen);
/* envp as main's third argument or environ; NULL = no environment.
 * TWIGATE_ variables outside the key namespace (TWIGATE_BUILD …) are ignored;
 * inside it (TWIGATE_LISTEN_…, TWIGATE_ACCOUNT_…) an unknown one is an error. */
__attribute__((warn_unused_result))
int config_apply_env(config *c, char *const *envp, char *err, size_t errlen);
__attribute__((warn_unused_result))
int config_set(config *c, const char *key, const char *value, char *err, size_t errlen);
/* Cross-key checks (at least one account, SIDs well-formed, unique SIDs and
 * keys, api_key_secret with api_key_sid …); fills derived values such as
 * public_url. Call once after all sources. With listen.port = 0 and no
 * public_url, public_url stays "" until config_bind_port. */
__attribute__((warn_unused_result))
int config_finish(config *c, char *err, size_t errlen);
/* config_finish minus the demand for an account, for --print-config: it
 * shows the effective values (the defaults, with no file) of a
 * configuration that has no account yet. Never start a daemon on it. */
__attribute__((warn_unused_result))
int config_finish_print(config *c, char *err, size_t errlen);
/* After binding: when listen.port was 0, records the port actually bound and
 * derives public_url if it was left empty. No-op when listen.port was set.
 * Call on every config built (reloads too) before config_reload_compatible
 * or publishing it. */
__attribute__((warn_unused_result))
int config_bind_port(config *c, int port, char *err, size_t errlen);

/* The effective config as a loadable file, secrets replaced by "********". */
void config_print(const config *c, FILE *out);
/* Every key with its type, default, bounds and description. */
void config_print_help(FILE *out);

/* The file's account of sid, else the account_hook's, else NULL. */
const config_account *config_account_by_sid(const config *c, const char *sid);
/* The account whose api_key_sid is sk, or NULL. */
const config_account *config_account_by_key_sid(const config *c, const char *sk);
/* True when a key is reloadable on SIGHUP (accounts, log.*, webhook.*,
 * limits.max_redirects …); false for listen.*, db.path, kaphila.url, sim.*. */
bool config_key_reloadable(const char *key);
/* Compares the non-reloadable keys of two configs; fills err with the first
 * key that differs and returns false if any does. */
bool config_reload_compatible(const config *old_c, const config *new_c, char *err, size_t errlen);

/* The key table, for tests and generated docs: i in [0, config_key_count()).
 * Account keys are named as templates ("account.<name>.sid") and have no
 * default (NULL). Returned strings are static. */
size_t      config_key_count(void);
const char *config_key_name(size_t i);
const char *config_key_default(size_t i);

#endif
