/* sim — the built-in Kaphila simulator.
 *
 * An HTTP server that speaks Kaphila's API (its documentation v2.0.0,
 * summarised in docs/kaphila.md) on loopback and
 * posts Kaphila's JSON events to each call's webhookUrl, with realistic
 * timing (or a fast mode for tests), outcomes chosen by the destination
 * number, failure injection and a control API (docs/simulator.md). It runs
 * in-process in twigate when kaphila.url = sim, and as build/kaphila-sim.
 * Its own threads: net/httpd.h's (libmicrohttpd's pool, connguard's sweep),
 * and one loop ("sim") for timers and event posting. sim_create/sim_destroy
 * from one thread. */
#ifndef TWIGATE_SIM_H
#define TWIGATE_SIM_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sim sim;

/* Upper bound of sim_config.kept_calls (and of the sim.kept_calls setting):
 * a kept call is ~2.5 KB, and its recording must outlive it (sim_int.h). */
#define SIM_MAX_KEPT_CALLS 200000

/* The simulator's tunables: defaults and bounds, the one table read by
 * sim_config_defaults, config.c's sim.* keys and kaphila-sim's options
 * (which used to disagree). SIM_STR gives config.c's table the string form. */
#define SIM_RING_MS_DEFAULT         1000
#define SIM_ANSWER_MS_DEFAULT       3000
#define SIM_TTS_MS_PER_CHAR_DEFAULT 60
#define SIM_TTS_MIN_MS_DEFAULT      500
#define SIM_PLAY_MS_DEFAULT         3000
#define SIM_AMD_MS_DEFAULT          2500
#define SIM_KEPT_CALLS_DEFAULT      10000
#define SIM_OUTCOMES_DEFAULT        "0001=busy,0002=no-answer,0003=failed,0004=machine"
/* Upper bound of ring_ms, answer_ms and play_ms: ten minutes of simulated time. */
#define SIM_DELAY_MS_MAX            600000
#define SIM_TTS_MS_PER_CHAR_MAX     10000
/* Kaphila's per-key limit on call control (/makecall, /batchcall, /voice,
 * /play, /gather, /hangup): at most rate_limit requests accepted in any
 * rate_window_ms (a sliding window, docs/simulator.md); 0 = unlimited.
 * Kaphila's window is an hour; tests shorten it. The limit's cap bounds the
 * per-key ring of receipt times (8 bytes each, grown only as used). */
#define SIM_RATE_LIMIT_DEFAULT      0
#define SIM_RATE_LIMIT_MAX          1000000
#define SIM_RATE_WINDOW_MS_DEFAULT  3600000
#define SIM_RATE_WINDOW_MS_MAX      86400000
/* Credits each key starts with (and gets back on /sim/reset); one is spent
 * per answered call, as Kaphila does. */
#define SIM_CREDITS_DEFAULT         100000
#define SIM_CREDITS_MAX             1000000000
#define SIM_STR_(x) #x
#define SIM_STR(x)  SIM_STR_(x)

typedef struct sim_config {
    const char  *bind_address;    /* "127.0.0.1" */
    int          port;            /* 0 = pick a free port */
    const char *const *api_keys;  /* accepted Bearer keys */
    size_t       n_api_keys;
    const char  *admin_token;     /* control API from non-loopback peers; NULL = loopback only */
    bool         fast;            /* all delays divided by 20, floor 1 ms */
    int          ring_ms;         /* makecall → call.initiated(ringing) */
    int          answer_ms;       /* ringing → answered (or the failure) */
    int          tts_ms_per_char; /* playback length of /voice and /gather prompts */
    int          tts_min_ms;
    int          play_ms;         /* length of a /play sound */
    int          amd_ms;          /* MachineDetectionDuration reported */
    const char  *outcomes;        /* "0001=busy,0002=no-answer,0003=failed,0004=machine" */
    int          rate_limit;      /* per key per rate_window_ms, 0 = unlimited */
    int          rate_window_ms;  /* 1..SIM_RATE_WINDOW_MS_MAX */
    int          credits;         /* each key's initial credits */
    const char  *recordings_dir;  /* also keep recordings as WAV files there; NULL = in memory */
    int          kept_calls;      /* ended calls remembered, oldest forgotten first; */
                                  /* at most SIM_MAX_KEPT_CALLS */
} sim_config;

/* Fills the defaults documented in docs/simulator.md. */
void sim_config_defaults(sim_config *c);
/* NULL on failure, with a reason in err. */
sim *sim_create(const sim_config *cfg, char *err, size_t errlen);
/* The bound port (useful when cfg->port was 0). */
int sim_port(const sim *s);
/* Accepts these Bearer keys from now on, in addition to the others (any
 * thread; used when twigate reloads its accounts). false = not queued. */
bool sim_add_keys(sim *s, const char *const *keys, size_t n);
/* Stops the server and the loop, frees everything; accepts NULL. */
void sim_destroy(sim *s);

#endif
