/* sim_verbs — what twigate asks of a live simulated call: playback (/voice,
 * /play), gather and the far end's digits; and the JSON views of a call
 * (summary, detail, transcript, log). The call's struct and the helpers
 * shared with sim_calls.c are in sim_calls_int.h. All on the sim loop thread. */

#include "sim_calls_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

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
    sim_call_emit(c, "gather.timeout", json_pack("{s:s}", "digits", c->gather_digits));
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
    sim_call_emit(c, "tts.played", x);
    if (p->gather_gen && c->gather_active && p->gather_gen == c->gather_gen)
        gather_arm(c);
    sim_playback_free(p);
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
    p->text = sim_dup_or_null(text);
    p->file = sim_dup_or_null(file);
    if ((text && !p->text) || (file && !p->file)) {
        sim_playback_free(p);
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
    sim_call_emit(c, "gather.started", json_pack("{s:i, s:i}", "numDigits", num_digits,
                                                 "timeoutMs", timeout_ms));
    start_next_playback(c);
    return SIM_OK;
}

static void press_one(sim_call *c, char d)
{
    char digit[2] = {d, 0};
    sim_call_emit(c, "dtmf.received", json_pack("{s:s}", "digit", digit));
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
        sim_call_emit(c, "gather.complete", json_pack("{s:s}", "digits", c->gather_digits));
        return;
    }
    sim_call_emit(c, "gather.progress", json_pack("{s:s}", "digits", c->gather_digits));
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
    sim_call_rec_names(c, id, file);
    return json_pack("{s:s, s:s, s:s, s:b}", "callId", c->id, "recordingId", id,
                     "filename", file, "active", c->rec_active);
}

json_t *sim_call_summary(const sim_call *c)
{
    json_t *gather = c->gather_active
        ? json_pack("{s:b, s:i, s:s}", "active", 1, "expectedDigits", c->gather_num, "digits",
                    c->gather_digits)
        : json_null();
    json_t *rec = c->rec_started ? sim_call_recording_obj(c) : json_null();
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:s, s:b}", "callId", c->id, "status",
                     c->status, "number", c->number, "amd", amd_or_null(c), "gather", gather,
                     "recording", rec, "voiceName", c->voice ? c->voice : "",
                     "hasBridge", c->state == CS_ANSWERED);
}

json_t *sim_call_detail(const sim_call *c)
{
    json_t *rec = c->rec_started ? sim_call_recording_obj(c) : json_null();
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
