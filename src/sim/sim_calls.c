/* sim_calls — the simulated calls: a table indexed by Kaphila callId and by
 * twigate's CallSid, each call's state machine and timers, its outbound
 * events and its transcript.
 *
 * Map of this file: the call table (create, detach, evict, reset); the
 * transcript; events (emit → per-call FIFO → one POST at a time);
 * recordings; the state machine (ring → outcome → answer → end).
 * Playback, gather, digits and the JSON views are in sim_verbs.c; both share
 * sim_calls_int.h. All on the sim loop thread. */
#include "sim_calls_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/jsonw.h"
#include "base/log.h"

#define SIM_SPARE_HANDLES 64

/* ---------------------------------------------------------------- table */

typedef struct sim_calls {
    sim_map   by_id;
    sim_map   by_sid;
    sim_call *head, *tail;
    size_t    n_live;
    size_t    n_ended;
    /* Event handles of ended calls, for the next calls: a handle made anew
     * for each call (curl_easy_init, then its cleanup) was ~3 % of the
     * simulator's CPU per call. Bounded, so idle memory stays small. */
    CURL     *spare[SIM_SPARE_HANDLES];
    size_t    n_spare;
    /* Event POSTs in flight, at most SIM_EVENT_WINDOW; calls with events
     * queued and no slot wait in arrival order (see SIM_EVENT_WINDOW). */
    size_t    n_posting;
    sim_call *wait_head, *wait_tail;
} sim_calls;

static void pump(sim_call *c);

static void wait_unlink(sim_calls *t, sim_call *c)
{
    if (!c->waiting)
        return;
    if (c->wait_prev)
        c->wait_prev->wait_next = c->wait_next;
    else
        t->wait_head = c->wait_next;
    if (c->wait_next)
        c->wait_next->wait_prev = c->wait_prev;
    else
        t->wait_tail = c->wait_prev;
    c->wait_prev = c->wait_next = NULL;
    c->waiting = false;
}

/* Gives the free slots to the calls waiting longest. */
static void wake_waiting(sim_calls *t)
{
    while (t->wait_head && t->n_posting < SIM_EVENT_WINDOW) {
        sim_call *c = t->wait_head;
        wait_unlink(t, c);
        pump(c);
    }
}

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

void sim_playback_free(playback *p)
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
        sim_playback_free(p);
    }
    c->pb_tail = NULL;
    c->pb_len = 0;
    sim_playback_free(c->playing);
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
    wait_unlink(t, c);
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
    while (s->calls->n_spare)
        curl_easy_cleanup(s->calls->spare[--s->calls->n_spare]);
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
    size_t m = strlen(r->method), p = strlen(r->path), b = with_body ? r->body->len : 0;
    tline *t = transcript_add(c, m + 1 + p + 1 + b + 1);
    if (!t)
        return;
    t->status = (int)r->status;
    memcpy(t->data, r->method, m);
    memcpy(t->data + m + 1, r->path, p);
    if (b)
        memcpy(t->data + m + 1 + p + 1, r->body->data, b);
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
    sim_calls *t = c->s->calls;   /* NULL after sim_calls_destroy: loop_destroy aborts the rest */
    free_event(e);
    c->posting = false;
    if (t)
        t->n_posting--;
    if (c->orphan) {
        free_call(c);
        if (t)
            wake_waiting(t);
        return;
    }
    if (atomic_load(&c->s->closing))
        return;
    wake_waiting(t);
    pump(c);
    if (!c->posting && c->state == CS_ENDED) {
        /* An ended call is kept only for its transcript: its handle (libcurl's
         * buffers, ~10 KB a call) goes now — to the spares, for the next
         * call, or freed — and one comes back if a late event needs it.
         * Then the call may be the one evict() stopped at. */
        if (t->n_spare < SIM_SPARE_HANDLES)
            t->spare[t->n_spare++] = c->easy;
        else
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

/* The call's handle for its event POSTs, made once (or a spare, whose
 * options are the same but the URL): the options that never change are set
 * here, so an event only sets its body. */
static CURL *event_handle(sim_call *c)
{
    sim_calls *t = c->s->calls;
    if (c->easy)
        return c->easy;
    if (t->n_spare) {
        c->easy = t->spare[--t->n_spare];
        curl_easy_setopt(c->easy, CURLOPT_URL, c->webhook);
        return c->easy;
    }
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
 * strictly one after another so the receiver sees them in order. With
 * SIM_EVENT_WINDOW POSTs in flight, c waits for a slot instead. */
static void pump(sim_call *c)
{
    sim_calls *t = c->s->calls;
    while (!c->posting && c->ev_head) {
        if (t->n_posting >= SIM_EVENT_WINDOW) {
            if (!c->waiting) {
                c->waiting = true;
                c->wait_prev = t->wait_tail;
                if (t->wait_tail)
                    t->wait_tail->wait_next = c;
                else
                    t->wait_head = c;
                t->wait_tail = c;
            }
            return;
        }
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
        t->n_posting++;
    }
}

/* Builds {event, callId, timestamp, ...extra}, records it and queues the
 * POST. name is a literal (the transcript keeps the pointer); extra is stolen
 * and holds none of the first three keys. The head is printed and extra's
 * own dump appended inside the braces — the bytes a merged object's dump
 * had, without building it (that was ~4 % of the simulator's CPU). name,
 * the callId (digits and a dot) and the timestamp need no escaping. */
void sim_call_emit(sim_call *c, const char *name, json_t *extra)
{
    char ts[32];
    sim_iso_now(ts);
    char *rest = extra ? jsonw_dumps(extra) : NULL;
    json_decref(extra);
    if (extra && !rest)
        return;
    /* rest is "{}" or "{…}": its inside follows the head after a comma. */
    size_t rn = rest ? strlen(rest) : 0;
    bool more = rn > 2;
    char head[64 + SIM_CALL_ID_SIZE + sizeof ts];
    int hn = snprintf(head, sizeof head, "{\"event\":\"%s\",\"callId\":\"%s\",\"timestamp\":\"%s\"",
                      name, c->id, ts);
    /* head, then "," + inside + "}" (rn bytes) or "}", then the NUL */
    char *text = hn > 0 && (size_t)hn < sizeof head ? malloc((size_t)hn + (more ? rn : 1) + 1) : NULL;
    if (!text) {
        free(rest);
        return;
    }
    memcpy(text, head, (size_t)hn);
    if (more) {
        text[hn] = ',';
        memcpy(text + hn + 1, rest + 1, rn - 1);   /* "…}" and its NUL below */
        text[hn + rn] = '\0';
    } else {
        memcpy(text + hn, "}", 2);
    }
    free(rest);
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
void sim_call_rec_names(const sim_call *c, char id[SIM_CALL_ID_SIZE + 8],
                      char file[SIM_CALL_ID_SIZE + 8])
{
    snprintf(id, SIM_CALL_ID_SIZE + 8, "rec-%s", c->id);
    snprintf(file, SIM_CALL_ID_SIZE + 8, "rec-%s.wav", c->id);
}

json_t *sim_call_recording_obj(const sim_call *c)
{
    char id[SIM_CALL_ID_SIZE + 8], file[SIM_CALL_ID_SIZE + 8];
    sim_call_rec_names(c, id, file);
    return json_pack("{s:s, s:s, s:b}", "filename", file, "recordingId", id, "active",
                     c->rec_active);
}

static void recording_start(sim_call *c)
{
    char id[SIM_CALL_ID_SIZE + 8], file[SIM_CALL_ID_SIZE + 8];
    sim_call_rec_names(c, id, file);
    c->rec_started = true;
    c->rec_active = true;
    sim_rec_start(c->s, c->id);
    sim_call_emit(c, "recording.started", json_pack("{s:s}", "recordingId", id));
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
    sim_call_rec_names(c, id, file);
    snprintf(url, sizeof url, "/recordings/%s/download", c->id);
    sim_call_emit(c, "recording.completed", json_pack("{s:s, s:s, s:i}", "recordingId", id,
                                                      "recordingUrl", url, "duration", c->rec_duration));
}

sim_status sim_call_stop_recording(sim_call *c)
{
    if (!c->rec_active)
        return SIM_ERR_NOT_FOUND;
    char id[SIM_CALL_ID_SIZE + 8], file[SIM_CALL_ID_SIZE + 8];
    sim_call_rec_names(c, id, file);
    recording_finish(c);
    sim_call_emit(c, "recording.stopped", json_pack("{s:s}", "recordingId", id));
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
        json_object_set_new(x, "recording", sim_call_recording_obj(c));
    sim_call_emit(c, "call.ended", x);
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
    sim_call_emit(c, "call.answered", x);
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
    sim_call_emit(c, "call.initiated", json_pack("{s:s, s:s, s:s}", "from",
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

char *sim_dup_or_null(const char *s)
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
    c->caller_id = sim_dup_or_null(p->caller_id);
    c->webhook = p->webhook && *p->webhook ? strdup(p->webhook) : NULL;
    c->voice = sim_dup_or_null(p->voice);
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

