/* exec.c — the TwiML executor: runs a call's TwiML documents on Kaphila with
 * Twilio's semantics (contract §10.3–10.4 and §11; docs/twiml.md says how
 * each verb maps onto Kaphila and where the result differs from Twilio).
 *
 * Map of the executor (exec_int.h holds its state and shared internals):
 * this file has the helpers (reports, URLs, forms, timers, hang-up), the
 * unsupported verbs, <Redirect>, the verb runner (a cursor over the document
 * and one over a <Gather>'s prompts) and the engine's entry points at the
 * bottom; exec_doc.c fetches documents (content types, fallback, the
 * application-error document, the redirect guard); exec_speech.c plays
 * (<Say>, <Play>, <Pause>, and the tts.played accounting); exec_gather.c
 * and exec_record.c take caller input.
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

#include "base/form.h"
#include "base/log.h"
#include "base/sid.h"
#include "exec_int.h"

/* ---------------------------------------------------------------- helpers */

/* The current document's URL and method for notifications: NULL when the
 * document did not come from a URL (inline Twiml, twigate's own). */
const char *exec_doc_url(const exec *x)
{
    return x->doc_url;
}

const char *exec_doc_method(const exec *x)
{
    return x->doc_method;
}

const char *exec_param_str(call *c, const char *key)
{
    const char *v = json_string_value(call_row_param(c, key));
    return v && *v ? v : NULL;
}

/* A notification about TwiML the executor cannot carry out, with a
 * structured event-log line next to it. detail is stolen. */
void exec_report(exec *x, int level, const char *msg, const char *what, json_t *detail)
{
    call_notify(x->c, CODE_UNSUPPORTED, level, msg, exec_doc_url(x), exec_doc_method(x));
    call_log(x->c, what, detail);
}

bool exec_once(exec *x, unsigned bit)
{
    if (x->reported & bit)
        return false;
    x->reported |= bit;
    return true;
}

bool exec_form_add(form *f, const char *k, const char *v)
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
char *exec_url_resolve(const char *base, const char *ref)
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
bool exec_voice_params(exec *x, form *f, bool completed)
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
        ok = exec_form_add(f, tmp.pairs[i].key,
                 strcmp(tmp.pairs[i].key, "CallStatus") == 0 ? "completed" : tmp.pairs[i].value);
    if (ok && !form_get(&tmp, "CallStatus"))
        ok = exec_form_add(f, "CallStatus", "completed");
    form_fini(&tmp);
    return ok;
}

/* ---------------------------------------------------------------- timers */

/* A timer holds a call reference until it fires or is stopped. */
bool exec_timer_start(exec *x, loop_timer **slot, int64_t ms, loop_timer_fn fn)
{
    call_ref(x->c);
    *slot = loop_timer_add(call_loop(x->c), ms, fn, x->c);
    if (*slot)
        return true;
    call_unref(x->c);
    return false;
}

void exec_timer_stop(exec *x, loop_timer **slot)
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
void exec_hangup_as(exec *x, const char *why, bool routine)
{
    x->wait = W_DONE;
    x->mode = M_NONE;
    x->wait_serial = 0;
    exec_timer_stop(x, &x->t_play);
    exec_timer_stop(x, &x->t_input);
    exec_ckpt_mark(x);
    log_write(routine ? LOG_DEBUG : LOG_INFO, "exec", "hanging up: %s", why);
    call_hangup(x->c, why);
}

void exec_hangup(exec *x, const char *why)
{
    exec_hangup_as(x, why, false);
}

/* Something twigate itself could not do (out of memory, a timer): the call
 * cannot follow its TwiML any more, so it ends with an error notification. */
void exec_internal_failure(exec *x, const char *what)
{
    char msg[192];
    snprintf(msg, sizeof msg, "twigate could not continue the call's TwiML: %s", what);
    call_notify(x->c, 11200, LEVEL_ERROR, msg, exec_doc_url(x), exec_doc_method(x));
    exec_hangup(x, what);
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
    call_notify(x->c, CODE_UNSUPPORTED, LEVEL_ERROR, msg, exec_doc_url(x),
                exec_doc_method(x));
    call_log(x->c, "twiml/unsupported/verb",
             json_pack("{s:s, s:i, s:s, s:s}", "verb", v->name, "line", v->line, "reason", why,
                       "action", "skipped"));
}

/* ---------------------------------------------------------------- <Redirect> */

static void redirect(exec *x, const twiml_verb *v)
{
    char msg[256];
    if (!exec_follow_allowed(x, "the <Redirect>"))
        return;
    char *url = exec_url_resolve(x->doc_url, v->u.redirect.url);
    if (!url) {
        snprintf(msg, sizeof msg, "Invalid URL format: <Redirect>%.150s</Redirect> is not an"
                 " http(s) URL%s", v->u.redirect.url,
                 x->doc_url ? "" : " (relative URLs need a document URL)");
        call_notify(x->c, CODE_BAD_URL, LEVEL_ERROR, msg, exec_doc_url(x), exec_doc_method(x));
        exec_fetch_failed(x, CODE_BAD_URL, v->u.redirect.url, false);
        return;
    }
    exec_fetch_doc(x, url, twiml_method_name(v->u.redirect.method), NULL, false);
    free(url);
}

/* ---------------------------------------------------------------- the runner */

/* Runs verbs until something has to be waited for. Inside a <Gather> whose
 * prompts are still going, the prompt cursor runs; else the document's. */
void exec_run(exec *x)
{
    exec_ckpt_mark(x);   /* written at the batch's commit, wherever the run stops */
    for (;;) {
        if (x->ended || call_is_over(x->c) || x->wait != W_NONE)
            return;
        if (x->mode == M_RECORD || (x->mode == M_GATHER && x->g_prompts_done))
            return;   /* waiting for input */
        bool in_prompt = x->mode == M_GATHER;
        cursor *cur = in_prompt ? &x->prompt : &x->top;
        if (cur->pc >= cur->n) {
            if (in_prompt)
                exec_gather_prompts_done(x);
            else
                exec_hangup_as(x, "end of the TwiML document", true);
            return;
        }
        const twiml_verb *v = &cur->verbs[cur->pc];
        switch (v->kind) {
        case TV_SAY:
            if (exec_say_next(x, cur)) return;
            break;
        case TV_PLAY:
            if (exec_play_next(x, cur)) return;
            break;
        case TV_PAUSE:
            cur->pc++;
            if (v->u.pause.length > 0) {
                x->wait = W_PAUSE;
                x->due_ms = timefmt_now_ms() + (int64_t)v->u.pause.length * 1000;
                if (!exec_timer_start(x, &x->t_play, (int64_t)v->u.pause.length * 1000,
                                      exec_pause_end))
                    exec_internal_failure(x, "cannot start a timer");
                return;
            }
            break;
        case TV_GATHER:
            if (in_prompt) { cur->pc++; break; }   /* the parser never nests one */
            exec_gather_start(x, v);
            break;
        case TV_RECORD:
            if (in_prompt) { cur->pc++; break; }
            exec_record_start(x, v);
            return;
        case TV_REDIRECT:
            if (in_prompt) { cur->pc++; break; }
            redirect(x, v);
            return;
        case TV_HANGUP:
            if (in_prompt) { cur->pc++; break; }
            exec_hangup_as(x, "<Hangup>", true);
            return;
        case TV_REJECT:
            if (in_prompt) { cur->pc++; break; }
            /* The call is already answered when TwiML runs (outbound-api), so
             * <Reject> ends it like <Hangup>: CallStatus completed. */
            call_log(x->c, "twiml/reject",
                     json_pack("{s:s, s:s}", "reason", v->u.reject.busy ? "busy" : "rejected",
                               "detail", "the call was already answered: hung up (completed)"));
            exec_hangup_as(x, v->u.reject.busy ? "<Reject reason=\"busy\">" : "<Reject>", true);
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
    twiml_doc *d = exec_parse(x, twiml, strlen(twiml), NULL, NULL, &code);
    if (!d) {
        exec_app_error(x);
        return;
    }
    exec_doc_set(x, d, NULL, NULL, "xml", twiml, strlen(twiml));
    exec_run(x);
}

/* ---------------------------------------------------------------- entry points */

exec *exec_get(call *c)
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
    exec_timer_stop(x, &x->t_input);
    exec_playback_abandon(x);
    if (x->mode == M_RECORD && x->r_active) {
        char re[SID_SIZE];
        int64_t end = call_answered_ms(x->c);
        if (sid_new("RE", re)) {
            char *rsc = x->r->rsc ? exec_url_resolve(x->doc_url, x->r->rsc) : NULL;
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
    const char *url = exec_param_str(c, "url");
    const char *twiml = exec_param_str(c, "twiml");
    const char *method = exec_param_str(c, "method");
    if (url)
        exec_fetch_doc(x, url, method ? method : "POST", NULL, false);
    else if (twiml)
        run_inline(x, twiml);
    else
        exec_app_error(x);
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
        exec_tts_played(x, ev);
    } else if (!strcmp(name, "dtmf.received")) {
        const char *d = json_string_value(json_object_get(ev, "digit"));
        if (!d || strlen(d) != 1 || !strchr("0123456789*#ABCD", d[0]))
            log_debug("exec", "ignoring a dtmf.received without a usable digit");
        else if (x->mode == M_GATHER)
            exec_gather_key(x, d[0]);
        else if (x->mode == M_RECORD)
            exec_record_key(x, d[0]);
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
        exec_fetch_doc(x, url, method && *method ? method : "POST", NULL, false);
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
    exec_timer_stop(x, &x->t_play);
    exec_timer_stop(x, &x->t_input);
    /* A stop is not the caller hanging up: the call goes on after the
     * restart (its checkpoint starts the <Record> over), so no action. */
    if (x->mode == M_RECORD && x->r_active && !engine_is_stopping(call_engine(c)))
        exec_record_end(x, "hangup", true);
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
    free(x->src);
    free(x->f_url);
    free(x->f_method);
    json_decref(x->f_extra);
    free(x);
    c->x = NULL;
}
