/* exec.c — the TwiML executor: runs a call's TwiML documents on Kaphila with
 * Twilio's semantics (contract §10.3–10.4 and §11; docs/twiml.md says how
 * each verb maps onto Kaphila and where the result differs from Twilio).
 *
 * Map of this file: caps and constants; the per-call state (struct exec);
 * helpers (reports, URLs, forms, timers); playbacks (/voice and /play, and
 * the tts.played accounting); documents (fetch, content types, fallback, the
 * application-error document); the verb runner (a cursor over the document
 * and one over a <Gather>'s prompts); <Gather>; <Record>; the engine's entry
 * points at the bottom.
 *
 * Model: the executor is always in one of a few waits (a document, a
 * playback, a <Pause>, caller input, the hang-up) and every event, timer or
 * answer moves it on. Everything runs on the engine loop. Each asynchronous
 * callback owns a call reference — taken by call_kaphila/call_webhook, or
 * here for timers — and checks call_is_over() before touching the executor.
 * Document fetches carry the generation they were made in: REST updates and
 * new documents bump it, so a late answer for an abandoned document is
 * dropped. Playbacks Kaphila cannot stop are still counted, so their
 * tts.played events are consumed by the playback they belong to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>

#include "base/buf.h"
#include "engine_int.h"
#include "engine/exec_sound.h"
#include "base/form.h"
#include "base/log.h"
#include "base/sid.h"
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
};

/* Context of a document fetch. */
typedef struct fetch_ctx {
    call    *c;
    unsigned gen;
    bool     fallback;    /* this is the FallbackUrl request */
    bool     final;       /* the call is over: the answer is not executed */
    char    *url;
    char    *method;
} fetch_ctx;

/* Context of a /voice or /play. */
typedef struct play_ctx {
    call    *c;
    unsigned serial;
} play_ctx;

static void run(exec *x);
static void fetch_doc(exec *x, const char *url, const char *method, const form *extra,
                      bool fallback);
static void record_window_start(exec *x);

/* ---------------------------------------------------------------- helpers */

/* The current document's URL and method for notifications: NULL when the
 * document did not come from a URL (inline Twiml, twigate's own). */
static const char *doc_url(const exec *x)
{
    return x->doc_url;
}

static const char *doc_method(const exec *x)
{
    return x->doc_method;
}

static const char *param_str(call *c, const char *key)
{
    const char *v = json_string_value(call_row_param(c, key));
    return v && *v ? v : NULL;
}

/* A notification about TwiML the executor cannot carry out, with a
 * structured event-log line next to it. detail is stolen. */
static void report(exec *x, int level, const char *msg, const char *what, json_t *detail)
{
    call_notify(x->c, CODE_UNSUPPORTED, level, msg, doc_url(x), doc_method(x));
    call_log(x->c, what, detail);
}

static bool once(exec *x, unsigned bit)
{
    if (x->reported & bit)
        return false;
    x->reported |= bit;
    return true;
}

static bool add(form *f, const char *k, const char *v)
{
    return form_add(f, k, v) == FORM_OK;
}

static bool has_http_scheme(const char *u)
{
    return strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0;
}

/* ref resolved against base (NULL = none), as a new heap string; only http
 * and https results. An absolute ref is kept byte for byte, because it is
 * what the customer wrote and what the signature is computed over. NULL
 * when ref cannot be resolved. */
static char *url_resolve(const char *base, const char *ref)
{
    CURLU *u = NULL;
    char *out = NULL, *scheme = NULL, *res = NULL;
    if (!ref || !*ref)
        return NULL;
    u = curl_url();
    if (!u)
        return NULL;
    if (has_http_scheme(ref)) {
        if (curl_url_set(u, CURLUPART_URL, ref, 0) == CURLUE_OK)
            res = strdup(ref);
        goto out;
    }
    if (!base || curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, ref, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) ||
        curl_url_get(u, CURLUPART_URL, &out, 0) != CURLUE_OK)
        goto out;
    res = strdup(out);
out:
    curl_free(out);
    curl_free(scheme);
    curl_url_cleanup(u);
    return res;
}

/* The standard parameters (contract §8.1). With completed, CallStatus says
 * "completed" whatever the engine's row says yet: requests made because the
 * caller hung up carry it (contract §8.5). */
static bool voice_params(exec *x, form *f, bool completed)
{
    form tmp;
    bool ok = true;
    if (!completed) {
        call_voice_params(x->c, f);
        return true;
    }
    form_init(&tmp);
    call_voice_params(x->c, &tmp);
    for (size_t i = 0; i < tmp.n && ok; i++)
        ok = add(f, tmp.pairs[i].key,
                 strcmp(tmp.pairs[i].key, "CallStatus") == 0 ? "completed" : tmp.pairs[i].value);
    if (ok && !form_get(&tmp, "CallStatus"))
        ok = add(f, "CallStatus", "completed");
    form_fini(&tmp);
    return ok;
}

/* ---------------------------------------------------------------- timers */

/* A timer holds a call reference until it fires or is stopped. */
static bool timer_start(exec *x, loop_timer **slot, int64_t ms, loop_timer_fn fn)
{
    call_ref(x->c);
    *slot = loop_timer_add(call_loop(x->c), ms, fn, x->c);
    if (*slot)
        return true;
    call_unref(x->c);
    return false;
}

static void timer_stop(exec *x, loop_timer **slot)
{
    if (!*slot)
        return;
    loop_timer_cancel(call_loop(x->c), *slot);
    *slot = NULL;
    call_unref(x->c);   /* never the last reference: every entry point holds one */
}

/* ---------------------------------------------------------------- hang-up */

/* routine: the TwiML asked for it (<Hangup>, <Reject>, its end). That is
 * every call's last step, so it is logged at debug: an info line per call
 * was one more write(2) on the engine thread for nothing an operator acts
 * on (the call's Events log has it). Hang-ups twigate chose stay at info. */
static void hangup_as(exec *x, const char *why, bool routine)
{
    x->wait = W_DONE;
    x->mode = M_NONE;
    x->wait_serial = 0;
    timer_stop(x, &x->t_play);
    timer_stop(x, &x->t_input);
    log_write(routine ? LOG_DEBUG : LOG_INFO, "exec", "hanging up: %s", why);
    call_hangup(x->c, why);
}

static void hangup(exec *x, const char *why)
{
    hangup_as(x, why, false);
}

/* Something twigate itself could not do (out of memory, a timer): the call
 * cannot follow its TwiML any more, so it ends with an error notification. */
static void internal_failure(exec *x, const char *what)
{
    char msg[192];
    snprintf(msg, sizeof msg, "twigate could not continue the call's TwiML: %s", what);
    call_notify(x->c, 11200, LEVEL_ERROR, msg, doc_url(x), doc_method(x));
    hangup(x, what);
}

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
        call_notify(c, code, LEVEL_ERROR, msg, doc_url(x), doc_method(x));
        if (x->wait != W_DONE)
            hangup(x, "Kaphila refused a playback");
        goto out;
    }
    const char *id = json_string_value(json_object_get(res->body, "playbackId"));
    if (p && id && strlen(id) < sizeof p->id)
        snprintf(p->id, sizeof p->id, "%s", id);
out:
    free(k);
}

static void playback_done(exec *x)
{
    x->wait = W_NONE;
    x->wait_serial = 0;
    if (x->mode == M_RECORD && !x->r_active)
        record_window_start(x);
    else
        run(x);
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

/* POST path {key: value}, then wait for its end. False when it could not be
 * sent (the call is then being hung up). */
static bool playback_send(exec *x, const char *path, const char *key, const char *value,
                          int64_t fallback_ms)
{
    play_ctx *k = malloc(sizeof *k);
    json_t *body = json_pack("{s:s}", key, value);
    if (!k || !body) {
        free(k);
        json_decref(body);
        internal_failure(x, "out of memory");
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
    x->wait = W_PLAYBACK;
    x->wait_serial = x->pb_serial;
    if (!timer_start(x, &x->t_play, fallback_ms, on_play_fallback)) {
        free(k);
        json_decref(body);
        internal_failure(x, "cannot start a timer");
        return false;
    }
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
                    doc_url(x), doc_method(x));
        hangup(x, "cannot reach Kaphila");
        return false;
    }
    return true;
}

static void on_tts_played(exec *x, json_t *ev)
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
    timer_stop(x, &x->t_play);
    playback_done(x);
}

/* Stops waiting for whatever plays now; Kaphila goes on playing it, and its
 * tts.played will be consumed without effect. */
static void playback_abandon(exec *x)
{
    x->wait_serial = 0;
    timer_stop(x, &x->t_play);
}

/* ---------------------------------------------------------------- documents */

static twiml_verb *synth_verbs(twiml_doc *d, size_t n)
{
    d->verbs = calloc(n, sizeof *d->verbs);
    d->n_verbs = d->verbs ? n : 0;
    return d->verbs;
}

/* A document of <Say text/> (or <Play url/>) then <Hangup/>: what Twilio
 * does with text/plain and audio answers and with application errors. */
static twiml_doc *synth_doc(twiml_verb_kind kind, const char *s)
{
    twiml_doc *d = calloc(1, sizeof *d);
    twiml_verb *v;
    if (!d || !(v = synth_verbs(d, 2)))
        goto fail;
    v[0].kind = kind;
    v[0].name = strdup(kind == TV_SAY ? "Say" : "Play");
    v[1].kind = TV_HANGUP;
    v[1].name = strdup("Hangup");
    if (kind == TV_SAY) {
        v[0].u.say.loop = 1;
        v[0].u.say.text = strdup(s);
        if (!v[0].u.say.text) goto fail;
    } else {
        v[0].u.play.loop = 1;
        v[0].u.play.url = strdup(s);
        if (!v[0].u.play.url) goto fail;
    }
    if (!v[0].name || !v[1].name)
        goto fail;
    return d;
fail:
    twiml_doc_destroy(d);
    return NULL;
}

/* Resets the verb state and installs doc (owned from now on). */
static void doc_set(exec *x, twiml_doc *doc, const char *url, const char *method)
{
    char *u = url ? strdup(url) : NULL;
    char *m = method ? strdup(method) : NULL;
    x->mode = M_NONE;
    x->g = NULL;
    x->r = NULL;
    x->r_active = false;
    twiml_doc_destroy(x->doc);
    free(x->doc_url);
    free(x->doc_method);
    x->doc = doc;
    x->doc_url = u;
    x->doc_method = m;
    memset(&x->top, 0, sizeof x->top);
    x->top.verbs = doc->verbs;
    x->top.n = doc->n_verbs;
    x->wait = W_NONE;
}

static void app_error(exec *x)
{
    twiml_doc *d = synth_doc(TV_SAY, APP_ERROR_TEXT);
    if (!d) {
        internal_failure(x, "out of memory");
        return;
    }
    call_log(x->c, "twiml/application-error",
             json_pack("{s:s}", "detail", "no usable TwiML: playing the application-error"
                       " message, then hanging up"));
    doc_set(x, d, NULL, NULL);
    run(x);
}

/* A document could not be had from url (code says why; the notification is
 * out already): FallbackUrl with ErrorCode and ErrorUrl, once; else the
 * application-error message (contract §10.3). */
static void fetch_failed(exec *x, int code, const char *url, bool was_fallback)
{
    const char *fb = param_str(x->c, "fallback_url");
    if (!was_fallback && fb && x->wait != W_DONE) {
        const char *fm = param_str(x->c, "fallback_method");
        char num[16];
        form extra;
        form_init(&extra);
        snprintf(num, sizeof num, "%d", code);
        if (add(&extra, "ErrorCode", num) && add(&extra, "ErrorUrl", url ? url : "")) {
            fetch_doc(x, fb, fm ? fm : "POST", &extra, true);
            form_fini(&extra);
            return;
        }
        form_fini(&extra);
    }
    app_error(x);
}

/* Parses xml; on success emits the 12200 warnings and returns the document. */
static twiml_doc *parse(exec *x, const char *xml, size_t len, const char *url, const char *method,
                        int *code)
{
    const config *cfg = call_config(x->c);
    twiml_limits lim;
    char err[512];
    twiml_limits_default(&lim);
    lim.max_bytes = (size_t)cfg->max_twiml_bytes;
    lim.max_depth = cfg->max_twiml_depth;
    twiml_doc *d = twiml_parse(xml, len, &lim, code, err, sizeof err);
    if (!d) {
        if (*code == 0) {
            *code = 12100;
            snprintf(err, sizeof err, "twigate ran out of memory parsing the document");
        }
        call_notify(x->c, *code, LEVEL_ERROR, err, url, method);
        return NULL;
    }
    for (size_t i = 0; i < d->n_warnings; i++)
        call_notify(x->c, d->warnings[i].code, LEVEL_WARNING, d->warnings[i].message, url,
                    method);
    return d;
}

/* "text/xml; charset=utf-8" → "text/xml" in out, lower case. */
static void media_type(const char *ct, char *out, size_t n)
{
    size_t i = 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    for (; ct[i] && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t' && i + 1 < n; i++)
        out[i] = (char)((ct[i] >= 'A' && ct[i] <= 'Z') ? ct[i] + 32 : ct[i]);
    out[i] = '\0';
}

/* What Twilio does with an answer, by its content type (contract §10.4). */
static void doc_from_answer(exec *x, const fetch_ctx *k, const webhook_result *res)
{
    char mt[128];
    twiml_doc *d = NULL;
    int code = 0;
    media_type(res->content_type, mt, sizeof mt);
    if (!strcmp(mt, "text/xml") || !strcmp(mt, "application/xml") || !strcmp(mt, "text/html")) {
        d = parse(x, buf_str(&res->body), res->body.len, k->url, k->method, &code);
        if (!d) {
            fetch_failed(x, code, k->url, k->fallback);
            return;
        }
    } else if (!strncmp(mt, "audio/", 6)) {
        d = synth_doc(TV_PLAY, k->url);
    } else if (!strcmp(mt, "text/plain")) {
        size_t cap = EXEC_MAX_PLAIN_TEXT(x->c);
        buf text;
        buf_init(&text, cap);
        /* One line of speech: whitespace runs become one space. */
        const char *s = buf_str(&res->body);
        bool space = false, ok = true;
        for (size_t i = 0; i < res->body.len && text.len < cap && ok; i++) {
            char ch = s[i];
            if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\0') {
                space = text.len > 0;
                continue;
            }
            if (space) ok = buf_append(&text, " ", 1) == BUF_OK;
            space = false;
            if (ok) ok = buf_append(&text, &ch, 1) == BUF_OK;
        }
        d = synth_doc(TV_SAY, buf_str(&text));
        buf_fini(&text);
    } else {
        char msg[256];
        snprintf(msg, sizeof msg, "Invalid Content-Type: '%.100s' is neither TwiML (text/xml,"
                 " application/xml, text/html), audio/* nor text/plain", res->content_type);
        call_notify(x->c, CODE_CONTENT_TYPE, LEVEL_ERROR, msg, k->url, k->method);
        fetch_failed(x, CODE_CONTENT_TYPE, k->url, k->fallback);
        return;
    }
    if (!d) {
        internal_failure(x, "out of memory");
        return;
    }
    doc_set(x, d, k->url, k->method);
    run(x);
}

static void fetch_ctx_free(fetch_ctx *k)
{
    if (!k) return;
    free(k->url);
    free(k->method);
    free(k);
}

static void on_doc(loop *l, void *arg, const webhook_result *res)
{
    (void)l;
    fetch_ctx *k = arg;
    call *c = k->c;
    exec *x = c->x;
    if (k->final || call_is_over(c) || !x || x->ended || k->gen != x->gen || x->wait != W_FETCH)
        goto out;
    if (res->error_code) {
        /* call_webhook has notified already. */
        fetch_failed(x, res->error_code, k->url, k->fallback);
        goto out;
    }
    doc_from_answer(x, k, res);
out:
    fetch_ctx_free(k);
}

static fetch_ctx *fetch_ctx_new(exec *x, const char *url, const char *method)
{
    fetch_ctx *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->c = x->c;
    k->gen = x->gen;
    k->url = strdup(url);
    k->method = strdup(method);
    if (!k->url || !k->method) {
        fetch_ctx_free(k);
        return NULL;
    }
    return k;
}

/* Requests url with the standard parameters plus extra; the answer becomes
 * the current document. */
static void fetch_doc(exec *x, const char *url, const char *method, const form *extra,
                      bool fallback)
{
    form f;
    fetch_ctx *k;
    bool ok;
    x->gen++;
    x->wait = W_FETCH;
    x->mode = M_NONE;
    form_init(&f);
    ok = voice_params(x, &f, false);
    for (size_t i = 0; extra && ok && i < extra->n; i++)
        ok = add(&f, extra->pairs[i].key, extra->pairs[i].value);
    k = ok ? fetch_ctx_new(x, url, method) : NULL;
    if (!k) {
        form_fini(&f);
        internal_failure(x, "out of memory");
        return;
    }
    k->fallback = fallback;
    if (call_webhook(x->c, url, method, &f, true, on_doc, k) != 0) {
        char msg[160];
        fetch_ctx_free(k);
        form_fini(&f);
        snprintf(msg, sizeof msg, "HTTP retrieval failure: twigate could not start the request");
        call_notify(x->c, 11200, LEVEL_ERROR, msg, url, method);
        fetch_failed(x, 11200, url, fallback);
        return;
    }
    form_fini(&f);
}

/* The loop guard: a call follows at most limits.max_redirects documents
 * after its first one — <Redirect>s and <Gather>/<Record> actions, the steps
 * a document can take by itself (the fallback and REST updates do not
 * count). Past it: 11215 and hang-up. */
static bool follow_allowed(exec *x, const char *what)
{
    call *c = x->c;
    char msg[256];
    if (c->redirects < call_config(c)->max_redirects) {
        c->redirects++;
        return true;
    }
    snprintf(msg, sizeof msg, "Too many redirects: the call already followed %d documents"
             " (<Redirect> and actions; limits.max_redirects); %s not requested, hanging up",
             c->redirects, what);
    call_notify(c, CODE_TOO_MANY_REDIRECTS, LEVEL_ERROR, msg, doc_url(x), doc_method(x));
    hangup(x, "too many redirects");
    return false;
}

/* An action URL: the attribute resolved against the document, or the
 * document's own URL (Twilio's default for <Gather> and <Record>). NULL
 * (with a notification) when there is none. */
static char *action_url(exec *x, const char *attr, const char *verb)
{
    char msg[256];
    char *u = attr ? url_resolve(x->doc_url, attr) : (x->doc_url ? strdup(x->doc_url) : NULL);
    if (u)
        return u;
    if (attr)
        snprintf(msg, sizeof msg, "Invalid URL format: <%s action=\"%.150s\"> is not an http(s)"
                 " URL%s", verb, attr, x->doc_url ? "" : " (relative URLs need a document URL)");
    else
        snprintf(msg, sizeof msg, "<%s> has no action and the document has no URL (it came from"
                 " the Twiml parameter): the result cannot be delivered", verb);
    call_notify(x->c, CODE_BAD_URL, LEVEL_ERROR, msg, doc_url(x), doc_method(x));
    return NULL;
}

/* ---------------------------------------------------------------- <Say>, <Play>, <Pause> */

static bool sentence_end(const buf *b)
{
    return b->len == 0 || strchr(".!?;:,", b->data[b->len - 1]) != NULL;
}

/* Where to cut a text longer than room: after the last space that fits,
 * else at a UTF-8 character boundary. */
static size_t cut_point(const char *s, size_t room)
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
    if (!(s->voice || s->language) || !once(x, REP_SAY_VOICE))
        return;
    /* Only the attributes written: language="" would claim one was given. */
    int n = s->voice ? snprintf(attrs, sizeof attrs, " voice=\"%.40s\"", s->voice) : 0;
    attrs[n] = '\0';
    if (s->language)
        snprintf(attrs + n, sizeof attrs - (size_t)n, " language=\"%.20s\"", s->language);
    snprintf(msg, sizeof msg, "<Say%s>: Kaphila has no per-request voice or language; the text"
             " is spoken with the call's Kaphila voice (the account's kaphila_voice)", attrs);
    report(x, LEVEL_WARNING, msg, "twiml/unsupported/Say",
           json_pack("{s:s, s:s?, s:s?, s:s}", "verb", "Say", "voice", s->voice, "language",
                     s->language, "action", "spoken with Kaphila's voice"));
}

/* Consecutive <Say> verbs (and the iterations of a looped one) at cur are
 * merged into one /voice text, joined with ". " (or a space after
 * punctuation) — Kaphila's hourly request budget is small. True when a
 * /voice went out; false when there was nothing to say (cur moved on). */
static bool say_next(exec *x, cursor *cur)
{
    buf text;
    buf_init(&text, EXEC_MAX_VOICE_TEXT);
    bool ok = true;
    while (ok && cur->pc < cur->n && cur->verbs[cur->pc].kind == TV_SAY) {
        const twiml_say *s = &cur->verbs[cur->pc].u.say;
        int loops = s->loop ? s->loop : EXEC_LOOP_FOREVER;
        if (cur->iter == 0 && cur->off == 0)
            report_say(x, s);
        if (!s->text[0] || cur->iter >= loops) {
            cur->pc++;
            cur->iter = 0;
            cur->off = 0;
            continue;
        }
        const char *rest = s->text + cur->off;
        size_t rlen = strlen(rest);
        const char *sep = text.len == 0 ? "" : sentence_end(&text) ? " " : ". ";
        if (text.len + strlen(sep) + rlen <= EXEC_MAX_VOICE_TEXT) {
            ok = buf_puts(&text, sep) == BUF_OK && buf_puts(&text, rest) == BUF_OK;
            cur->iter++;
            cur->off = 0;
            continue;
        }
        if (text.len > 0)
            break;                 /* send what is merged; this text goes next */
        size_t cut = cut_point(rest, EXEC_MAX_VOICE_TEXT);
        ok = buf_append(&text, rest, cut) == BUF_OK;
        cur->off += cut;
        while (s->text[cur->off] == ' ') cur->off++;
        break;
    }
    if (!ok) {
        buf_fini(&text);
        internal_failure(x, "out of memory");
        return true;
    }
    if (text.len == 0) {
        buf_fini(&text);
        return false;
    }
    int64_t ms = (int64_t)text.len * EXEC_TTS_MS_PER_CHAR + EXEC_TTS_SLACK_MS;
    (void)playback_send(x, "/voice", "text", buf_str(&text), ms);
    buf_fini(&text);
    return true;
}

/* One iteration of the <Play> at cur. True when a /play went out. */
static bool play_next(exec *x, cursor *cur)
{
    const twiml_verb *v = &cur->verbs[cur->pc];
    const twiml_play *p = &v->u.play;
    int loops = p->loop ? p->loop : EXEC_LOOP_FOREVER;
    char sound[512], msg[512];
    if (p->digits) {
        if (once(x, REP_PLAY_DIGITS)) {
            snprintf(msg, sizeof msg, "<Play digits=\"%.40s\">: Kaphila cannot send DTMF tones;"
                     " the verb is skipped", p->digits);
            report(x, LEVEL_WARNING, msg, "twiml/unsupported/Play",
                   json_pack("{s:s, s:s, s:s}", "verb", "Play", "digits", p->digits, "action",
                             "skipped"));
        }
        goto next;
    }
    if (!p->url || cur->iter >= loops)
        goto next;
    char *url = url_resolve(x->doc_url, p->url);
    if (!url || exec_sound_name(call_sound_map(x->c), call_sound_prefix(x->c), url, sound,
                                sizeof sound) != 0) {
        snprintf(msg, sizeof msg, "Invalid URL format: <Play>%.200s</Play> gives no Kaphila sound"
                 " name (see play.sound_map); the verb is skipped", p->url);
        call_notify(x->c, CODE_BAD_URL, LEVEL_ERROR, msg, doc_url(x),
                    doc_method(x));
        free(url);
        goto next;
    }
    free(url);
    cur->iter++;
    (void)playback_send(x, "/play", "file", sound, EXEC_PLAY_FALLBACK_MS);
    return true;
next:
    cur->pc++;
    cur->iter = 0;
    cur->off = 0;
    return false;
}

static void on_pause_end(loop *l, void *arg)
{
    (void)l;
    call *c = arg;
    exec *x = c->x;
    x->t_play = NULL;
    if (!call_is_over(c) && !x->ended && x->wait == W_PAUSE) {
        x->wait = W_NONE;
        run(x);
    }
    call_unref(c);
}

/* ---------------------------------------------------------------- unsupported verbs */

static const struct { const char *verb, *why; } unsupported_why[] = {
    {"Dial", "Kaphila cannot dial or bridge another party"},
    {"Enqueue", "Kaphila has no call queues"},
    {"Leave", "Kaphila has no call queues"},
    {"Queue", "Kaphila has no call queues"},
    {"Connect", "Kaphila has no media streams or virtual agents"},
    {"Start", "Kaphila has no media streams, SIPREC or live transcription"},
    {"Stop", "Kaphila has no media streams, SIPREC or live transcription"},
    {"Pay", "Kaphila has no payment capture"},
    {"Prompt", "<Prompt> belongs to <Pay>, which Kaphila cannot carry out"},
    {"Refer", "Kaphila cannot transfer a call (no SIP REFER)"},
    {"Sms", "Kaphila cannot send SMS"},
    {"Echo", "Kaphila has no echo test"},
};

static void report_unsupported(exec *x, const twiml_verb *v)
{
    const char *why = "Kaphila cannot carry it out";
    char msg[256];
    for (size_t i = 0; i < sizeof unsupported_why / sizeof unsupported_why[0]; i++)
        if (!strcmp(unsupported_why[i].verb, v->name)) why = unsupported_why[i].why;
    snprintf(msg, sizeof msg, "<%.40s> is not supported on Kaphila (%s); it was skipped and"
             " execution continued with the next verb", v->name, why);
    call_notify(x->c, CODE_UNSUPPORTED, LEVEL_ERROR, msg, doc_url(x),
                doc_method(x));
    call_log(x->c, "twiml/unsupported/verb",
             json_pack("{s:s, s:i, s:s, s:s}", "verb", v->name, "line", v->line, "reason", why,
                       "action", "skipped"));
}

/* ---------------------------------------------------------------- <Gather> */

static void on_gather_timeout(loop *l, void *arg);

static void gather_arm(exec *x)
{
    timer_stop(x, &x->t_input);
    x->wait = W_INPUT;
    if (!timer_start(x, &x->t_input, (int64_t)x->g->timeout * 1000, on_gather_timeout))
        internal_failure(x, "cannot start a timer");
}

static void gather_start(exec *x, const twiml_verb *v)
{
    const twiml_gather *g = &v->u.gather;
    x->mode = M_GATHER;
    x->g = g;
    x->g_prompts_done = false;
    x->n_digits = 0;
    x->digits[0] = '\0';
    memset(&x->prompt, 0, sizeof x->prompt);
    x->prompt.verbs = g->children;
    x->prompt.n = g->n_children;
    if ((g->input & TGATHER_SPEECH) && once(x, REP_SPEECH))
        report(x, LEVEL_WARNING, (g->input & TGATHER_DTMF)
               ? "<Gather input=\"dtmf speech\">: Kaphila has no speech recognition; only keys"
                 " are collected (no SpeechResult)"
               : "<Gather input=\"speech\">: Kaphila has no speech recognition; the gather waits"
                 " for its timeout and ends with no result",
               "twiml/unsupported/Gather",
               json_pack("{s:s, s:s, s:s}", "verb", "Gather", "attribute", "input", "action",
                         "speech ignored"));
}

/* The gather ends. Nothing entered (and no actionOnEmptyResult): fall through
 * to the next verb. Else the action is requested and its answer replaces the
 * document (contract §8.4, §11.5). key: the finishOnKey pressed, or 0. */
static void gather_finish(exec *x, char key)
{
    const twiml_gather *g = x->g;
    char fok[2] = {key, '\0'};
    timer_stop(x, &x->t_input);
    playback_abandon(x);
    x->mode = M_NONE;
    if (x->n_digits == 0 && !g->action_on_empty_result) {
        call_log(x->c, "twiml/gather/no-input",
                 json_pack("{s:s}", "detail", "no input: continuing with the next verb"));
        x->top.pc++;
        x->wait = W_NONE;
        run(x);
        return;
    }
    char *url = action_url(x, g->action, "Gather");
    if (!url) {
        x->top.pc++;
        x->wait = W_NONE;
        run(x);
        return;
    }
    form extra;
    form_init(&extra);
    if (!add(&extra, "msg", "Gather End") || !add(&extra, "Digits", x->digits) ||
        !add(&extra, "FinishedOnKey", fok))
        internal_failure(x, "out of memory");
    else if (follow_allowed(x, "the <Gather> action"))
        fetch_doc(x, url, twiml_method_name(g->method), &extra, false);
    form_fini(&extra);
    free(url);
}

static void on_gather_timeout(loop *l, void *arg)
{
    (void)l;
    call *c = arg;
    exec *x = c->x;
    x->t_input = NULL;
    if (!call_is_over(c) && !x->ended && x->mode == M_GATHER)
        gather_finish(x, 0);
    call_unref(c);
}

/* The nested verbs have played: the timeout starts (contract §11.5). */
static void gather_prompts_done(exec *x)
{
    x->g_prompts_done = true;
    gather_arm(x);
}

static void gather_key(exec *x, char d)
{
    const twiml_gather *g = x->g;
    if (!(g->input & TGATHER_DTMF))
        return;
    if (!x->g_prompts_done) {
        /* Twilio stops the prompt at the first key. Kaphila cannot stop a
         * playback: the rest of the prompt is not sent, but what plays now
         * plays to its end. */
        if (x->wait == W_PLAYBACK && once(x, REP_BARGE_IN))
            call_log(x->c, "twiml/gather/barge-in",
                     json_pack("{s:s}", "detail", "key pressed during the prompt: the rest of"
                               " the prompt is skipped, but Kaphila cannot stop the playback"
                               " in progress"));
        playback_abandon(x);
        x->g_prompts_done = true;
    }
    if (g->finish_on_key && d == g->finish_on_key) {
        gather_finish(x, d);
        return;
    }
    x->digits[x->n_digits++] = d;
    x->digits[x->n_digits] = '\0';
    if ((g->num_digits > 0 && x->n_digits >= (size_t)g->num_digits) ||
        x->n_digits == EXEC_MAX_DIGITS) {
        gather_finish(x, 0);
        return;
    }
    gather_arm(x);    /* the timeout restarts after each key */
}

/* ---------------------------------------------------------------- <Record> */

static void on_record_max(loop *l, void *arg);

static void record_reports(exec *x, const twiml_record *r)
{
    /* Only a timeout the document asks for: Twilio's default (5 s) applies
     * to every <Record>, and warning about it would flag every call that
     * records (docs/compatibility.md keeps the difference). */
    if (r->timeout_given && r->timeout > 0 && once(x, REP_REC_TIMEOUT))
        report(x, LEVEL_WARNING, "<Record timeout>: Kaphila cannot detect silence; the recording"
               " ends on finishOnKey, maxLength or hang-up only", "twiml/unsupported/Record",
               json_pack("{s:s, s:s, s:i, s:s}", "verb", "Record", "attribute", "timeout",
                         "value", r->timeout, "action", "ignored"));
    if (r->transcribe && once(x, REP_REC_TRANSCRIBE))
        report(x, LEVEL_WARNING, "<Record transcribe=\"true\">: Kaphila has no transcription;"
               " no transcription is made", "twiml/unsupported/Record",
               json_pack("{s:s, s:s, s:s}", "verb", "Record", "attribute", "transcribe",
                         "action", "ignored"));
    if (r->trim && once(x, REP_REC_TRIM))
        call_log(x->c, "twiml/unsupported/Record",
                 json_pack("{s:s, s:s, s:s, s:s}", "verb", "Record", "attribute", "trim",
                           "value", "trim-silence", "action", "not applied: the recording"
                           " keeps its leading and trailing silence"));
}

static void record_start(exec *x, const twiml_verb *v)
{
    x->mode = M_RECORD;
    x->r = &v->u.record;
    x->r_active = false;
    record_reports(x, x->r);
    if (x->r->play_beep)
        (void)playback_send(x, "/play", "file", EXEC_BEEP_SOUND, EXEC_BEEP_FALLBACK_MS);
    else
        record_window_start(x);
}

static void record_window_start(exec *x)
{
    x->r_active = true;
    x->r_start = call_answered_ms(x->c);
    x->wait = W_INPUT;
    if (!timer_start(x, &x->t_input, (int64_t)x->r->max_length * 1000, on_record_max))
        internal_failure(x, "cannot start a timer");
}

/* The recording window closes: a Recording resource for it, then the action
 * with RecordingUrl, RecordingSid, RecordingDuration and Digits (contract
 * §8.5). digits: the key, "hangup", or NULL when maxLength ended it (Twilio
 * sends "the key, if any"). An empty recording (under half a second) gets
 * no action request and execution falls through (contract §11.6). */
static void record_end(exec *x, const char *digits, bool hung_up)
{
    const twiml_record *r = x->r;
    int64_t end = call_answered_ms(x->c);
    int64_t len = end > x->r_start ? end - x->r_start : 0;
    long secs = (long)((len + 500) / 1000);
    char re[SID_SIZE], dur[24], rec_url[1024];
    char *rsc = NULL, *url = NULL;
    form extra;

    timer_stop(x, &x->t_input);
    x->mode = M_NONE;
    x->r_active = false;
    if (!sid_new("RE", re)) {
        internal_failure(x, "no randomness for a Recording SID");
        return;
    }
    if (r->rsc && !(rsc = url_resolve(x->doc_url, r->rsc))) {
        char msg[256];
        snprintf(msg, sizeof msg, "Invalid URL format: recordingStatusCallback \"%.150s\" is not"
                 " an http(s) URL; no recording callback is sent", r->rsc);
        call_notify(x->c, CODE_BAD_URL, LEVEL_ERROR, msg, doc_url(x),
                    doc_method(x));
    }
    call_record_window(x->c, re, x->r_start, end < x->r_start ? x->r_start : end, rsc,
                       twiml_method_name(r->rsc_method), r->rsc_events);
    free(rsc);
    if (secs == 0) {
        call_log(x->c, "twiml/record/empty",
                 json_pack("{s:s, s:s}", "recordingSid", re, "detail", "empty recording: no"
                           " action request; continuing with the next verb"));
        if (!hung_up) {
            x->top.pc++;
            x->wait = W_NONE;
            run(x);
        }
        return;
    }
    if (!(url = action_url(x, r->action, "Record"))) {
        if (!hung_up) {
            x->top.pc++;
            x->wait = W_NONE;
            run(x);
        }
        return;
    }
    snprintf(dur, sizeof dur, "%ld", secs);
    snprintf(rec_url, sizeof rec_url, "%s/2010-04-01/Accounts/%s/Recordings/%s",
             call_public_url(x->c), call_row_account_sid(x->c), re);
    form_init(&extra);
    bool ok = add(&extra, "RecordingUrl", rec_url) && add(&extra, "RecordingSid", re) &&
              add(&extra, "RecordingDuration", dur) && (!digits || add(&extra, "Digits", digits));
    if (!ok) {
        internal_failure(x, "out of memory");
    } else if (!hung_up) {
        if (follow_allowed(x, "the <Record> action"))
            fetch_doc(x, url, twiml_method_name(r->method), &extra, false);
    } else {
        /* The call is over: Twilio still posts the action (CallStatus
         * completed, Digits hangup); its answer is not executed. */
        form f;
        fetch_ctx *k = fetch_ctx_new(x, url, twiml_method_name(r->method));
        form_init(&f);
        ok = k && voice_params(x, &f, true);
        for (size_t i = 0; ok && i < extra.n; i++)
            ok = add(&f, extra.pairs[i].key, extra.pairs[i].value);
        if (k) k->final = true;
        if (!ok || call_webhook(x->c, url, k->method, &f, true, on_doc, k) != 0) {
            log_warn("exec", "could not send the <Record> action after the hang-up");
            fetch_ctx_free(k);
        }
        form_fini(&f);
    }
    form_fini(&extra);
    free(url);
}

static void on_record_max(loop *l, void *arg)
{
    (void)l;
    call *c = arg;
    exec *x = c->x;
    x->t_input = NULL;
    if (!call_is_over(c) && !x->ended && x->mode == M_RECORD && x->r_active)
        record_end(x, NULL, false);
    call_unref(c);
}

static void record_key(exec *x, char d)
{
    if (!x->r_active || !x->r->finish_on_key || !strchr(x->r->finish_on_key, d))
        return;   /* Twilio records other keys as sound */
    char key[2] = {d, '\0'};
    record_end(x, key, false);
}

/* ---------------------------------------------------------------- <Redirect> */

static void redirect(exec *x, const twiml_verb *v)
{
    char msg[256];
    if (!follow_allowed(x, "the <Redirect>"))
        return;
    char *url = url_resolve(x->doc_url, v->u.redirect.url);
    if (!url) {
        snprintf(msg, sizeof msg, "Invalid URL format: <Redirect>%.150s</Redirect> is not an"
                 " http(s) URL%s", v->u.redirect.url,
                 x->doc_url ? "" : " (relative URLs need a document URL)");
        call_notify(x->c, CODE_BAD_URL, LEVEL_ERROR, msg, doc_url(x), doc_method(x));
        fetch_failed(x, CODE_BAD_URL, v->u.redirect.url, false);
        return;
    }
    fetch_doc(x, url, twiml_method_name(v->u.redirect.method), NULL, false);
    free(url);
}

/* ---------------------------------------------------------------- the runner */

/* Runs verbs until something has to be waited for. Inside a <Gather> whose
 * prompts are still going, the prompt cursor runs; else the document's. */
static void run(exec *x)
{
    for (;;) {
        if (x->ended || call_is_over(x->c) || x->wait != W_NONE)
            return;
        if (x->mode == M_RECORD || (x->mode == M_GATHER && x->g_prompts_done))
            return;   /* waiting for input */
        bool in_prompt = x->mode == M_GATHER;
        cursor *cur = in_prompt ? &x->prompt : &x->top;
        if (cur->pc >= cur->n) {
            if (in_prompt)
                gather_prompts_done(x);
            else
                hangup_as(x, "end of the TwiML document", true);
            return;
        }
        const twiml_verb *v = &cur->verbs[cur->pc];
        switch (v->kind) {
        case TV_SAY:
            if (say_next(x, cur)) return;
            break;
        case TV_PLAY:
            if (play_next(x, cur)) return;
            break;
        case TV_PAUSE:
            cur->pc++;
            if (v->u.pause.length > 0) {
                x->wait = W_PAUSE;
                if (!timer_start(x, &x->t_play, (int64_t)v->u.pause.length * 1000, on_pause_end))
                    internal_failure(x, "cannot start a timer");
                return;
            }
            break;
        case TV_GATHER:
            if (in_prompt) { cur->pc++; break; }   /* the parser never nests one */
            gather_start(x, v);
            break;
        case TV_RECORD:
            if (in_prompt) { cur->pc++; break; }
            record_start(x, v);
            return;
        case TV_REDIRECT:
            if (in_prompt) { cur->pc++; break; }
            redirect(x, v);
            return;
        case TV_HANGUP:
            if (in_prompt) { cur->pc++; break; }
            hangup_as(x, "<Hangup>", true);
            return;
        case TV_REJECT:
            if (in_prompt) { cur->pc++; break; }
            /* The call is already answered when TwiML runs (outbound-api), so
             * <Reject> ends it like <Hangup>: CallStatus completed. */
            call_log(x->c, "twiml/reject",
                     json_pack("{s:s, s:s}", "reason", v->u.reject.busy ? "busy" : "rejected",
                               "detail", "the call was already answered: hung up (completed)"));
            hangup_as(x, v->u.reject.busy ? "<Reject reason=\"busy\">" : "<Reject>", true);
            return;
        case TV_UNSUPPORTED:
            report_unsupported(x, v);
            cur->pc++;
            break;
        default:
            cur->pc++;
            break;
        }
    }
}

/* An inline document (the Twiml parameter): no URL, so no fallback either. */
static void run_inline(exec *x, const char *twiml)
{
    int code = 0;
    x->gen++;
    twiml_doc *d = parse(x, twiml, strlen(twiml), NULL, NULL, &code);
    if (!d) {
        app_error(x);
        return;
    }
    doc_set(x, d, NULL, NULL);
    run(x);
}

/* ---------------------------------------------------------------- entry points */

static exec *exec_get(call *c)
{
    if (!c->x) {
        c->x = calloc(1, sizeof *c->x);
        if (c->x) c->x->c = c;
    }
    return c->x;
}

/* Stops the current verb (REST update): timers, prompt, gather or record. A
 * recording window in progress is kept as a Recording, without an action
 * request (the new document takes over). */
static void abandon(exec *x)
{
    timer_stop(x, &x->t_input);
    playback_abandon(x);
    if (x->mode == M_RECORD && x->r_active) {
        char re[SID_SIZE];
        int64_t end = call_answered_ms(x->c);
        if (sid_new("RE", re)) {
            char *rsc = x->r->rsc ? url_resolve(x->doc_url, x->r->rsc) : NULL;
            call_record_window(x->c, re, x->r_start, end < x->r_start ? x->r_start : end, rsc,
                               twiml_method_name(x->r->rsc_method), x->r->rsc_events);
            free(rsc);
        }
    }
    x->mode = M_NONE;
    x->r_active = false;
    x->wait = W_NONE;
    x->gen++;
}

void exec_start(call *c)
{
    exec *x;
    call_ref(c);
    if (!(x = exec_get(c))) {
        call_notify(c, 11200, LEVEL_ERROR, "twigate ran out of memory starting the call's TwiML",
                    NULL, NULL);
        call_hangup(c, "out of memory");
        goto out;
    }
    if (x->ended || call_is_over(c))
        goto out;
    const char *url = param_str(c, "url");
    const char *twiml = param_str(c, "twiml");
    const char *method = param_str(c, "method");
    if (url)
        fetch_doc(x, url, method ? method : "POST", NULL, false);
    else if (twiml)
        run_inline(x, twiml);
    else
        app_error(x);
out:
    call_unref(c);
}

void exec_event(call *c, const char *name, json_t *ev)
{
    exec *x = c->x;
    if (!x || x->ended || call_is_over(c) || !name)
        return;
    call_ref(c);
    if (!strcmp(name, "tts.played")) {
        on_tts_played(x, ev);
    } else if (!strcmp(name, "dtmf.received")) {
        const char *d = json_string_value(json_object_get(ev, "digit"));
        if (!d || strlen(d) != 1 || !strchr("0123456789*#ABCD", d[0]))
            log_debug("exec", "ignoring a dtmf.received without a usable digit");
        else if (x->mode == M_GATHER)
            gather_key(x, d[0]);
        else if (x->mode == M_RECORD)
            record_key(x, d[0]);
        else
            log_debug("exec", "key %c pressed outside <Gather>/<Record>: ignored", d[0]);
    } else {
        log_debug("exec", "Kaphila event %s: nothing to do", name);
    }
    call_unref(c);
}

void exec_replace(call *c, const char *url, const char *method, const char *twiml)
{
    exec *x;
    call_ref(c);
    if (!(x = exec_get(c)) || x->ended || call_is_over(c) || x->wait == W_DONE)
        goto out;
    abandon(x);
    call_log(c, "twiml/replace",
             json_pack("{s:s, s:s?}", "detail", "REST update: the current verb was abandoned",
                       "url", url));
    if (twiml && *twiml)
        run_inline(x, twiml);
    else if (url && *url)
        fetch_doc(x, url, method && *method ? method : "POST", NULL, false);
out:
    call_unref(c);
}

void exec_call_ended(call *c)
{
    exec *x = c->x;
    if (!x || x->ended)
        return;
    call_ref(c);
    x->ended = true;
    x->wait_serial = 0;
    timer_stop(x, &x->t_play);
    timer_stop(x, &x->t_input);
    if (x->mode == M_RECORD && x->r_active)
        record_end(x, "hangup", true);
    x->mode = M_NONE;
    x->wait = W_DONE;
    call_unref(c);
}

void exec_free(call *c)
{
    exec *x = c->x;
    if (!x)
        return;
    /* Timers hold references, so none can be pending once the call is freed. */
    twiml_doc_destroy(x->doc);
    free(x->doc_url);
    free(x->doc_method);
    free(x);
    c->x = NULL;
}
