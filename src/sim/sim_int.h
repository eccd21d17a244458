/* sim_int — what the simulator's files share; not part of the public API.
 *
 * Threads: the HTTP threads (net/httpd.h's MHD pool) only touch sim_req
 * (the request they received) and the immutable parts of struct sim (config, keys, loop, closing flag).
 * Everything else — calls, keys' counters, injections, transcripts — lives
 * on the "sim" loop thread and is touched only there (or by sim_destroy
 * after that thread has been joined).
 *
 * Files: sim.c (lifecycle, its handler on net/httpd.h's glue, routing, auth, rate limit, injection,
 * latency, replies), sim_api.c (Kaphila endpoints), sim_control.c (/sim/...),
 * sim_calls.c (call table, state machine, events, transcripts), sim_verbs.c
 * (playback, gather, digits, JSON views; both share sim_calls_int.h),
 * sim_rec.c (recordings: the table, the WAV bytes, downloads), sim_keys.c
 * (each key's credits, sliding rate-limit window and counters), sim_map.c
 * (the string-keyed hash map of both tables). */
#ifndef TWIGATE_SIM_INT_H
#define TWIGATE_SIM_INT_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base/buf.h"
#include "net/httpd.h"
#include "net/loop.h"
#include "sim/sim.h"

/* Caps, each with its reason. */
#define SIM_MAX_BODY         65536    /* Kaphila bodies are tiny; a TTS text is < 4 KB */
#define SIM_MAX_LIVE_CALLS   50000    /* beyond it /makecall fails like a full trunk */
#define SIM_MAX_TRANSCRIPT   2000     /* events + requests kept per call; a loop of /voice can't grow memory */
#define SIM_MAX_PLAYBACKS    256      /* queued playbacks per call */
#define SIM_MAX_DIGITS       256      /* keys waiting to be pressed per call */
#define SIM_MAX_GATHER       64       /* numDigits upper bound */
#define SIM_MAX_RULES        64       /* failure-injection rules */
#define SIM_MAX_LATENCY_MS   60000    /* injected latency; beyond it clients just time out */
#define SIM_MAX_LISTED_ENDED 100000   /* /sim/listing: ended calls GET /calls may carry */
#define SIM_MAX_TEXT         4096     /* /voice and /gather text */
#define SIM_MAX_CALL_MS      (4LL * 3600 * 1000)   /* hard max call length, as a trunk would enforce */
#define SIM_EVENT_TIMEOUT_MS 5000     /* Kaphila's webhook timeout */
/* Event POSTs in flight at once, all calls together; the rest wait their
 * turn in the simulator. Each one in flight holds a connection to the
 * receiver (one call's events go one after another, but every call posts
 * at once), and a receiver slower than the calls' events — twigate's engine
 * behind a burst of creates — had the simulator open a connection per call
 * with an event due: over 4,000, past twigate's limits.max_connections,
 * which refused the rest. 256 throttled the sustained create (each event
 * waits for the engine's batched answer); 1024 kept up, far below 4,096. */
#define SIM_EVENT_WINDOW 1024
#define SIM_WAV_MAX_SECONDS  60       /* audio per recording (960 KB): a long call can't fill a disk */
#define SIM_MAX_RECORDINGS   200000   /* remembered (~100 B each), oldest forgotten first; */
                                      /* >= SIM_MAX_KEPT_CALLS, so a kept call's file is kept */
#define SIM_MAX_LISTED_FILES 1000     /* GET /recordings files[] */
#define SIM_WAV_BLOCK        32768    /* WAV bytes made at a time (MHD's send buffer, file writes) */
#define SIM_CALL_ID_SIZE     32
#define SIM_FAST_DIVISOR     20

typedef struct sim_call sim_call;

/* One HTTP request, from the HTTP handler to the loop. The handler owns it
 * until it suspends the connection and posts it; from then on the loop
 * owns it, answers hr through httpd (which resumes the connection) and
 * frees it. method and body are hr's: valid until that answer. */
typedef struct sim_req {
    int                    kind;       /* SIM_MSG_REQ; first member for dispatch */
    sim                   *s;
    http_req              *hr;
    const char            *method;
    char                  *path;       /* percent-decoded, one trailing '/' cut */
    char                  *bearer;     /* key from "Authorization: Bearer", or NULL */
    char                  *admin;      /* X-Sim-Admin-Token, or NULL */
    char                  *range;      /* Range header, or NULL */
    char                  *ctype;      /* Content-Type, or NULL */
    bool                   loopback;
    const buf             *body;
    int                    state;      /* SIM_REQ_* */
    struct sim_req        *dnext;      /* on the loop's delayed list while latency runs */
    struct sim_req        *dprev;
    loop_timer            *delay;
    /* The answer, filled on the loop. */
    unsigned               status;
    char                  *resp;       /* heap; JSON text unless resp_fd >= 0 */
    size_t                 resp_len;
    const char            *resp_type;
    int                    resp_fd;    /* file body: fd, offset, length */
    int                    wav_seconds; /* generated WAV body (sim_rec.c), -1 = none; */
    uint64_t               fd_off;      /* offset and length of a file or WAV body */
    uint64_t               fd_len;
    char                   content_range[96];
} sim_req;

enum { SIM_MSG_REQ = 1, SIM_MSG_KEYS = 2 };

/* sim_add_keys: keys to accept from now on (loop thread appends them). */
typedef struct sim_keys_msg {
    int     kind;       /* SIM_MSG_KEYS */
    char  **keys;
    size_t  n;
} sim_keys_msg;
enum { SIM_REQ_NEW = 0, SIM_REQ_PENDING, SIM_REQ_ANSWERED };

/* Endpoints counted per key (GET /sim/keys): the six Kaphila rate-limits,
 * then every other authenticated request. */
enum { SIM_EP_MAKECALL, SIM_EP_BATCHCALL, SIM_EP_VOICE, SIM_EP_PLAY, SIM_EP_GATHER,
       SIM_EP_HANGUP, SIM_EP_OTHER, SIM_EP_COUNT };

typedef struct sim_key {
    char   *key;
    double  credits;
    long    total_calls;
    long    successful_calls;
    int64_t created_ms;
    int64_t last_used_ms;
    /* The sliding window: loop-clock receipt times of the limited requests
     * accepted within the last rate_window_ms, oldest first, in a ring that
     * grows (doubling) up to rate_limit entries. */
    int     rate_limit;        /* from cfg; /sim/keys can change it */
    int     rate_window_ms;
    int64_t *win;
    size_t  win_cap;
    size_t  win_head;
    size_t  win_n;
    /* Counters since start or the last reset. */
    long    accepted[SIM_EP_COUNT];
    long    rate_limited;      /* 429s of the window */
    long    injected[5];       /* /sim/fail answers: 401, 402, 429, 500, 503 */
} sim_key;

typedef struct sim_rule {
    int  key;          /* index into keys, -1 = every key */
    int  status;
    long count;        /* -1 = until cleared */
    char endpoint[64]; /* "" = every endpoint */
} sim_rule;

struct sim {
    /* Immutable after sim_create. */
    sim_config  cfg;            /* strings point into the copies below */
    char       *bind_copy;
    char       *admin_copy;
    char       *outcomes_copy;
    char        recdir[512];    /* --recordings-dir; "" = recordings in memory only */
    loop       *loop;
    struct curl_slist *event_headers;   /* of every event POST; freed after the loop */
    http_server *http;
    int         port;
    atomic_bool closing;

    /* Loop thread only. */
    sim_key    *keys;
    size_t      n_keys;
    sim_rule    rules[SIM_MAX_RULES];
    size_t      n_rules;
    int         latency_all_ms;
    int        *latency_key_ms;   /* per key, -1 = use latency_all_ms */
    int         listed_ended;     /* /sim/listing: ended calls every GET /calls adds */
    sim_req    *delayed;          /* requests waiting out injected latency */
    struct sim_calls *calls;
    struct sim_recs  *recs;
    uint64_t    call_counter;
    uint64_t    playback_counter;
};

/* ---- sim.c: replies (loop thread) ---- */
/* Answers r with obj serialised (obj is stolen). */
void sim_reply_json(sim_req *r, unsigned status, json_t *obj);
/* Kaphila's error envelope; code may be NULL. */
void sim_reply_error(sim_req *r, unsigned status, const char *msg, const char *code);
/* Answers r with a file body; fd is handed over to r. */
void sim_reply_fd(sim_req *r, unsigned status, int fd, uint64_t off, uint64_t len);
/* Answers r with bytes [off, off + len) of the WAV of that many seconds,
 * generated by an HTTP thread as it sends them (sim_wav_read). */
void sim_reply_wav(sim_req *r, unsigned status, int seconds, uint64_t off, uint64_t len);
/* Parses r's body as a JSON object; on failure answers 400 and returns NULL. */
json_t *sim_req_json(sim_req *r);
/* Index of r's bearer key, or -1. */
int sim_key_index(const sim *s, const char *key);
int64_t sim_delay(const sim *s, int64_t ms);   /* fast-mode scaling */
void sim_iso_now(char out[32]);                /* ISO 8601 UTC with ms */
int64_t sim_wall_ms(void);                     /* CLOCK_REALTIME ms */
void sim_iso_ms(int64_t wall_ms, char out[32]);

/* ---- sim_keys.c: per-key state (loop thread, but sim_key_init/fini) ---- */
/* A new key (key is handed over) with cfg's credits and limits. */
void sim_key_init(const sim *s, sim_key *k, char *key);
void sim_key_fini(sim_key *k);
/* Counters, window, credits and limits back to cfg's. */
void sim_key_reset(const sim *s, sim_key *k);
/* The rate limit's verdict on a request to path received now: true =
 * accepted (counted in the window when path is limited), false = 429. */
bool sim_key_admit(sim *s, sim_key *k, const char *path);
/* Counts an accepted request / an injected failure of that status. */
void sim_key_count(sim_key *k, const char *path);
void sim_key_count_injected(sim_key *k, int status);
/* New limits (the ring keeps the newest entries that fit); -1 = no memory. */
int  sim_key_set_limit(sim_key *k, int limit, int window_ms);
/* GET /sim/keys entry of key index i (new reference). */
json_t *sim_key_json(const sim *s, size_t i);
/* Index of a key named by /sim/keys/{id}: the key itself, its keyId
 * "key_<n>" or n (1-based, as /api/me's id); -1 if none. */
int  sim_key_lookup(const sim *s, const char *id);
/* Adds a limited request refused with 429 to its call's transcript, when
 * its body names a call of key (makecall's have no call yet). */
void sim_key_note_refusal(sim *s, sim_req *r, int key);

/* ---- sim_api.c: Kaphila endpoints (loop thread) ---- */
/* key is the index of the authenticated key. Answers r. */
void sim_api_route(sim *s, sim_req *r, int key);
/* GET /health (no auth). */
void sim_api_health(sim *s, sim_req *r);

/* ---- sim_control.c: /sim/... (loop thread) ---- */
void sim_control_route(sim *s, sim_req *r);

/* ---- sim_calls.c: the call table and state machine (loop thread) ---- */
typedef struct sim_call_params {
    const char *number;
    const char *webhook;      /* NULL = events are recorded, not posted */
    const char *caller_id;
    const char *voice;
    bool        use_amd;
    int         ring_timeout_s;
    int         key;
} sim_call_params;

typedef enum {
    SIM_OK = 0,
    SIM_ERR_NOT_FOUND,      /* unknown or evicted call */
    SIM_ERR_ENDED,          /* call no longer live */
    SIM_ERR_NOT_ANSWERED,
    SIM_ERR_FULL,           /* a per-call cap */
    SIM_ERR_NOMEM,
    SIM_ERR_INVALID,
} sim_status;

int  sim_calls_create(sim *s);
void sim_calls_destroy(sim *s);
/* Forgets every call (timers cancelled, unsent events dropped). */
void sim_calls_reset(sim *s);
size_t sim_calls_live(const sim *s);
/* By Kaphila callId or by the CallSid found in its webhookUrl. */
sim_call *sim_call_find(const sim *s, const char *id);
sim_call *sim_call_originate(sim *s, const sim_call_params *p);
/* Adds r (as answered so far) to the call's transcript; with_body, its
 * body too (which must have parsed as JSON). */
void sim_call_note_request(sim_call *c, const sim_req *r, bool with_body);

const char *sim_call_id(const sim_call *c);
const char *sim_call_status(const sim_call *c);
bool        sim_call_live(const sim_call *c);
bool        sim_call_answered(const sim_call *c);
int         sim_call_key(const sim_call *c);

__attribute__((warn_unused_result))
sim_status sim_call_hangup_api(sim_call *c);
__attribute__((warn_unused_result))
sim_status sim_call_hangup_far(sim_call *c);
/* Queues a playback (text for TTS, else file); id_out receives its id. */
__attribute__((warn_unused_result))
sim_status sim_call_play(sim_call *c, const char *text, const char *file, char id_out[32]);
__attribute__((warn_unused_result))
sim_status sim_call_gather(sim_call *c, const char *text, int num_digits, int timeout_ms);
__attribute__((warn_unused_result))
sim_status sim_call_press(sim_call *c, const char *digits);
__attribute__((warn_unused_result))
sim_status sim_call_stop_recording(sim_call *c);

/* JSON views (new references). */
json_t *sim_call_summary(const sim_call *c);      /* GET /calls entries */
json_t *sim_call_detail(const sim_call *c);       /* GET /calls/:id */
json_t *sim_call_recording(const sim_call *c);    /* {callId, recordingId, filename, active}, NULL if none */
json_t *sim_call_transcript(const sim_call *c);   /* GET /sim/calls/:id */
json_t *sim_call_brief(const sim_call *c);        /* GET /sim/calls entries */
json_t *sim_call_log(const sim_call *c);          /* /api/call-logs entries */
/* Iterates calls in creation order (oldest first). */
sim_call *sim_calls_first(const sim *s);
sim_call *sim_calls_next(const sim_call *c);

/* ---- sim_map.c: string → pointer; keys are borrowed from the values ---- */
typedef struct sim_map {
    struct sim_map_ent **b;
    size_t nb;
    size_t n;
} sim_map;
int   sim_map_init(sim_map *m);
void  sim_map_fini(sim_map *m);     /* frees the entries, not the values */
void *sim_map_get(const sim_map *m, const char *key);
int   sim_map_put(sim_map *m, const char *key, void *v);    /* replaces; -1 = no memory */
void  sim_map_del(sim_map *m, const char *key, const void *v); /* only while key maps to v */

/* ---- sim_rec.c: recordings (loop thread, but the sim_wav_* helpers) ---- */
int  sim_recs_create(sim *s);
void sim_recs_destroy(sim *s);
/* The bridge recording of a call begins (no audio yet) / ends with that many
 * seconds of audio (at least 1, capped at SIM_WAV_MAX_SECONDS). Recordings
 * outlive their calls: /sim/reset and the eviction of ended calls keep them. */
void sim_rec_start(sim *s, const char *call_id);
void sim_rec_stop(sim *s, const char *call_id, int seconds);
/* Answers r with the recording's WAV (Range honoured), 404 when unknown. */
void sim_rec_download(sim *s, sim_req *r, const char *call_id);
/* The same by file name (rec-<callId>.wav; with --recordings-dir, any file
 * there). The name must have passed sim_rec_filename_ok. */
void sim_rec_download_file(sim *s, sim_req *r, const char *filename);
/* A name Kaphila's file endpoint accepts: *.wav, no '/', no "..". */
bool sim_rec_filename_ok(const char *name);
/* GET /recordings files[]: {filename, size, createdAt}, newest first. */
json_t *sim_recs_files(const sim *s);

/* The WAV of a recording of that many seconds (clamped to 0..SIM_WAV_MAX_SECONDS):
 * its size, and bytes [pos, pos + n) of it. Pure; any thread. */
uint64_t sim_wav_size(int seconds);
void sim_wav_read(int seconds, uint64_t pos, unsigned char *out, size_t n);
/* Writes that WAV to path, atomically (temp file + rename). */
__attribute__((warn_unused_result))
int sim_wav_write(const char *path, int seconds);

#endif
