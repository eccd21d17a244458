/* main.c — twigate's entry point: configuration, start-up order, signals.
 *
 * Threads (all named): "main" waits for signals; MHD's pool serves HTTP;
 * "engine" runs calls and webhooks; "rec-mp3" encodes recording media to
 * MP3 on request (stopped after the engine, before the HTTP server, so it
 * answers what it holds); with kaphila.url = sim, the embedded
 * simulator adds its own HTTP pool and its "sim" loop. Signals are blocked
 * in every thread and taken synchronously here with sigtimedwait, which
 * also wakes main once a second to look at the engine's liveness
 * (watch_engine: a loop turn past limits.engine_stall_ms is logged):
 *   SIGTERM/SIGINT  drain: refuse new calls, finish deliveries within
 *                   shutdown.grace_ms, stop, exit 0 (state is in SQLite);
 *   SIGHUP          reload the reloadable keys (accounts, log, webhook
 *                   policy …); an invalid or incompatible file is refused
 *                   and the running config kept. */
#include <ctype.h>
#include <curl/curl.h>
#include <libxml/parser.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/app.h"
#include "store/callcache.h"
#include "conf/config.h"
#include "engine/engine.h"
#include "net/httpd.h"
#include "http/keyauth.h"
#include "base/log.h"
#include "base/metrics.h"
#include "engine/recordings.h"
#include "http/rest.h"
#include "sim/sim.h"
#include "console/console.h"
#include "store/cluster.h"
#include "store/store.h"
#include "base/timefmt.h"

#define TWIGATE_VERSION "1.0.0"
/* At SIGTERM, idle keep-alive connections are closed once no request has
 * been seen for this long: long enough for a client in the middle of
 * reusing one, short enough not to hold up a restart. */
#define DRAIN_QUIET_MS 500
/* --set may be repeated; more than this is a typo loop, not a config. */
#define MAX_SETS 256

typedef struct options {
    const char *config_path;
    const char *sets[MAX_SETS];
    int         n_sets;
    bool        print_config;
    bool        migrate;      /* --migrate: bring the schema up to date, exit */
} options;

extern char **environ;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: twigate [--config FILE] [--set key=value]... [--print-config | --migrate]\n"
            "       twigate --help | --version\n\n"
            "Serves Twilio's Voice REST API (2010-04-01) on top of Kaphila.\n"
            "Configuration: FILE, then TWIGATE_<KEY> environment variables, then --set\n"
            "(later wins). --print-config prints the effective configuration (secrets\n"
            "masked) and exits. --migrate brings the database's schema (db.url, or\n"
            "SQLite at db.path) to this version and exits; a start does it too.\n"
            "Keys:\n\n");
    config_print_help(out);
}

static int parse_args(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        if (!strcmp(a, "--version")) { printf("twigate %s\n", TWIGATE_VERSION); exit(0); }
        if (!strcmp(a, "--print-config")) { o->print_config = true; continue; }
        if (!strcmp(a, "--migrate")) { o->migrate = true; continue; }
        if ((!strcmp(a, "--config") || !strcmp(a, "-c")) && i + 1 < argc) { o->config_path = argv[++i]; continue; }
        if (!strncmp(a, "--config=", 9)) { o->config_path = a + 9; continue; }
        if ((!strcmp(a, "--set") || !strcmp(a, "-s")) && i + 1 < argc) {
            if (o->n_sets >= MAX_SETS) { fprintf(stderr, "twigate: too many --set options\n"); return -1; }
            o->sets[o->n_sets++] = argv[++i];
            continue;
        }
        if (!strncmp(a, "--set=", 6)) {
            if (o->n_sets >= MAX_SETS) { fprintf(stderr, "twigate: too many --set options\n"); return -1; }
            o->sets[o->n_sets++] = a + 6;
            continue;
        }
        fprintf(stderr, "twigate: unknown argument '%s' (try --help)\n", a);
        return -1;
    }
    return 0;
}

/* Builds a config from every source; NULL with one line in err. */
static config *load_config(const options *o, char *err, size_t errlen)
{
    config *c = config_create();
    if (!c) { snprintf(err, errlen, "out of memory"); return NULL; }
    if (o->config_path && config_load_file(c, o->config_path, err, errlen)) goto fail;
    if (config_apply_env(c, environ, err, errlen)) goto fail;
    for (int i = 0; i < o->n_sets; i++) {
        char key[256];
        const char *eq = strchr(o->sets[i], '=');
        if (!eq || eq == o->sets[i] || (size_t)(eq - o->sets[i]) >= sizeof key) {
            snprintf(err, errlen, "--set %s: expected key=value", o->sets[i]);
            goto fail;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->sets[i]), o->sets[i]);
        if (config_set(c, key, eq + 1, err, errlen)) goto fail;
    }
    /* --print-config shows the defaults even before any account exists. */
    /* --print-config shows the defaults even before any account exists, and
     * --migrate needs none either. */
    if ((o->print_config || o->migrate ? config_finish_print : config_finish)(c, err, errlen))
        goto fail;
    return c;
fail:
    config_destroy(c);
    return NULL;
}

static void apply_logging(const config *c)
{
    log_level lvl = LOG_INFO;
    (void)log_level_parse(c->log_level, &lvl);
    log_setup(lvl, c->log_json);
}

static sim *start_sim(const config *c, char *url, size_t urlsize, char *err, size_t errlen)
{
    sim_config sc;
    const char *keys[CONFIG_MAX_ACCOUNTS];
    sim *s;
    sim_config_defaults(&sc);
    for (size_t i = 0; i < c->n_accounts; i++) keys[i] = c->accounts[i].kaphila_key;
    sc.api_keys = keys;
    sc.n_api_keys = c->n_accounts;
    sc.bind_address = c->sim_address;
    sc.port = c->sim_port;
    sc.fast = c->sim_fast;
    sc.ring_ms = c->sim_ring_ms;
    sc.answer_ms = c->sim_answer_ms;
    sc.tts_ms_per_char = c->sim_tts_ms_per_char;
    sc.play_ms = c->sim_play_ms;
    sc.kept_calls = c->sim_kept_calls;
    sc.rate_limit = c->sim_rate_limit;
    sc.rate_window_ms = c->sim_rate_window_ms;
    sc.credits = c->sim_credits;
    sc.outcomes = c->sim_outcomes;
    sc.admin_token = c->sim_admin_token && *c->sim_admin_token ? c->sim_admin_token : NULL;
    s = sim_create(&sc, err, errlen);
    if (s) snprintf(url, urlsize, "http://%s:%d", c->sim_address, sim_port(s));
    return s;
}

static void reload(app *a, const options *o)
{
    char err[512];
    config *next = load_config(o, err, sizeof err);
    const config *cur = app_config(a);
    if (!next) {
        log_error("main", "SIGHUP: new configuration refused, keeping the old one: %s", err);
        return;
    }
    if (config_bind_port(next, http_port(a->http), err, sizeof err) ||
        !config_reload_compatible(cur, next, err, sizeof err)) {
        log_error("main", "SIGHUP: refused (%s); keeping the old configuration", err);
        config_destroy(next);
        return;
    }
    if (a->n_retired >= APP_MAX_RETIRED_CONFIGS) {
        log_error("main", "SIGHUP: too many reloads without a restart (%d); restart twigate",
                  APP_MAX_RETIRED_CONFIGS);
        config_destroy(next);
        return;
    }
    if (a->sim) {
        /* The embedded Kaphila must know the keys of added accounts. */
        const char *keys[CONFIG_MAX_ACCOUNTS];
        for (size_t i = 0; i < next->n_accounts; i++) keys[i] = next->accounts[i].kaphila_key;
        if (!sim_add_keys(a->sim, keys, next->n_accounts))
            log_warn("main", "SIGHUP: the simulator did not take the new accounts' keys");
    }
    next->account_hook = keyauth_account;
    next->account_hook_ctx = a->keyauth;
    a->retired[a->n_retired++] = cur;
    atomic_store_explicit(&a->cfg, next, memory_order_release);
    apply_logging(next);
    log_info("main", "configuration reloaded (%zu accounts)", next->n_accounts);
}

/* --print-config: the effective config on stdout, nothing started. */
static int print_config(config *cfg)
{
    config_print(cfg, stdout);
    if (cfg->n_accounts == 0)
        fprintf(stderr, "twigate: no account defined yet; the daemon needs one to start\n");
    config_destroy(cfg);
    return 0;
}

/* Process-wide set-up before any thread: every thread created from here
 * inherits the blocked set, so signals reach only main's sigwait. */
static int init_process(sigset_t *sigs)
{
    sigemptyset(sigs);
    sigaddset(sigs, SIGTERM);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_setname_np(pthread_self(), "main");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "twigate: libcurl initialisation failed\n");
        return -1;
    }
    xmlInitParser();
    return 0;
}

/* Metrics, the database and its call cache. */
static int open_state(app *a, config *cfg)
{
    char err[512];
    a->metrics = metrics_create();
    a->store = store_open_url(cfg->db_url, cfg->db_path, err, sizeof err);
    if (!a->metrics || !a->store) {
        fprintf(stderr, "twigate: %s: %s\n", cfg->db_url[0] ? "db.url" : "db.path",
                a->store ? "out of memory" : err);
        return -1;
    }
    /* Before any other thread uses the store; destroyed after it. */
    if (cfg->call_cache_entries > 0) {
        a->callcache = callcache_create((size_t)cfg->call_cache_entries);
        if (!a->callcache) {
            fprintf(stderr, "twigate: db.call_cache_entries: out of memory\n");
            return -1;
        }
        store_set_callcache(a->store, a->callcache);
    }
    return 0;
}

/* Kaphila's URL: the configured one, or the embedded simulator started now. */
static int start_kaphila(app *a, const config *cfg)
{
    char err[512];
    if (!strcmp(cfg->kaphila_url, "sim")) {
        a->sim = start_sim(cfg, a->kaphila_url, sizeof a->kaphila_url, err, sizeof err);
        if (!a->sim) {
            fprintf(stderr, "twigate: sim: %s\n", err);
            return -1;
        }
    } else {
        snprintf(a->kaphila_url, sizeof a->kaphila_url, "%s", cfg->kaphila_url);
    }
    return 0;
}

/* The MP3 encoder, key accounts and the engine (created, not yet running). */
static int create_engine(app *a, config *cfg)
{
    char err[512];
    if (!(a->mp3 = rec_mp3_create())) {
        fprintf(stderr, "twigate: cannot start the MP3 encoder thread\n");
        return -1;
    }
    /* Before the engine, which reloads the live calls of bound accounts. */
    a->keyauth = keyauth_create(a, err, sizeof err);
    if (!a->keyauth) {
        fprintf(stderr, "twigate: accounts: %s\n", err);
        return -1;
    }
    cfg->account_hook = keyauth_account;
    cfg->account_hook_ctx = a->keyauth;
    a->engine = engine_create(a, err, sizeof err);
    if (!a->engine) {
        fprintf(stderr, "twigate: %s\n", err);
        return -1;
    }
    /* The console (docs/console.md): its routes go before the REST API's. */
    if (cfg->console_enabled && !(a->console = console_create(a, err, sizeof err))) {
        fprintf(stderr, "twigate: console: %s\n", err);
        return -1;
    }
    return 0;
}

/* A shared database (db.url): this instance registers under its name
 * (cluster.instance_id, or <host name>:<port>) before the engine recovers
 * the calls that name owns (docs/scale-out.md §4). A restart under the same
 * name waits out the lease of its previous life, at most lease_ms + 1 s. */
_Static_assert(CONFIG_MAX_INSTANCE_ID < STORE_INSTANCE_LEN, "an instance name fits the store's");

static int join_cluster(app *a, const config *cfg)
{
    char id[STORE_INSTANCE_LEN], host[64] = "", err[512];
    if (!store_shared(a->store)) return 0;
    if (cfg->cluster_instance_id[0]) {
        snprintf(id, sizeof id, "%s", cfg->cluster_instance_id);
    } else {
        if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "twigate");
        for (char *p = host; *p; p++)   /* config.c's alphabet for instance names */
            if (!isalnum((unsigned char)*p) && !strchr("-_.", *p)) *p = '_';
        snprintf(id, sizeof id, "%s:%d", host, http_port(a->http));
    }
    if (store_instance_join(a->store, id, TWIGATE_VERSION, cfg->cluster_lease_ms,
                            cfg->cluster_lease_ms + 1000, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "twigate: cluster: %s\n", err);
        return -1;
    }
    log_info("main", "joined the cluster as instance %s", id);
    return 0;
}

/* The REST server, then (the port now known) public_url, then the engine. */
static int start_serving(app *a, config *cfg)
{
    char err[512];
    http_config hc = {
        .address = cfg->listen_address, .port = cfg->listen_port, .threads = cfg->http_threads,
        .max_body = (size_t)cfg->max_body_bytes, .max_connections = cfg->max_connections,
        .max_per_client = cfg->max_per_client, .head_timeout_ms = cfg->head_timeout_ms,
        .limit_exempt = cfg->limit_exempt,
        .routes = a->console ? console_routes(a->console, rest_routes()) : rest_routes(),
        .not_found = rest_not_found, .ctx = a, .observe = rest_observe,
        .access = rest_access,
    };
    a->http = http_start(&hc, err, sizeof err);
    if (!a->http) {
        fprintf(stderr, "twigate: listen: %s\n", err);
        return -1;
    }
    /* With listen.port = 0 only now is the port known, and with it the
     * default public_url. */
    if (config_bind_port(cfg, http_port(a->http), err, sizeof err)) {
        fprintf(stderr, "twigate: %s\n", err);
        return -1;
    }
    snprintf(a->public_url, sizeof a->public_url, "%s", cfg->public_url);
    if (join_cluster(a, cfg) != 0) return -1;
    if (engine_start(a->engine) != 0) {
        fprintf(stderr, "twigate: cannot start the engine\n");
        return -1;
    }
    printf("twigate %s listening on http://%s:%d (public URL %s)\n", TWIGATE_VERSION,
           cfg->listen_address, http_port(a->http), a->public_url);
    printf("Kaphila: %s%s\n", a->kaphila_url, a->sim ? " (built-in simulator)" : "");
    fflush(stdout);
    log_info("main", "ready: %zu account(s), database %s", cfg->n_accounts,
             cfg->db_url[0] ? "postgresql (db.url)" : cfg->db_path);
    return 0;
}

/* The engine's liveness, looked at once a second: a loop turn longer than
 * limits.engine_stall_ms (a database call that does not return, say) holds
 * every Kaphila event, REST request and timer behind it, and nothing inside
 * the engine can say so. Logged once when it passes the limit and once when
 * the loop turns again; /healthz answers 503 meanwhile (rest.c), so that a
 * supervisor restarts the process and recovery takes the calls on. */
static void watch_engine(app *a, int64_t *stalled_ms)
{
    int64_t busy = engine_stalled_ms(a->engine);
    if (busy) {
        if (!*stalled_ms) {
            metrics_inc(a->metrics, "twigate_engine_stalls_total", NULL, 1);
            log_error("main", "the engine's loop has been in one turn for %lld ms"
                      " (limits.engine_stall_ms = %d): Kaphila's events, REST requests and"
                      " timers wait behind it; /healthz answers 503", (long long)busy,
                      app_config(a)->engine_stall_ms);
        }
        *stalled_ms = busy;
    } else if (*stalled_ms) {
        log_warn("main", "the engine's loop turns again after a turn of at least %lld ms",
                 (long long)*stalled_ms);
        *stalled_ms = 0;
    }
}

/* Serves until SIGTERM or SIGINT (returned); SIGHUP reloads; between
 * signals, the engine's liveness every second. */
static int wait_for_stop(app *a, const options *o, const sigset_t *sigs)
{
    int64_t stalled_ms = 0;
    for (;;) {
        struct timespec second = {1, 0};
        int sig = sigtimedwait(sigs, NULL, &second);
        if (sig < 0) {   /* EAGAIN: the second passed; EINTR: again */
            watch_engine(a, &stalled_ms);
            continue;
        }
        if (sig == SIGHUP) {
            reload(a, o);
            continue;
        }
        return sig;
    }
}

/* Drain: refuse new connections, close the open ones after their next
 * answer, and let deliveries finish, all within the grace. */
static void drain(app *a)
{
    int64_t deadline = timefmt_mono_ms() + app_config(a)->shutdown_grace_ms;
    console_stop(a->console);   /* its open event streams would hold the drain */
    http_quiesce(a->http);
    while (timefmt_mono_ms() < deadline &&
           (!http_drained(a->http, DRAIN_QUIET_MS) || engine_inflight_deliveries(a->engine) > 0)) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Stops and frees whatever was started, in the reverse order; NULL parts
 * were never started. */
static void teardown(app *a)
{
    if (a->http) http_quiesce(a->http);
    if (a->engine) {
        engine_stop(a->engine, 0);
        engine_destroy(a->engine);
    }
    rec_mp3_stop(a->mp3);   /* answers what it holds before the server stops */
    console_stop(a->console);   /* likewise */
    http_stop(a->http);
    console_destroy(a->console);
    rec_mp3_destroy(a->mp3);
    keyauth_destroy(a->keyauth);
    sim_destroy(a->sim);
    store_close(a->store);
    callcache_destroy(a->callcache);
    metrics_destroy(a->metrics);
    for (int i = 0; i < a->n_retired; i++) config_destroy((config *)a->retired[i]);
    config_destroy((config *)app_config(a));
    xmlCleanupParser();
    curl_global_cleanup();
}

/* --migrate: opening the store migrates it (both backends); nothing else
 * starts. 0 when the schema is current. */
static int migrate(config *cfg)
{
    char err[512];
    apply_logging(cfg);
    store *s = store_open_url(cfg->db_url, cfg->db_path, err, sizeof err);
    if (!s) {
        fprintf(stderr, "twigate: %s: %s\n", cfg->db_url[0] ? "db.url" : "db.path", err);
        config_destroy(cfg);
        return 1;
    }
    printf("twigate: %s database schema is current\n", store_backend_name(s));
    store_close(s);
    config_destroy(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    options o = {0};
    app a = {0};
    char err[512];
    sigset_t sigs;
    int rc = 1;

    if (parse_args(argc, argv, &o)) return 2;
    config *cfg = load_config(&o, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "twigate: %s\n", err);
        return 2;
    }
    if (o.print_config)
        return print_config(cfg);
    if (o.migrate)
        return migrate(cfg);
    atomic_store(&a.cfg, cfg);
    apply_logging(cfg);
    a.started_ms = timefmt_now_ms();
    if (init_process(&sigs) != 0)
        return 1;

    if (open_state(&a, cfg) || start_kaphila(&a, cfg) || create_engine(&a, cfg) ||
        start_serving(&a, cfg))
        goto out;
    int sig = wait_for_stop(&a, &o, &sigs);
    log_info("main", "signal %d: draining (grace %d ms)", sig, app_config(&a)->shutdown_grace_ms);
    atomic_store(&a.draining, true);
    rc = 0;
    drain(&a);
out:
    teardown(&a);
    if (rc == 0) log_info("main", "stopped cleanly");
    return rc;
}
