/* exec_record.c — <Record>: the beep, the recording window, its Recording
 * and the action (contract §8.5, §11.6). Engine loop only; see exec.c for
 * the executor's model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/form.h"
#include "base/log.h"
#include "base/sid.h"
#include "exec_int.h"

/* ---------------------------------------------------------------- <Record> */

static void on_record_max(loop *l, void *arg);

static void record_reports(exec *x, const twiml_record *r)
{
    /* Only a timeout the document asks for: Twilio's default (5 s) applies
     * to every <Record>, and warning about it would flag every call that
     * records (docs/compatibility.md keeps the difference). */
    if (r->timeout_given && r->timeout > 0 && exec_once(x, REP_REC_TIMEOUT))
        exec_report(x, LEVEL_WARNING, "<Record timeout>: Kaphila cannot detect silence; the"
                    " recording ends on finishOnKey, maxLength or hang-up only", "twiml/unsupported/Record",
                    json_pack("{s:s, s:s, s:i, s:s}", "verb", "Record", "attribute", "timeout",
                              "value", r->timeout, "action", "ignored"));
    if (r->transcribe && exec_once(x, REP_REC_TRANSCRIBE))
        exec_report(x, LEVEL_WARNING, "<Record transcribe=\"true\">: Kaphila has no transcription;"
                    " no transcription is made", "twiml/unsupported/Record",
                    json_pack("{s:s, s:s, s:s}", "verb", "Record", "attribute", "transcribe",
                              "action", "ignored"));
    if (r->trim && exec_once(x, REP_REC_TRIM))
        call_log(x->c, "twiml/unsupported/Record",
                 json_pack("{s:s, s:s, s:s, s:s}", "verb", "Record", "attribute", "trim",
                           "value", "trim-silence", "action", "not applied: the recording"
                           " keeps its leading and trailing silence"));
}

void exec_record_start(exec *x, const twiml_verb *v)
{
    x->mode = M_RECORD;
    x->r = &v->u.record;
    x->r_active = false;
    record_reports(x, x->r);
    if (x->r->play_beep)
        (void)exec_playback_send(x, "/play", "file", EXEC_BEEP_SOUND, EXEC_BEEP_FALLBACK_MS);
    else
        exec_record_window_start(x);
}

void exec_record_window_start(exec *x)
{
    x->r_active = true;
    x->r_start = call_answered_ms(x->c);
    x->wait = W_INPUT;
    if (!exec_timer_start(x, &x->t_input, (int64_t)x->r->max_length * 1000, on_record_max))
        exec_internal_failure(x, "cannot start a timer");
}

/* The recording window closes: a Recording resource for it, then the action
 * with RecordingUrl, RecordingSid, RecordingDuration and Digits (contract
 * §8.5). digits: the key, "hangup", or NULL when maxLength ended it (Twilio
 * sends "the key, if any"). An empty recording (under half a second) gets
 * no action request and execution falls through (contract §11.6). */
void exec_record_end(exec *x, const char *digits, bool hung_up)
{
    const twiml_record *r = x->r;
    int64_t end = call_answered_ms(x->c);
    int64_t len = end > x->r_start ? end - x->r_start : 0;
    long secs = (long)((len + 500) / 1000);
    char re[SID_SIZE], dur[24], rec_url[1024];
    char *rsc = NULL, *url = NULL;
    form extra;

    exec_timer_stop(x, &x->t_input);
    x->mode = M_NONE;
    x->r_active = false;
    if (!sid_new("RE", re)) {
        exec_internal_failure(x, "no randomness for a Recording SID");
        return;
    }
    if (r->rsc && !(rsc = exec_url_resolve(x->doc_url, r->rsc))) {
        char msg[256];
        snprintf(msg, sizeof msg, "Invalid URL format: recordingStatusCallback \"%.150s\" is not"
                 " an http(s) URL; no recording callback is sent", r->rsc);
        call_notify(x->c, CODE_BAD_URL, LEVEL_ERROR, msg, exec_doc_url(x),
                    exec_doc_method(x));
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
            exec_run(x);
        }
        return;
    }
    if (!(url = exec_action_url(x, r->action, "Record"))) {
        if (!hung_up) {
            x->top.pc++;
            x->wait = W_NONE;
            exec_run(x);
        }
        return;
    }
    snprintf(dur, sizeof dur, "%ld", secs);
    snprintf(rec_url, sizeof rec_url, "%s/2010-04-01/Accounts/%s/Recordings/%s",
             call_public_url(x->c), call_row_account_sid(x->c), re);
    form_init(&extra);
    bool ok = exec_form_add(&extra, "RecordingUrl", rec_url) &&
              exec_form_add(&extra, "RecordingSid", re) &&
              exec_form_add(&extra, "RecordingDuration", dur) &&
              (!digits || exec_form_add(&extra, "Digits", digits));
    if (!ok) {
        exec_internal_failure(x, "out of memory");
    } else if (!hung_up) {
        if (exec_follow_allowed(x, "the <Record> action"))
            exec_fetch_doc(x, url, twiml_method_name(r->method), &extra, false);
    } else {
        /* The call is over: Twilio still posts the action (CallStatus
         * completed, Digits hangup); its answer is not executed. */
        exec_fetch_final(x, url, twiml_method_name(r->method), &extra);
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
        exec_record_end(x, NULL, false);
    call_unref(c);
}

void exec_record_key(exec *x, char d)
{
    if (!x->r_active || !x->r->finish_on_key || !strchr(x->r->finish_on_key, d))
        return;   /* Twilio records other keys as sound */
    char key[2] = {d, '\0'};
    exec_record_end(x, key, false);
}
