/* exec_speech.c — what the executor plays: playbacks (/voice and /play, the
 * fallback timers and the tts.played accounting that pairs each event with
 * its playback), <Say> (merged into as few /voice requests as the text
 * allows), <Play> and <Pause>. Engine loop only; see exec.c for the model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "engine/exec_sound.h"
#include "exec_int.h"

/* Context of a /voice or /play. */
typedef struct play_ctx {
    call    *c;
    unsigned serial;
    int64_t  fallback_ms;   /* armed once Kaphila has taken the playback */
} play_ctx;

/* ---------------------------------------------------------------- playbacks */

static void pb_remove(exec *x, size_t i)
{
    memmove(&x->pb[i], &x->pb[i + 1], (x->n_pb - i - 1) * sizeof x->pb[0]);
    x->n_pb--;
}

static playback *pb_find(exec *x, unsigned serial)
{
    for (size_t i = 0; i < x->n_pb; i++)
        if (x->pb[i].serial == serial) return &x->pb[i];
    return NULL;
}

/* The playback a tts.played event belongs to: the one with its playbackId;
 * else (no id in the event, or Kaphila's answer not seen yet) the oldest one
 * whose id is still unknown. Kaphila plays a call's playbacks in order. */
static int pb_match(const exec *x, const char *id)
{
    if (id && *id)
        for (size_t i = 0; i < x->n_pb; i++)
            if (strcmp(x->pb[i].id, id) == 0) return (int)i;
    for (size_t i = 0; i < x->n_pb; i++)
        if (!x->pb[i].id[0] || !id || !*id) return (int)i;
    return -1;
}

static void on_play_fallback(loop *l, void *arg);

static void on_play_answer(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    play_ctx *k = arg;
    call *c = k->c;
    exec *x = c->x;
    playback *p = x ? pb_find(x, k->serial) : NULL;
    /* A refused playback will send no tts.played: forget it first, whatever
     * state the call is in (playback_send relies on this, see there). */
    if (p && !kaphila_ok(res)) {
        pb_remove(x, (size_t)(p - x->pb));
        p = NULL;
    }
    if (call_is_over(c) || !x || x->ended)
        goto out;
    if (!kaphila_ok(res)) {
        int code, status;
        char msg[256];
        kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
        call_notify(c, code, LEVEL_ERROR, msg, exec_doc_url(x), exec_doc_method(x));
        if (x->wait != W_DONE)
            exec_hangup(x, "Kaphila refused a playback");
        goto out;
    }
    const char *id = json_string_value(json_object_get(res->body, "playbackId"));
    if (p && id && strlen(id) < sizeof p->id)
        snprintf(p->id, sizeof p->id, "%s", id);
    /* The fallback counts from here, when Kaphila starts playing: the
     * request may have waited in the key's budget for longer than the
     * speech lasts, and must not be skipped for it. (Its tts.played may
     * have come first: then nobody waits for it any more.) */
    if (x->wait == W_PLAYBACK && x->wait_serial == k->serial && !x->t_play &&
        !exec_timer_start(x, &x->t_play, k->fallback_ms, on_play_fallback))
        exec_internal_failure(x, "cannot start a timer");
out:
    free(k);
}

static void playback_done(exec *x)
{
    x->wait = W_NONE;
    x->wait_serial = 0;
    if (x->mode == M_RECORD && !x->r_active)
        exec_record_window_start(x);
    else
        exec_run(x);
}

static void on_play_fallback(loop *l, void *arg)
{
    (void)l;
    call *c = arg;
    exec *x = c->x;
    x->t_play = NULL;
    if (!call_is_over(c) && !x->ended && x->wait == W_PLAYBACK) {
        /* The entry stays: if the event is only late, it still finds it. */
        log_warn("exec", "no tts.played for playback %u in time; going on", x->wait_serial);
        call_log(c, "twiml/playback-timeout",
                 json_pack("{s:s}", "detail", "Kaphila sent no tts.played in time; the next verb"
                           " started on twigate's length-based fallback timer"));
        playback_done(x);
    }
    call_unref(c);
}

/* POST path {key: value}, then wait for its end: its tts.played, or the
 * fallback (fallback_ms from Kaphila's answer, not from now: the request
 * may wait in the key's budget first). False when it could not be sent
 * (the call is then being hung up). */
bool exec_playback_send(exec *x, const char *path, const char *key, const char *value,
                          int64_t fallback_ms)
{
    play_ctx *k = malloc(sizeof *k);
    json_t *body = json_pack("{s:s}", key, value);
    if (!k || !body) {
        free(k);
        json_decref(body);
        exec_internal_failure(x, "out of memory");
        return false;
    }
    if (x->n_pb == EXEC_MAX_PLAYBACKS)
        pb_remove(x, 0);
    if (++x->pb_serial == 0)
        x->pb_serial = 1;            /* 0 means "none" */
    x->pb[x->n_pb].serial = x->pb_serial;
    x->pb[x->n_pb].id[0] = '\0';
    x->n_pb++;
    k->c = x->c;
    k->serial = x->pb_serial;
    k->fallback_ms = fallback_ms;
    x->wait = W_PLAYBACK;
    x->wait_serial = x->pb_serial;
    exec_timer_stop(x, &x->t_play);   /* armed by Kaphila's answer (on_play_answer) */
    unsigned serial = x->pb_serial;
    if (call_kaphila(x->c, path, body, on_play_answer, k) != 0) {
        /* call_kaphila may or may not have run the callback before failing;
         * the callback removes the playback, so its presence tells. */
        playback *p = pb_find(x, serial);
        if (!p)
            return false;
        free(k);
        pb_remove(x, (size_t)(p - x->pb));
        call_notify(x->c, 20500, LEVEL_ERROR, "twigate could not send a playback request to Kaphila",
                    exec_doc_url(x), exec_doc_method(x));
        exec_hangup(x, "cannot reach Kaphila");
        return false;
    }
    return true;
}

void exec_tts_played(exec *x, json_t *ev)
{
    const char *id = json_string_value(json_object_get(ev, "playbackId"));
    int i = pb_match(x, id);
    if (i < 0) {
        log_debug("exec", "tts.played for an unknown playback %s", id ? id : "(no id)");
        return;
    }
    unsigned serial = x->pb[i].serial;
    pb_remove(x, (size_t)i);
    if (x->wait != W_PLAYBACK || serial != x->wait_serial)
        return;   /* a playback nobody waits for any more */
    exec_timer_stop(x, &x->t_play);
    playback_done(x);
}

/* Stops waiting for whatever plays now; Kaphila goes on playing it, and its
 * tts.played will be consumed without effect. */
void exec_playback_abandon(exec *x)
{
    x->wait_serial = 0;
    exec_timer_stop(x, &x->t_play);
}

/* ---------------------------------------------------------------- <Say>, <Play>, <Pause> */

bool exec_sentence_end(const buf *b)
{
    return b->len == 0 || strchr(".!?;:,", b->data[b->len - 1]) != NULL;
}

/* Where to cut a text longer than room: after the last space that fits,
 * else at a UTF-8 character boundary. */
size_t exec_cut_point(const char *s, size_t room)
{
    size_t cut = room;
    while (cut > 0 && s[cut] != ' ') cut--;
    if (cut > 0)
        return cut;
    cut = room;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;
    return cut > 0 ? cut : room;
}

static void report_say(exec *x, const twiml_say *s)
{
    char msg[256], attrs[96];
    if (!(s->voice || s->language) || !exec_once(x, REP_SAY_VOICE))
        return;
    /* Only the attributes written: language="" would claim one was given. */
    int n = s->voice ? snprintf(attrs, sizeof attrs, " voice=\"%.40s\"", s->voice) : 0;
    attrs[n] = '\0';
    if (s->language)
        snprintf(attrs + n, sizeof attrs - (size_t)n, " language=\"%.20s\"", s->language);
    snprintf(msg, sizeof msg, "<Say%s>: Kaphila has no per-request voice or language; the text"
             " is spoken with the call's Kaphila voice (the account's kaphila_voice)", attrs);
    exec_report(x, LEVEL_WARNING, msg, "twiml/unsupported/Say",
                json_pack("{s:s, s:s?, s:s?, s:s}", "verb", "Say", "voice", s->voice, "language",
                          s->language, "action", "spoken with Kaphila's voice"));
}

/* Consecutive <Say> verbs (and the iterations of a looped one) at cur are
 * merged into one /voice text, joined with ". " (or a space after
 * punctuation) — Kaphila's hourly request budget is small. Appends to text
 * (empty, capped at EXEC_MAX_VOICE_TEXT) and moves cur past what it took; a
 * text longer than one /voice is cut and cur->off remembers where. x NULL:
 * no notifications (the unit tests). False when out of memory. */
bool exec_say_merge(exec *x, cursor *cur, buf *text)
{
    bool ok = true;
    while (ok && cur->pc < cur->n && cur->verbs[cur->pc].kind == TV_SAY) {
        const twiml_say *s = &cur->verbs[cur->pc].u.say;
        int loops = s->loop ? s->loop : EXEC_LOOP_FOREVER;
        if (x && cur->iter == 0 && cur->off == 0)
            report_say(x, s);
        if (!s->text[0] || cur->iter >= loops) {
            cur->pc++;
            cur->iter = 0;
            cur->off = 0;
            continue;
        }
        const char *rest = s->text + cur->off;
        size_t rlen = strlen(rest);
        const char *sep = text->len == 0 ? "" : exec_sentence_end(text) ? " " : ". ";
        if (text->len + strlen(sep) + rlen <= EXEC_MAX_VOICE_TEXT) {
            ok = buf_puts(text, sep) == BUF_OK && buf_puts(text, rest) == BUF_OK;
            cur->iter++;
            cur->off = 0;
            continue;
        }
        if (text->len > 0)
            break;                 /* send what is merged; this text goes next */
        size_t cut = exec_cut_point(rest, EXEC_MAX_VOICE_TEXT);
        ok = buf_append(text, rest, cut) == BUF_OK;
        cur->off += cut;
        while (s->text[cur->off] == ' ') cur->off++;
        break;
    }
    return ok;
}

/* Sends the next merged text of cur (exec_say_merge). True when a /voice
 * went out (or the call is being hung up); false when there was nothing to
 * say (cur moved on). */
bool exec_say_next(exec *x, cursor *cur)
{
    buf text;
    cursor before = *cur;
    buf_init(&text, EXEC_MAX_VOICE_TEXT);
    bool ok = exec_say_merge(x, cur, &text);
    if (!ok) {
        buf_fini(&text);
        exec_internal_failure(x, "out of memory");
        return true;
    }
    if (text.len == 0) {
        buf_fini(&text);
        return false;
    }
    int64_t ms = (int64_t)text.len * EXEC_TTS_MS_PER_CHAR + EXEC_TTS_SLACK_MS;
    x->pb_at = before;   /* a resume says this text again */
    x->pb_in_prompt = cur == &x->prompt;
    (void)exec_playback_send(x, "/voice", "text", buf_str(&text), ms);
    buf_fini(&text);
    return true;
}

/* One iteration of the <Play> at cur. True when a /play went out. */
bool exec_play_next(exec *x, cursor *cur)
{
    const twiml_verb *v = &cur->verbs[cur->pc];
    const twiml_play *p = &v->u.play;
    int loops = p->loop ? p->loop : EXEC_LOOP_FOREVER;
    char sound[512], msg[512];
    if (p->digits) {
        if (exec_once(x, REP_PLAY_DIGITS)) {
            snprintf(msg, sizeof msg, "<Play digits=\"%.40s\">: Kaphila cannot send DTMF tones;"
                     " the verb is skipped", p->digits);
            exec_report(x, LEVEL_WARNING, msg, "twiml/unsupported/Play",
                        json_pack("{s:s, s:s, s:s}", "verb", "Play", "digits", p->digits, "action",
                                  "skipped"));
        }
        goto next;
    }
    if (!p->url || cur->iter >= loops)
        goto next;
    char *url = exec_url_resolve(x->doc_url, p->url);
    if (!url || exec_sound_name(call_sound_map(x->c), call_sound_prefix(x->c), url, sound,
                                sizeof sound) != 0) {
        snprintf(msg, sizeof msg, "Invalid URL format: <Play>%.200s</Play> gives no Kaphila sound"
                 " name (see play.sound_map); the verb is skipped", p->url);
        call_notify(x->c, CODE_BAD_URL, LEVEL_ERROR, msg, exec_doc_url(x),
                    exec_doc_method(x));
        free(url);
        goto next;
    }
    free(url);
    x->pb_at = *cur;   /* a resume plays this iteration again */
    x->pb_in_prompt = cur == &x->prompt;
    cur->iter++;
    (void)exec_playback_send(x, "/play", "file", sound, EXEC_PLAY_FALLBACK_MS);
    return true;
next:
    cur->pc++;
    cur->iter = 0;
    cur->off = 0;
    return false;
}

void exec_pause_end(loop *l, void *arg)
{
    (void)l;
    call *c = arg;
    exec *x = c->x;
    x->t_play = NULL;
    if (!call_is_over(c) && !x->ended && x->wait == W_PAUSE) {
        x->wait = W_NONE;
        exec_run(x);
    }
    call_unref(c);
}
