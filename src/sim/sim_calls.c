/* sim_calls — the simulated calls: a table indexed by Kaphila callId and by
 * twigate's CallSid, each call's state machine and timers, its playback and
 * gather state, its outbound events and its transcript.
 *
 * Map of this file: the string map; the call table (create, detach, evict,
 * reset); events (emit → per-call FIFO → one POST at a time); the state
 * machine (ring → outcome → answer → end); playback, gather and digits;
 * recordings; JSON views. All on the sim loop thread. */
#include "sim_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

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

    tline     **lines;              /* the transcript, in order (events and requests) */
    size_t      n_lines, cap_lines;
};

/* ---------------------------------------------------------------- table */

typedef struct sim_calls {
    sim_map   by_id;
    sim_map   by_sid;
    sim_call *head, *tail;
    size_t    n_live;
    size_t    n_ended;
} sim_calls;

int sim_calls_create(sim *s)
{
    sim_calls *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    if (sim_map_init(&t->by_id) != 0 || sim_map_init(&t->by_sid) != 0) {
        sim_map_fini(&t->by_id);
        free(t);
        return -1;
    }
    s->calls = t;
    return 0;
}

static void cancel_timers(sim_call *c)
{
    loop *l = c->s->loop;
    loop_timer_cancel(l, c->t_main);
    loop_timer_cancel(l, c->t_max);
    loop_timer_cancel(l, c->t_play);
    loop_timer_cancel(l, c->t_gather);
    loop_timer_cancel(l, c->t_digit);
    c->t_main = c->t_max = c->t_play = c->t_gather = c->t_digit = NULL;
}

static void free_playback(playback *p)
{
    if (!p)
        return;
    free(p->text);
    free(p->file);
    free(p);
}

static void drop_playbacks(sim_call *c)
{
    while (c->pb_head) {
        playback *p = c->pb_head;
        c->pb_head = p->next;
        free_playback(p);
    }
    c->pb_tail = NULL;
    c->pb_len = 0;
    free_playback(c->playing);
    c->playing = NULL;
}

static void free_event(event *e)
{
    free(e->body);
    free(e);
}

static void drop_events(sim_call *c)
{
    while (c->ev_head) {
        event *e = c->ev_head;
        c->ev_head = e->next;
        free_event(e);
    }
    c->ev_tail = NULL;
}

static void free_call(sim_call *c)
{
    curl_easy_cleanup(c->easy);
    drop_events(c);
    drop_playbacks(c);
    json_decref(c->amd);
    for (size_t i = 0; i < c->n_lines; i++)
        free(c->lines[i]);
    free(c->lines);
    free(c->number);
    free(c->caller_id);
    free(c->webhook);
    free(c->voice);
    free(c);
}

/* Takes c out of the table; frees it now, or when its POST in flight ends. */
static void detach(sim *s, sim_call *c)
{
    sim_calls *t = s->calls;
    cancel_timers(c);
    drop_events(c);
    sim_map_del(&t->by_id, c->id, c);
    if (c->sid[0])
        sim_map_del(&t->by_sid, c->sid, c);
    if (c->prev)
        c->prev->next = c->next;
    else
        t->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        t->tail = c->prev;
    if (c->state == CS_ENDED)
        t->n_ended--;
    else
        t->n_live--;
    if (c->posting)
        c->orphan = true;
    else
        free_call(c);
}

/* Forgets the oldest ended calls (in the order they were placed) beyond
 * cfg.kept_calls. It stops at an ended call whose events are still queued or
 * in flight: detach() would drop them, and Kaphila delivers every event of a
 * call it placed; forgetting a newer call instead would break the order.
 * event_done() calls this again once that call's last event is delivered. */
static void evict(sim *s)
{
    sim_calls *t = s->calls;
    sim_call *c = t->head;
    while (t->n_ended > (size_t)s->cfg.kept_calls && c) {
        sim_call *n = c->next;
        if (c->state == CS_ENDED) {
            if (c->posting || c->ev_head)
                break;
            detach(s, c);
        }
        c = n;
    }
}

void sim_calls_reset(sim *s)
{
    while (s->calls->head)
        detach(s, s->calls->head);
}

/* Loop stopped but not destroyed: timers can still be cancelled; calls with
 * a POST in flight become orphans that the aborted POST's callback frees
 * inside loop_destroy. */
void sim_calls_destroy(sim *s)
{
    if (!s->calls)
        return;
    sim_calls_reset(s);
    sim_map_fini(&s->calls->by_id);
    sim_map_fini(&s->calls->by_sid);
    free(s->calls);
    s->calls = NULL;
}

size_t sim_calls_live(const sim *s)
{
    return s->calls->n_live;
}

sim_call *sim_call_find(const sim *s, const char *id)
{
    if (!id || !*id)
        return NULL;
    sim_call *c = sim_map_get(&s->calls->by_id, id);
    return c ? c : sim_map_get(&s->calls->by_sid, id);
}

sim_call *sim_calls_first(const sim *s) { return s->calls->head; }
sim_call *sim_calls_next(const sim_call *c) { return c->next; }
const char *sim_call_id(const sim_call *c) { return c->id; }
const char *sim_call_status(const sim_call *c) { return c->status; }
bool sim_call_live(const sim_call *c) { return c->state != CS_ENDED; }
bool sim_call_answered(const sim_call *c) { return c->answered_mono > 0; }
int sim_call_key(const sim_call *c) { return c->key; }

/* ---------------------------------------------------------------- transcript */

static int64_t rel_ms(const sim_call *c)
{
    return loop_now_ms(c->s->loop) - c->created_mono;
}

/* A new line of n data bytes (zeroed, so texts end in NUL), appended; NULL
 * when the transcript is full or memory is short. */
static tline *transcript_add(sim_call *c, size_t n)
{
    if (c->n_lines >= SIM_MAX_TRANSCRIPT)
        return NULL;
    if (c->n_lines == c->cap_lines) {
        size_t cap = c->cap_lines ? c->cap_lines * 2 : 8;
        tline **l = realloc(c->lines, cap * sizeof *l);
        if (!l)
            return NULL;
        c->lines = l;
        c->cap_lines = cap;
    }
    tline *t = calloc(1, sizeof *t + n);
    if (!t)
        return NULL;
    t->t_ms = rel_ms(c);
    c->lines[c->n_lines++] = t;
    return t;
}

void sim_call_note_request(sim_call *c, const sim_req *r, bool with_body)
{
    size_t m = strlen(r->method), p = strlen(r->path), b = with_body ? r->body.len : 0;
    tline *t = transcript_add(c, m + 1 + p + 1 + b + 1);
    if (!t)
        return;
    t->status = (int)r->status;
    memcpy(t->data, r->method, m);
    memcpy(t->data + m + 1, r->path, p);
    if (b)
        memcpy(t->data + m + 1 + p + 1, r->body.data, b);
}

/* ---------------------------------------------------------------- events */

static void pump(sim_call *c);

static void event_done(loop *l, CURL *easy, CURLcode rc, void *arg)
{
    (void)l;
    event *e = arg;
    sim_call *c = e->call;
    (void)easy;   /* c->easy, kept for the next event */
    if (rc != CURLE_OK && rc != CURLE_ABORTED_BY_CALLBACK)
        log_debug("sim", "event post to call %s failed: %s", c->id, curl_easy_strerror(rc));
    free_event(e);
    c->posting = false;
    if (c->orphan) {
        free_call(c);
        return;
    }
    if (atomic_load(&c->s->closing))
        return;
    pump(c);
    if (!c->posting && c->state == CS_ENDED) {
        /* An ended call is kept only for its transcript: its handle (libcurl's
         * buffers, ~10 KB a call) goes now, and comes back if a late event
         * needs it. Then the call may be the one evict() stopped at. */
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
        if (c->s->calls->n_ended > (size_t)c->s->cfg.kept_calls)
            evict(c->s);   /* may free c */
    }
}

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

/* The call's handle for its event POSTs, made once: the options that never
 * change are set here, so an event only sets its body. */
static CURL *event_handle(sim_call *c)
{
    if (c->easy)
        return c->easy;
    CURL *easy = curl_easy_init();
    if (!easy)
        return NULL;
    curl_easy_setopt(easy, CURLOPT_URL, c->webhook);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, c->s->event_headers);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "Kaphila-API-API/2.0");
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)SIM_EVENT_TIMEOUT_MS);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    c->easy = easy;
    return easy;
}

/* Starts the next POST of c unless one is in flight: one call's events go
 * strictly one after another so the receiver sees them in order. */
static void pump(sim_call *c)
{
    while (!c->posting && c->ev_head) {
        event *e = c->ev_head;
        c->ev_head = e->next;
        if (!c->ev_head)
            c->ev_tail = NULL;
        CURL *easy = event_handle(c);
        if (!easy) {
            free_event(e);
            continue;
        }
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, e->body);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)strlen(e->body));
        if (loop_http_start(c->s->loop, easy, event_done, e) != 0) {
            free_event(e);
            continue;
        }
        c->posting = true;
    }
}

/* Builds {event, callId, timestamp, ...extra}, records it and queues the
 * POST. name is a literal (the transcript keeps the pointer); extra is stolen. */
static void emit(sim_call *c, const char *name, json_t *extra)
{
    char ts[32];
    sim_iso_now(ts);
    json_t *ev = json_pack("{s:s, s:s, s:s}", "event", name, "callId", c->id, "timestamp", ts);
    if (!ev) {
        json_decref(extra);
        return;
    }
    if (extra) {
        json_object_update(ev, extra);
        json_decref(extra);
    }
    char *text = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (!text)
        return;
    size_t n = strlen(text);
    tline *t = transcript_add(c, n + 1);
    if (t) {
        t->event = name;
        memcpy(t->data, text, n);
    }
    event *e = c->webhook ? calloc(1, sizeof *e) : NULL;
    if (!e) {
        free(text);
        return;
    }
    e->body = text;   /* the POST's body from now on */
    e->call = c;
    if (c->ev_tail)
        c->ev_tail->next = e;
    else
        c->ev_head = e;
    c->ev_tail = e;
    pump(c);
}

/* ---------------------------------------------------------------- recordings */

/* Kaphila's names for the call's recording: "rec-<callId>" and its file. */
static void rec_names(const sim_call *c, char id[SIM_CALL_ID_SIZE + 8],
                      char file[SIM_CALL_ID_SIZE + 8])
{
    snprintf(id, SIM_CALL_ID_SIZE + 8, "rec-%s", c->id);
    snprintf(file, SIM_CALL_ID_SIZE + 8, "rec-%s.wav", c->id);
}

static json_t *recording_obj(const sim_call *c)
{
    char id[SIM_CALL_ID_SIZE + 8], file[SIM_CALL_ID_SIZE + 8];
    rec_names(c, id, file);
    return json_pack("{s:s, s:s, s:b}", "filename", file, "recordingId", id, "active",
                     c->rec_active);
}

static void recording_start(sim_call *c)
{
    char id[SIM_CALL_ID_SIZE + 8], file[SIM_CALL_ID_SIZE + 8];
    rec_names(c, id, file);
    c->rec_started = true;
    c->rec_active = true;
    sim_rec_start(c->s, c->id);
    emit(c, "recording.started", json_pack("{s:s}", "recordingId", id));
}

/* Stops the recording: its audio is the call's length so far. */
static void recording_finish(sim_call *c)
{
    int64_t now = loop_now_ms(c->s->loop);
    c->rec_active = false;
    c->rec_duration = (int)((now - c->answered_mono) / 1000);
    sim_rec_stop(c->s, c->id, c->rec_duration);
}

static void recording_completed(sim_call *c)
{
    char url[128], id[SIM_CALL_ID_SIZE + 8], file[SIM_CALL_ID_SIZE + 8];
    rec_names(c, id, file);
    snprintf(url, sizeof url, "/recordings/%s/download", c->id);
    emit(c, "recording.completed", json_pack("{s:s, s:s, s:i}", "recordingId", id,
                                             "recordingUrl", url, "duration", c->rec_duration));
}

sim_status sim_call_stop_recording(sim_call *c)
{
    if (!c->rec_active)
        return SIM_ERR_NOT_FOUND;
    char id[SIM_CALL_ID_SIZE + 8], file[SIM_CALL_ID_SIZE + 8];
    rec_names(c, id, file);
    recording_finish(c);
    emit(c, "recording.stopped", json_pack("{s:s}", "recordingId", id));
    recording_completed(c);
    return SIM_OK;
}

/* ---------------------------------------------------------------- state machine */

static void end_call(sim_call *c, const char *status, const char *reason, const char *cause)
{
    sim *s = c->s;
    cancel_timers(c);
    drop_playbacks(c);
    c->gather_active = false;
    c->digits[0] = 0;
    c->digits_pos = 0;

    int64_t now = loop_now_ms(s->loop);
    bool answered = c->answered_mono > 0;
    bool completed_rec = c->rec_active;
    if (completed_rec)
        recording_finish(c);
    c->state = CS_ENDED;
    c->status = status;
    c->ended_mono = now;
    s->calls->n_live--;
    s->calls->n_ended++;

    json_t *x = json_pack("{s:s, s:s, s:s, s:b, s:I}", "status", status, "endReason", reason,
                          "hangupCause", cause, "wasAnswered", answered, "callDuration",
                          (json_int_t)(answered ? (now - c->answered_mono) / 1000 : 0));
    if (x && c->amd)
        json_object_set(x, "amd", c->amd);
    if (x && c->rec_started)
        json_object_set_new(x, "recording", recording_obj(c));
    emit(c, "call.ended", x);
    if (completed_rec)
        recording_completed(c);
    evict(s);
}

static void on_max(loop *l, void *arg)
{
    (void)l;
    sim_call *c = arg;
    c->t_max = NULL;
    end_call(c, "completed", "normal_hangup", "16");
}

static void on_answer(loop *l, void *arg)
{
    sim_call *c = arg;
    sim *s = c->s;
    c->t_main = NULL;
    c->state = CS_ANSWERED;
    c->status = "answered";
    c->answered_mono = loop_now_ms(l);
    if (c->answered_mono <= 0)
        c->answered_mono = 1;   /* 0 means "never answered" */
    if (c->key >= 0) {
        /* Kaphila deducts credits on answer, not at origination. */
        s->keys[c->key].credits -= 1;
        s->keys[c->key].successful_calls++;
    }
    json_t *x = json_pack("{s:s, s:s, s:s}", "from", c->caller_id ? c->caller_id : "",
                          "to", c->number, "status", "answered");
    if (c->use_amd) {
        bool human = c->out == OUT_HUMAN;
        c->amd = json_pack("{s:s, s:f, s:s, s:i}", "status", human ? "HUMAN" : "MACHINE",
                           "confidence", AMD_CONFIDENCE, "cause",
                           human ? "HUMAN-500-500" : "LONGGREETING-1500-1500",
                           "durationMs", s->cfg.amd_ms);
        if (x && c->amd)
            json_object_set(x, "amd", c->amd);
    }
    emit(c, "call.answered", x);
    recording_start(c);
    c->t_max = loop_timer_add(l, sim_delay(s, SIM_MAX_CALL_MS), on_max, c);
}

static void on_outcome(loop *l, void *arg)
{
    sim_call *c = arg;
    c->t_main = NULL;
    switch (c->out) {
    case OUT_BUSY:
        end_call(c, "busy", "busy", "17");
        break;
    case OUT_NO_ANSWER:
        end_call(c, "no-answer", "no_answer", "19");
        break;
    case OUT_FAILED:
        end_call(c, "failed", "failed", "1");
        break;
    case OUT_HUMAN:
    case OUT_MACHINE:
        /* AMD listens to the greeting before Kaphila reports the answer. */
        if (c->use_amd)
            c->t_main = loop_timer_add(l, sim_delay(c->s, c->s->cfg.amd_ms), on_answer, c);
        else
            on_answer(l, c);
        break;
    }
}

static void on_ring(loop *l, void *arg)
{
    sim_call *c = arg;
    sim *s = c->s;
    c->t_main = NULL;
    c->state = CS_RINGING;
    emit(c, "call.initiated", json_pack("{s:s, s:s, s:s}", "from",
                                        c->caller_id ? c->caller_id : "", "to", c->number,
                                        "status", "ringing"));
    int64_t wait = s->cfg.answer_ms;
    if (c->out == OUT_NO_ANSWER && (int64_t)c->ring_timeout_s * 1000 < wait)
        wait = (int64_t)c->ring_timeout_s * 1000;
    c->t_main = loop_timer_add(l, sim_delay(s, wait), on_outcome, c);
}

/* The outcome is chosen by the number's suffix: "0001=busy,…" in cfg. */
static outcome pick_outcome(const sim *s, const char *number)
{
    const char *p = s->cfg.outcomes ? s->cfg.outcomes : "";
    size_t nlen = strlen(number);
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq) {
            size_t slen = (size_t)(eq - p);
            const char *what = eq + 1;
            size_t wlen = len - slen - 1;
            if (slen > 0 && slen <= nlen && memcmp(number + nlen - slen, p, slen) == 0) {
                if (wlen == 4 && memcmp(what, "busy", 4) == 0)
                    return OUT_BUSY;
                if (wlen == 9 && memcmp(what, "no-answer", 9) == 0)
                    return OUT_NO_ANSWER;
                if (wlen == 6 && memcmp(what, "failed", 6) == 0)
                    return OUT_FAILED;
                if (wlen == 7 && memcmp(what, "machine", 7) == 0)
                    return OUT_MACHINE;
                if (wlen == 5 && memcmp(what, "human", 5) == 0)
                    return OUT_HUMAN;
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return OUT_HUMAN;
}

/* CallSid=… from the webhookUrl's query string (twigate's convention). */
static void parse_call_sid(const char *url, char *out, size_t n)
{
    out[0] = 0;
    const char *q = url ? strchr(url, '?') : NULL;
    while (q) {
        q++;
        if (strncmp(q, "CallSid=", 8) == 0) {
            q += 8;
            size_t len = strcspn(q, "&#");
            if (len > 0 && len < n) {
                memcpy(out, q, len);
                out[len] = 0;
            }
            return;
        }
        q = strchr(q, '&');
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

sim_call *sim_call_originate(sim *s, const sim_call_params *p)
{
    sim_calls *t = s->calls;
    if (t->n_live >= SIM_MAX_LIVE_CALLS)
        return NULL;
    sim_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    c->key = p->key;
    c->number = strdup(p->number);
    c->caller_id = dup_or_null(p->caller_id);
    c->webhook = p->webhook && *p->webhook ? strdup(p->webhook) : NULL;
    c->voice = dup_or_null(p->voice);
    if (!c->number || (p->caller_id && !c->caller_id) || (p->voice && !c->voice) ||
        (p->webhook && *p->webhook && !c->webhook)) {
        free_call(c);
        return NULL;
    }
    c->use_amd = p->use_amd;
    c->ring_timeout_s = p->ring_timeout_s;
    c->out = pick_outcome(s, p->number);
    c->state = CS_DIALING;
    c->status = "ringing";
    c->created_mono = loop_now_ms(s->loop);
    c->created_wall = sim_wall_ms();
    snprintf(c->id, sizeof c->id, "%lld.%" PRIu64, (long long)(c->created_wall / 1000),
             ++s->call_counter);
    parse_call_sid(c->webhook, c->sid, sizeof c->sid);

    c->t_main = loop_timer_add(s->loop, sim_delay(s, s->cfg.ring_ms), on_ring, c);
    if (!c->t_main || sim_map_put(&t->by_id, c->id, c) != 0) {
        loop_timer_cancel(s->loop, c->t_main);
        free_call(c);
        return NULL;
    }
    if (c->sid[0] && sim_map_put(&t->by_sid, c->sid, c) != 0)
        c->sid[0] = 0;   /* still reachable by callId */
    c->prev = t->tail;
    if (t->tail)
        t->tail->next = c;
    else
        t->head = c;
    t->tail = c;
    t->n_live++;
    if (c->key >= 0)
        s->keys[c->key].total_calls++;
    return c;
}

sim_status sim_call_hangup_api(sim_call *c)
{
    if (c->state == CS_ENDED)
        return SIM_ERR_ENDED;
    if (c->answered_mono > 0)
        end_call(c, "completed", "api_hangup", "16");
    else
        end_call(c, "canceled", "api_hangup", "16");
    return SIM_OK;
}

sim_status sim_call_hangup_far(sim_call *c)
{
    if (c->state == CS_ENDED)
        return SIM_ERR_ENDED;
    if (c->answered_mono > 0)
        end_call(c, "completed", "normal_hangup", "16");
    else   /* the callee rejects while it rings: Q.850 21 */
        end_call(c, "busy", "rejected", "21");
    return SIM_OK;
}

/* ---------------------------------------------------------------- playback */

static void on_gather_timeout(loop *l, void *arg);

/* (Re)starts the digit timeout. */
static void gather_arm(sim_call *c)
{
    loop_timer_cancel(c->s->loop, c->t_gather);
    c->t_gather = NULL;
    c->gather_prompt_done = true;
    c->t_gather = loop_timer_add(c->s->loop, sim_delay(c->s, c->gather_timeout_ms),
                                 on_gather_timeout, c);
}

static void on_gather_timeout(loop *l, void *arg)
{
    (void)l;
    sim_call *c = arg;
    c->t_gather = NULL;
    c->gather_active = false;
    emit(c, "gather.timeout", json_pack("{s:s}", "digits", c->gather_digits));
}

static void start_next_playback(sim_call *c);

static void on_play_end(loop *l, void *arg)
{
    (void)l;
    sim_call *c = arg;
    playback *p = c->playing;
    c->t_play = NULL;
    c->playing = NULL;
    json_t *x = json_pack("{s:s}", "playbackId", p->id);
    if (x && p->text)
        json_object_set_new(x, "text", json_string(p->text));
    if (x && p->file)
        json_object_set_new(x, "file", json_string(p->file));
    emit(c, "tts.played", x);
    if (p->gather_gen && c->gather_active && p->gather_gen == c->gather_gen)
        gather_arm(c);
    free_playback(p);
    start_next_playback(c);
}

static void start_next_playback(sim_call *c)
{
    if (c->playing || !c->pb_head)
        return;
    playback *p = c->pb_head;
    c->pb_head = p->next;
    if (!c->pb_head)
        c->pb_tail = NULL;
    c->pb_len--;
    p->next = NULL;
    c->playing = p;
    c->t_play = loop_timer_add(c->s->loop, sim_delay(c->s, p->ms), on_play_end, c);
}

static sim_status check_answered(const sim_call *c)
{
    if (c->state == CS_ENDED)
        return SIM_ERR_ENDED;
    if (c->state != CS_ANSWERED)
        return SIM_ERR_NOT_ANSWERED;
    return SIM_OK;
}

static playback *queue_playback(sim_call *c, const char *text, const char *file)
{
    sim *s = c->s;
    playback *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->text = dup_or_null(text);
    p->file = dup_or_null(file);
    if ((text && !p->text) || (file && !p->file)) {
        free_playback(p);
        return NULL;
    }
    snprintf(p->id, sizeof p->id, "pb-%" PRIu64, ++s->playback_counter);
    if (text) {
        int64_t ms = (int64_t)s->cfg.tts_ms_per_char * (int64_t)strlen(text);
        p->ms = ms > s->cfg.tts_min_ms ? ms : s->cfg.tts_min_ms;
    } else {
        p->ms = s->cfg.play_ms;
    }
    if (c->pb_tail)
        c->pb_tail->next = p;
    else
        c->pb_head = p;
    c->pb_tail = p;
    c->pb_len++;
    return p;
}

sim_status sim_call_play(sim_call *c, const char *text, const char *file, char id_out[32])
{
    sim_status st = check_answered(c);
    if (st != SIM_OK)
        return st;
    if (c->pb_len >= SIM_MAX_PLAYBACKS)
        return SIM_ERR_FULL;
    playback *p = queue_playback(c, text, file);
    if (!p)
        return SIM_ERR_NOMEM;
    snprintf(id_out, 32, "%s", p->id);
    start_next_playback(c);
    return SIM_OK;
}

/* ---------------------------------------------------------------- gather, digits */

sim_status sim_call_gather(sim_call *c, const char *text, int num_digits, int timeout_ms)
{
    sim_status st = check_answered(c);
    if (st != SIM_OK)
        return st;
    if (num_digits < 1 || num_digits > SIM_MAX_GATHER || timeout_ms < 0)
        return SIM_ERR_INVALID;
    if (c->pb_len >= SIM_MAX_PLAYBACKS)
        return SIM_ERR_FULL;
    playback *p = queue_playback(c, text, NULL);
    if (!p)
        return SIM_ERR_NOMEM;
    /* A new gather replaces the one in progress, as on Kaphila. */
    loop_timer_cancel(c->s->loop, c->t_gather);
    c->t_gather = NULL;
    c->gather_active = true;
    c->gather_prompt_done = false;
    p->gather_gen = ++c->gather_gen;
    if (p->gather_gen == 0)   /* 0 means "not a prompt" */
        p->gather_gen = ++c->gather_gen;
    c->gather_num = num_digits;
    c->gather_timeout_ms = timeout_ms;
    c->gather_digits[0] = 0;
    emit(c, "gather.started", json_pack("{s:i, s:i}", "numDigits", num_digits,
                                        "timeoutMs", timeout_ms));
    start_next_playback(c);
    return SIM_OK;
}

static void press_one(sim_call *c, char d)
{
    char digit[2] = {d, 0};
    emit(c, "dtmf.received", json_pack("{s:s}", "digit", digit));
    if (!c->gather_active)
        return;
    size_t n = strlen(c->gather_digits);
    if (n < SIM_MAX_GATHER) {
        c->gather_digits[n] = d;
        c->gather_digits[n + 1] = 0;
        n++;
    }
    if ((int)n >= c->gather_num) {
        loop_timer_cancel(c->s->loop, c->t_gather);
        c->t_gather = NULL;
        c->gather_active = false;
        emit(c, "gather.complete", json_pack("{s:s}", "digits", c->gather_digits));
        return;
    }
    emit(c, "gather.progress", json_pack("{s:s}", "digits", c->gather_digits));
    /* The timeout runs between keys once the prompt has finished. */
    if (c->gather_prompt_done)
        gather_arm(c);
}

static void on_digit(loop *l, void *arg)
{
    sim_call *c = arg;
    c->t_digit = NULL;
    char d = c->digits[c->digits_pos++];
    bool more = c->digits[c->digits_pos] != 0;
    if (!more) {
        c->digits[0] = 0;
        c->digits_pos = 0;
    }
    press_one(c, d);
    if (more && c->state == CS_ANSWERED)
        c->t_digit = loop_timer_add(l, sim_delay(c->s, DIGIT_GAP_MS), on_digit, c);
}

sim_status sim_call_press(sim_call *c, const char *digits)
{
    sim_status st = check_answered(c);
    if (st != SIM_OK)
        return st;
    size_t n = strlen(digits);
    if (n == 0 || strspn(digits, "0123456789*#ABCD") != n)
        return SIM_ERR_INVALID;
    size_t have = strlen(c->digits);
    if (have + n > SIM_MAX_DIGITS)
        return SIM_ERR_FULL;
    memcpy(c->digits + have, digits, n + 1);
    /* The first key goes at once (on the loop, after this request's answer). */
    if (!c->t_digit)
        c->t_digit = loop_timer_add(c->s->loop, 0, on_digit, c);
    return SIM_OK;
}

/* ---------------------------------------------------------------- views */

static json_t *amd_or_null(const sim_call *c)
{
    return c->amd ? json_incref(c->amd) : json_null();
}

json_t *sim_call_recording(const sim_call *c)
{
    char id[SIM_CALL_ID_SIZE + 8], file[SIM_CALL_ID_SIZE + 8];
    if (!c->rec_started)
        return NULL;
    rec_names(c, id, file);
    return json_pack("{s:s, s:s, s:s, s:b}", "callId", c->id, "recordingId", id,
                     "filename", file, "active", c->rec_active);
}

json_t *sim_call_summary(const sim_call *c)
{
    json_t *gather = c->gather_active
        ? json_pack("{s:b, s:i, s:s}", "active", 1, "expectedDigits", c->gather_num, "digits",
                    c->gather_digits)
        : json_null();
    json_t *rec = c->rec_started ? recording_obj(c) : json_null();
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:s, s:b}", "callId", c->id, "status",
                     c->status, "number", c->number, "amd", amd_or_null(c), "gather", gather,
                     "recording", rec, "voiceName", c->voice ? c->voice : "",
                     "hasBridge", c->state == CS_ANSWERED);
}

json_t *sim_call_detail(const sim_call *c)
{
    json_t *rec = c->rec_started ? recording_obj(c) : json_null();
    return json_pack("{s:b, s:s, s:s, s:s, s:o, s:o, s:b, s:b}", "success", 1, "callId", c->id,
                     "status", c->status, "number", c->number, "amd", amd_or_null(c),
                     "recording", rec, "hasBridge", c->state == CS_ANSWERED, "hasSnoop",
                     c->state == CS_ANSWERED && c->use_amd);
}

json_t *sim_call_brief(const sim_call *c)
{
    return json_pack("{s:s, s:s?, s:s}", "callId", c->id, "callSid", c->sid[0] ? c->sid : NULL,
                     "status", c->status);
}

json_t *sim_call_transcript(const sim_call *c)
{
    char created[32];
    json_t *events = json_array(), *requests = json_array();
    for (size_t i = 0; events && requests && i < c->n_lines; i++) {
        const tline *t = c->lines[i];
        if (t->event) {
            json_array_append_new(events, json_pack("{s:I, s:s, s:o}", "t_ms", (json_int_t)t->t_ms,
                                                    "event", t->event, "body",
                                                    json_loads(t->data, 0, NULL)));
            continue;
        }
        const char *path = t->data + strlen(t->data) + 1, *body = path + strlen(path) + 1;
        json_array_append_new(requests, json_pack("{s:I, s:s, s:s, s:o, s:i}", "t_ms",
                                                  (json_int_t)t->t_ms, "method", t->data,
                                                  "path", path, "body",
                                                  *body ? json_loads(body, 0, NULL) : json_null(),
                                                  "status", t->status));
    }
    sim_iso_ms(c->created_wall, created);
    return json_pack("{s:s, s:s?, s:s, s:s?, s:s, s:b, s:o, s:s, s:o, s:o}", "callId", c->id,
                     "callSid", c->sid[0] ? c->sid : NULL, "number", c->number, "callerId",
                     c->caller_id, "status", c->status, "answered", c->answered_mono > 0,
                     "amd", amd_or_null(c), "createdAt", created, "events", events,
                     "requests", requests);
}

json_t *sim_call_log(const sim_call *c)
{
    char created[32];
    sim_iso_ms(c->created_wall, created);
    int64_t dur = 0;
    if (c->answered_mono > 0) {
        int64_t end = c->state == CS_ENDED ? c->ended_mono : loop_now_ms(c->s->loop);
        dur = (end - c->answered_mono) / 1000;
    }
    const char *amd_status = c->amd ? json_string_value(json_object_get(c->amd, "status"))
                                    : "NOAMD";
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "call_id", c->id, "number", c->number,
                     "status", c->status, "amd_status", amd_status ? amd_status : "NOAMD",
                     "duration", (json_int_t)dur, "created_at", created);
}
