/* exec_int — what the executor's files share; not part of the API (the
 * engine calls the executor through engine_int.h's exec_* entry points).
 *
 * Files: exec.c (helpers, the runner, <Redirect>, unsupported verbs, entry
 * points), exec_doc.c (documents), exec_speech.c (playbacks, <Say>, <Play>,
 * <Pause>), exec_gather.c, exec_record.c, exec_ckpt.c (checkpoints and the
 * resume after a restart). Everything here runs on the engine
 * loop; struct exec belongs to its call (call.x) and is freed by exec_free.
 * A document's verbs are owned by exec.doc; cursors and exec.g/exec.r point
 * into it and are reset by exec_doc_set. */
#ifndef TWIGATE_EXEC_INT_H
#define TWIGATE_EXEC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "base/buf.h"
#include "base/form.h"
#include "base/timefmt.h"
#include "engine_int.h"
#include "twiml/twiml.h"

/* ---------------------------------------------------------------- caps */

/* loop="0" means "until the call ends". Twilio caps <Play> there at 1000
 * iterations (contract §11.3); <Say> gets the same cap so that a forgotten
 * loop="0" cannot hold a call (and Kaphila's hourly request budget) forever. */
#define EXEC_LOOP_FOREVER 1000
/* Longest text sent in one /voice. Kaphila documents no limit and its
 * simulator takes 4096 bytes; longer merged speech is sent as several
 * requests, one after the other (each one is ~4 minutes of speech). */
#define EXEC_MAX_VOICE_TEXT 4000
/* When Kaphila's tts.played never comes, the next verb starts after this
 * fallback: 100 ms per character is slower than any TTS voice speaks
 * (~65 ms/char at 150 words a minute), plus slack for Kaphila's TTS latency,
 * so the timer never cuts real speech short. */
#define EXEC_TTS_MS_PER_CHAR 100
#define EXEC_TTS_SLACK_MS 2000
/* Kaphila does not say how long a sound file is. The fallback only matters
 * when an event is lost, and then a long silence beats talking over the
 * file; a minute covers any prompt. */
#define EXEC_PLAY_FALLBACK_MS 60000
/* The "beep" sound of <Record playBeep> is well under a second on Kaphila,
 * but Kaphila says nothing about a sound's length and the simulator plays
 * every file for sim.play_ms (3 s by default): a fallback of exactly that
 * fired with every beep, just before its tts.played. Twice that still ends
 * a lost event's wait quickly. */
#define EXEC_BEEP_FALLBACK_MS 6000
#define EXEC_BEEP_SOUND "beep"
/* Playbacks waiting for their tts.played, those of abandoned documents
 * included (Kaphila cannot stop a playback). One is in flight per document
 * at a time, so more pile up only when documents are replaced faster than
 * they play; past the cap the oldest is forgotten. */
#define EXEC_MAX_PLAYBACKS 64
/* Keys kept by one <Gather> with neither numDigits nor finishOnKey: far more
 * than any real entry. Reaching it ends the gather as numDigits would. */
#define EXEC_MAX_DIGITS 128
/* A Kaphila playbackId is short ("pb-17", a UUID); longer ones are not kept
 * and their playback is matched by order instead. */
#define EXEC_PLAYBACK_ID 64
/* Bytes of a text/plain answer read aloud: the same cap as a TwiML document,
 * which is what Twilio would have parsed instead. */
#define EXEC_MAX_PLAIN_TEXT(c) ((size_t)call_config(c)->max_twiml_bytes)

/* Twilio's default message when a call's application fails (contract §10.3). */
#define APP_ERROR_TEXT "We're sorry, an application error has occurred. Goodbye."

/* Notification codes (docs/twiml.md, "Notifications"). TwiML that Kaphila
 * cannot carry out is reported as 12200: Twilio's code for TwiML it will not
 * execute as written (it is also what the parser gives <Message>). */
#define CODE_UNSUPPORTED 12200
#define CODE_BAD_URL 11100
#define CODE_TOO_MANY_REDIRECTS 11215
#define CODE_CONTENT_TYPE 12300
#define LEVEL_ERROR 0
#define LEVEL_WARNING 1

/* Things reported once per call (bits of exec.reported). */
enum {
    REP_SAY_VOICE = 1 << 0,
    REP_PLAY_DIGITS = 1 << 1,
    REP_SPEECH = 1 << 2,
    REP_REC_TIMEOUT = 1 << 3,
    REP_REC_TRIM = 1 << 4,
    REP_REC_TRANSCRIBE = 1 << 5,
    REP_BARGE_IN = 1 << 6,
};

/* ---------------------------------------------------------------- state */

typedef enum {
    W_NONE,       /* running verbs (transient) */
    W_FETCH,      /* a TwiML document is being fetched */
    W_PLAYBACK,   /* a /voice or /play is playing (wait_serial) */
    W_PAUSE,      /* <Pause> timer */
    W_INPUT,      /* <Gather> timeout or <Record> window */
    W_DONE,       /* hung up, or the call ended */
} wait_kind;

typedef enum { M_NONE, M_GATHER, M_RECORD } mode_kind;

/* A position in a list of verbs. For <Say> and <Play>, iter counts the
 * loop iterations already sent; for <Say>, off is how much of the current
 * iteration's text went out when one text is longer than a /voice. */
typedef struct cursor {
    const twiml_verb *verbs;
    size_t n;
    size_t pc;
    int    iter;
    size_t off;
} cursor;

typedef struct playback {
    unsigned serial;
    char     id[EXEC_PLAYBACK_ID];   /* Kaphila's playbackId, "" until its answer */
} playback;

struct exec {
    call       *c;
    twiml_doc  *doc;            /* the current document (owned) */
    char       *doc_url;        /* its URL as requested; NULL for inline Twiml */
    char       *doc_method;
    unsigned    gen;            /* bumped by every fetch and abandonment */
    wait_kind   wait;
    mode_kind   mode;
    cursor      top;            /* the document */
    cursor      prompt;         /* the current <Gather>'s nested verbs */
    loop_timer *t_play;         /* playback fallback or <Pause> */
    loop_timer *t_input;        /* <Gather> timeout or <Record> maxLength */
    playback    pb[EXEC_MAX_PLAYBACKS];
    size_t      n_pb;
    unsigned    pb_serial;
    unsigned    wait_serial;    /* the playback W_PLAYBACK waits for (0 = none) */
    /* <Gather> */
    const twiml_gather *g;
    bool        g_prompts_done;
    char        digits[EXEC_MAX_DIGITS + 1];
    size_t      n_digits;
    /* <Record> */
    const twiml_record *r;
    bool        r_active;       /* the window is open (after the beep) */
    int64_t     r_start;        /* call_answered_ms() at the window's start */
    unsigned    reported;       /* REP_* */
    bool        ended;          /* exec_call_ended ran */
    /* Checkpoint (exec_ckpt.c): what a resume needs beyond the cursors. */
    char       *src;            /* the document as stored (JSON text), NULL = none yet */
    bool        src_dirty;      /* src changed since the last checkpoint write */
    cursor      pb_at;          /* where the playback waited for was sent from */
    bool        pb_in_prompt;   /* ... in the <Gather>'s prompt cursor */
    int64_t     due_ms;         /* wall clock end of the <Pause> or <Gather> timeout */
    char       *f_url;          /* the document fetch waited for (W_FETCH) */
    char       *f_method;
    json_t     *f_extra;        /* its extra parameters, [[key, value], ...] */
    bool        f_fallback;
    int64_t     ck_seq;         /* checkpoints written */
};

/* ---- exec.c: helpers */
/* The current document's URL and method for notifications: NULL when the
 * document did not come from a URL (inline Twiml, twigate's own). */
const char *exec_doc_url(const exec *x);
const char *exec_doc_method(const exec *x);
/* A call parameter as a non-empty string, else NULL. */
const char *exec_param_str(call *c, const char *key);
/* A 12200 notification plus an event-log line; detail is stolen. */
void exec_report(exec *x, int level, const char *msg, const char *what, json_t *detail);
/* True the first time bit (REP_*) is asked for on this call. */
bool exec_once(exec *x, unsigned bit);
bool exec_form_add(form *f, const char *k, const char *v);
/* ref resolved against base (NULL = none): a new http(s) URL or NULL. */
char *exec_url_resolve(const char *base, const char *ref);
/* The standard parameters; completed forces CallStatus=completed. */
bool exec_voice_params(exec *x, form *f, bool completed);
/* A timer holding a call reference until it fires or is stopped. */
bool exec_timer_start(exec *x, loop_timer **slot, int64_t ms, loop_timer_fn fn);
void exec_timer_stop(exec *x, loop_timer **slot);
void exec_hangup_as(exec *x, const char *why, bool routine);
void exec_hangup(exec *x, const char *why);
/* 11200 and hang-up: twigate itself could not go on (memory, a timer). */
void exec_internal_failure(exec *x, const char *what);
/* Runs verbs until something has to be waited for. */
void exec_run(exec *x);
/* The executor of c, created on first use (NULL: out of memory). */
exec *exec_get(call *c);

/* ---- exec_ckpt.c: checkpoints (docs/scale-out.md §3) */
/* The position moved: the call's checkpoint is written with the open batch. */
void exec_ckpt_mark(exec *x);
/* A document fetch starts: what a resume repeats if its answer is lost. */
void exec_ckpt_fetch(exec *x, const char *url, const char *method, const form *extra,
                     bool fallback);
/* The state part of a checkpoint (pure: unit-tested), and back onto an
 * exec whose document is set (false: it does not fit the document). */
json_t *exec_ckpt_encode(const exec *x, int redirects);
bool exec_ckpt_decode(exec *x, json_t *st, int *redirects);

/* ---- exec_doc.c: documents */
/* kind/body: the document's source as a checkpoint keeps it ("xml" and the
 * body as received; "say"/"play" and the text or URL of a synthetic one). */
void exec_doc_set(exec *x, twiml_doc *doc, const char *url, const char *method,
                  const char *kind, const char *body, size_t len);
/* A document of <Say text/> (or <Play url/>) then <Hangup/>. */
twiml_doc *exec_synth_doc(twiml_verb_kind kind, const char *s);
void exec_app_error(exec *x);
void exec_fetch_failed(exec *x, int code, const char *url, bool was_fallback);
twiml_doc *exec_parse(exec *x, const char *xml, size_t len, const char *url, const char *method,
                      int *code);
/* "text/xml; charset=utf-8" → "text/xml" in out, lower case. */
void exec_media_type(const char *ct, char *out, size_t n);
void exec_fetch_doc(exec *x, const char *url, const char *method, const form *extra,
                    bool fallback);
void exec_fetch_final(exec *x, const char *url, const char *method, const form *extra);
bool exec_follow_allowed(exec *x, const char *what);
char *exec_action_url(exec *x, const char *attr, const char *verb);

/* ---- exec_speech.c: playbacks, <Say>, <Play>, <Pause> */
bool exec_playback_send(exec *x, const char *path, const char *key, const char *value,
                        int64_t fallback_ms);
void exec_tts_played(exec *x, json_t *ev);
void exec_playback_abandon(exec *x);
/* True when b is empty or ends in punctuation (no ". " needed to join). */
bool exec_sentence_end(const buf *b);
/* Where to cut a text longer than room (a space, else a UTF-8 boundary). */
size_t exec_cut_point(const char *s, size_t room);
/* Merges the <Say> texts at cur into text (exec_speech.c says how). */
bool exec_say_merge(exec *x, cursor *cur, buf *text);
bool exec_say_next(exec *x, cursor *cur);
bool exec_play_next(exec *x, cursor *cur);
void exec_pause_end(loop *l, void *arg);

/* ---- exec_gather.c, exec_record.c: caller input */
void exec_gather_start(exec *x, const twiml_verb *v);
void exec_gather_prompts_done(exec *x);
void exec_gather_key(exec *x, char d);
/* Resume: the <Gather> at top.pc waits for keys for ms more. */
void exec_gather_resume(exec *x, int64_t ms);
void exec_record_start(exec *x, const twiml_verb *v);
void exec_record_window_start(exec *x);
void exec_record_end(exec *x, const char *digits, bool hung_up);
void exec_record_key(exec *x, char d);

#endif
