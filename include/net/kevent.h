/* kevent — Kaphila's webhook events, validated at the edge into a typed
 * struct, and what they mean in Twilio's terms (Kaphila's API documentation v2.0.0,
 * docs/kaphila.md). Kaphila's payloads are loosely specified: unknown
 * fields are ignored, wrong types read as absent, and nothing here trusts a
 * field's presence. Pure functions, any thread. */
#ifndef TWIGATE_KEVENT_H
#define TWIGATE_KEVENT_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

typedef enum {
    KE_OTHER = 0,          /* an event twigate does not act on (kept, logged) */
    KE_INITIATED, KE_ANSWERED, KE_ENDED,
    KE_DTMF, KE_GATHER, KE_TTS_PLAYED, KE_RECORDING,
} kevent_kind;

#define KEVENT_NAME_LEN 48

typedef struct kevent {
    kevent_kind kind;
    char        name[KEVENT_NAME_LEN];   /* as sent, truncated */
    /* call.answered / call.ended */
    bool        has_amd;
    char        amd_status[16];          /* HUMAN, MACHINE, NOTSURE, UNKNOWN, NOAMD; "" */
    int64_t     amd_ms;                  /* amd.durationMs, 0 when absent */
    /* call.ended */
    bool        was_answered;
    int         hangup_cause;            /* Q.850, 0 = absent */
    char        status[24];              /* Kaphila's status word, "" = absent */
    char        end_reason[24];          /* endReason (busy, api_hangup …), "" = absent */
    int         duration;                /* callDuration (or duration) seconds, -1 = absent */
} kevent;

/* false when ev is not an object with a string "event". */
bool kevent_parse(json_t *ev, kevent *out);

/* The Twilio terminal status for a call.ended: answered → completed; a
 * hang-up twigate asked for before the answer → canceled; Q.850 17/21 busy,
 * 18/19 no-answer, 1/3/28 failed; else Kaphila's word when it is a Twilio
 * terminal status; else no-answer. */
const char *kevent_terminal_status(const kevent *k, bool seen_answered, bool cancel_requested);

/* Twilio's AnsweredBy for Kaphila's AMD status (NULL = no result). */
const char *kevent_answered_by(const char *amd_status, bool detect_message_end);

#endif
