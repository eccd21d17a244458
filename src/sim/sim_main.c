/* kaphila-sim — the Kaphila simulator as its own process (docs/simulator.md).
 * Parses flags into a sim_config, starts the sim, prints where it listens
 * and waits for SIGINT/SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "sim/sim.h"

/* --key may repeat; more keys than this is a configuration mistake. */
#define MAX_KEYS 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kaphila-sim --key KEY [--key KEY…] [options]\n"
            "  --address ADDR         bind address (default 127.0.0.1)\n"
            "  --port N               port (default 3000; 0 = any free port)\n"
            "  --key KEY              accepted Bearer API key (repeatable, at least one)\n"
            "  --admin-token TOKEN    lets non-loopback peers use the /sim/ control API\n"
            "  --fast                 divide every delay by 20 (floor 1 ms)\n"
            "  --ring-ms N            makecall → call.initiated (default 1000)\n"
            "  --answer-ms N          ringing → answer or failure (default 3000)\n"
            "  --tts-ms-per-char N    TTS length per character (default 60, min 500 ms)\n"
            "  --play-ms N            length of a /play sound (default 3000)\n"
            "  --outcomes LIST        number suffix → outcome (default\n"
            "                         0001=busy,0002=no-answer,0003=failed,0004=machine)\n"
            "  --rate-limit N         requests per key per window on call control\n"
            "                         (0 = unlimited, the default; at most 1000000)\n"
            "  --rate-window-ms N     the rate limit's sliding window (default 3600000,\n"
            "                         1..86400000)\n"
            "  --credits N            credits each key starts with, one spent per\n"
            "                         answered call (default 100000, 0..1000000000)\n"
            "  --recordings-dir DIR   also write each recording there as a WAV file\n"
            "                         (default: none, recordings are generated on download)\n"
            "  --kept-calls N         ended calls remembered for transcripts and\n"
            "                         GET /calls/:callId, oldest forgotten first\n"
            "                         (default 10000, at most 200000)\n"
            "  --log-level LEVEL      debug|info|warn|error (default warn)\n"
            "  --help\n");
}

static bool parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv)
{
    enum { O_ADDR = 256, O_PORT, O_KEY, O_ADMIN, O_FAST, O_RING, O_ANSWER, O_TTS, O_PLAY,
           O_OUTCOMES, O_RATE, O_WINDOW, O_CREDITS, O_RECDIR, O_KEPT, O_LOG, O_HELP };
    static const struct option opts[] = {
        {"address", required_argument, NULL, O_ADDR},
        {"port", required_argument, NULL, O_PORT},
        {"key", required_argument, NULL, O_KEY},
        {"admin-token", required_argument, NULL, O_ADMIN},
        {"fast", no_argument, NULL, O_FAST},
        {"ring-ms", required_argument, NULL, O_RING},
        {"answer-ms", required_argument, NULL, O_ANSWER},
        {"tts-ms-per-char", required_argument, NULL, O_TTS},
        {"play-ms", required_argument, NULL, O_PLAY},
        {"outcomes", required_argument, NULL, O_OUTCOMES},
        {"rate-limit", required_argument, NULL, O_RATE},
        {"rate-window-ms", required_argument, NULL, O_WINDOW},
        {"credits", required_argument, NULL, O_CREDITS},
        {"recordings-dir", required_argument, NULL, O_RECDIR},
        {"kept-calls", required_argument, NULL, O_KEPT},
        {"log-level", required_argument, NULL, O_LOG},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *keys[MAX_KEYS];
    size_t n_keys = 0;
    sim_config cfg;
    sim_config_defaults(&cfg);
    cfg.port = 3000;
    log_level lvl = LOG_WARN;
    int c;
    bool ok = true;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_ADDR: cfg.bind_address = optarg; break;
        case O_PORT: ok = parse_int(optarg, 0, 65535, &cfg.port); break;
        case O_KEY:
            if (n_keys == MAX_KEYS) {
                fprintf(stderr, "kaphila-sim: at most %d keys\n", MAX_KEYS);
                return 2;
            }
            keys[n_keys++] = optarg;
            break;
        case O_ADMIN: cfg.admin_token = optarg; break;
        case O_FAST: cfg.fast = true; break;
        case O_RING: ok = parse_int(optarg, 0, SIM_DELAY_MS_MAX, &cfg.ring_ms); break;
        case O_ANSWER: ok = parse_int(optarg, 0, SIM_DELAY_MS_MAX, &cfg.answer_ms); break;
        case O_TTS: ok = parse_int(optarg, 0, SIM_TTS_MS_PER_CHAR_MAX, &cfg.tts_ms_per_char); break;
        case O_PLAY: ok = parse_int(optarg, 0, SIM_DELAY_MS_MAX, &cfg.play_ms); break;
        case O_OUTCOMES: cfg.outcomes = optarg; break;
        case O_RATE: ok = parse_int(optarg, 0, SIM_RATE_LIMIT_MAX, &cfg.rate_limit); break;
        case O_WINDOW: ok = parse_int(optarg, 1, SIM_RATE_WINDOW_MS_MAX, &cfg.rate_window_ms); break;
        case O_CREDITS: ok = parse_int(optarg, 0, SIM_CREDITS_MAX, &cfg.credits); break;
        case O_RECDIR: cfg.recordings_dir = optarg; break;
        case O_KEPT: ok = parse_int(optarg, 0, SIM_MAX_KEPT_CALLS, &cfg.kept_calls); break;
        case O_LOG: ok = log_level_parse(optarg, &lvl); break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (!ok) {
            fprintf(stderr, "kaphila-sim: bad value '%s'\n", optarg);
            return 2;
        }
    }
    if (optind < argc || n_keys == 0) {
        fprintf(stderr, "kaphila-sim: %s\n",
                n_keys == 0 ? "at least one --key is required" : "unexpected argument");
        usage(stderr);
        return 2;
    }
    cfg.api_keys = keys;
    cfg.n_api_keys = n_keys;
    log_setup(lvl, false);

    /* Signals are taken synchronously by this thread; every thread the sim
     * starts inherits the blocked mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[256] = "";
    sim *s = sim_create(&cfg, err, sizeof err);
    if (!s) {
        fprintf(stderr, "kaphila-sim: %s\n", err);
        return 1;
    }
    const char *addr = cfg.bind_address;
    bool v6 = strchr(addr, ':') != NULL;
    printf("kaphila-sim listening on http://%s%s%s:%d\n", v6 ? "[" : "", addr, v6 ? "]" : "",
           sim_port(s));
    fflush(stdout);

    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    sim_destroy(s);
    return 0;
}
