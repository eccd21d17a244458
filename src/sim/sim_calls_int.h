/* sim_calls_int — the simulated call's struct and the helpers its two files
 * share: sim_calls.c (table, transcript, events, recordings, state machine)
 * and sim_verbs.c (playback, gather, digits, JSON views). Private to
 * src/sim/; everything here lives on the sim loop thread. A call owns its
 * strings, playbacks, events, transcript lines and timers. */
#ifndef TWIGATE_SIM_CALLS_INT_H
#define TWIGATE_SIM_CALLS_INT_H

#include "sim_int.h"

/* "the far end presses the keys ~100 ms apart" */
#define DIGIT_GAP_MS 100
#define AMD_CONFIDENCE 0.9

typedef enum { CS_DIALING, CS_RINGING, CS_ANSWERED, CS_ENDED } call_state;
typedef enum { OUT_HUMAN, OUT_MACHINE, OUT_BUSY, OUT_NO_ANSWER, OUT_FAILED } outcome;

typedef struct playback {
    struct playback *next;
    char             id[32];
    char            *text;      /* /voice and gather prompts */
    char            *file;      /* /play */
    unsigned         gather_gen; /* non-zero: the prompt of that gather */
    int64_t          ms;
} playback;

/* One transcript line, in one allocation: the text is kept, not JSON
 * objects, because every call keeps its transcript (up to cfg.kept_calls
 * of them once ended) and most are never read. */
typedef struct tline {
    int64_t     t_ms;
    int         status;     /* a request's answer */
    const char *event;      /* an event's name (a literal); NULL for a request */
    char        data[];     /* event: its JSON as posted; request: method\0path\0body */
} tline;

typedef struct event {
    struct event *next;
    sim_call     *call;
    char         *body;
} event;

struct sim_call {
    sim        *s;
    sim_call   *prev, *next;        /* creation order */
    char        id[SIM_CALL_ID_SIZE];
    char        sid[64];            /* CallSid from the webhookUrl, "" if none */
    char       *number;
    char       *caller_id;
    char       *webhook;
    char       *voice;
    bool        use_amd;
    int         ring_timeout_s;
    int         key;
    outcome     out;
    call_state  state;
    const char *status;             /* "ringing", "answered", then the final status */
    int64_t     created_mono;
    int64_t     created_wall;
    int64_t     answered_mono;
    int64_t     ended_mono;
    json_t     *amd;                /* {status, confidence, cause} when AMD ran */

    bool        rec_started;
    bool        rec_active;
    int         rec_duration;       /* seconds, once stopped (sim_rec.c keeps the audio) */

    loop_timer *t_main;             /* ring / outcome / amd */
    loop_timer *t_max;              /* hard max call length */
    loop_timer *t_play;             /* the current playback's end */
    loop_timer *t_gather;           /* digit timeout */
    loop_timer *t_digit;            /* next far-end key press */

    playback   *pb_head, *pb_tail, *playing;
    size_t      pb_len;

    bool        gather_active;
    bool        gather_prompt_done;
    unsigned    gather_gen;
    int         gather_num;
    int         gather_timeout_ms;
    char        gather_digits[SIM_MAX_GATHER + 1];

    char        digits[SIM_MAX_DIGITS + 1];
    size_t      digits_pos;

    event      *ev_head, *ev_tail;
    CURL       *easy;               /* posts the call's events, one after another; reused */
    bool        posting;
    bool        orphan;             /* detached from the table; freed when its POST ends */
    bool        waiting;            /* on the table's wait list: events queued, no slot */
    sim_call   *wait_prev, *wait_next;

    tline     **lines;              /* the transcript, in order (events and requests) */
    size_t      n_lines, cap_lines;
};


/* sim_calls.c */
/* Queues an event (name plus extra fields, stolen) for the call's webhook. */
void sim_call_emit(sim_call *c, const char *name, json_t *extra);
void sim_playback_free(playback *p);   /* accepts NULL */
/* Kaphila's names for the call's recording: "rec-<callId>" and its file. */
void sim_call_rec_names(const sim_call *c, char id[SIM_CALL_ID_SIZE + 8],
                        char file[SIM_CALL_ID_SIZE + 8]);
json_t *sim_call_recording_obj(const sim_call *c);   /* {filename, recordingId, active} */
char *sim_dup_or_null(const char *s);

#endif
