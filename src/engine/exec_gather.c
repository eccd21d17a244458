/* exec_gather.c — <Gather>: its prompts, keys, timeout and action (contract
 * §8.4, §11.5). Engine loop only; see exec.c for the executor's model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/form.h"
#include "base/log.h"
#include "exec_int.h"

/* ---------------------------------------------------------------- <Gather> */

static void on_gather_timeout(loop *l, void *arg);

static void gather_arm_ms(exec *x, int64_t ms)
{
    exec_timer_stop(x, &x->t_input);
    x->wait = W_INPUT;
    x->due_ms = timefmt_now_ms() + ms;
    exec_ckpt_mark(x);   /* the digits so far and the timeout's due time */
    if (!exec_timer_start(x, &x->t_input, ms, on_gather_timeout))
        exec_internal_failure(x, "cannot start a timer");
}

static void gather_arm(exec *x)
{
    gather_arm_ms(x, (int64_t)x->g->timeout * 1000);
}

/* A checkpoint's <Gather> waiting for keys: its timeout keeps its due time
 * (one in the past fires at once, ending the gather with the digits kept). */
void exec_gather_resume(exec *x, int64_t ms)
{
    x->g_prompts_done = true;
    gather_arm_ms(x, ms < 0 ? 0 : ms);
}

void exec_gather_start(exec *x, const twiml_verb *v)
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
    if ((g->input & TGATHER_SPEECH) && exec_once(x, REP_SPEECH))
        exec_report(x, LEVEL_WARNING, (g->input & TGATHER_DTMF)
                    ? "<Gather input=\"dtmf speech\">: Kaphila has no speech recognition; only"
                      " keys are collected (no SpeechResult)"
                    : "<Gather input=\"speech\">: Kaphila has no speech recognition; the gather"
                      " waits for its timeout and ends with no result",
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
    exec_timer_stop(x, &x->t_input);
    exec_playback_abandon(x);
    x->mode = M_NONE;
    if (x->n_digits == 0 && !g->action_on_empty_result) {
        call_log(x->c, "twiml/gather/no-input",
                 json_pack("{s:s}", "detail", "no input: continuing with the next verb"));
        x->top.pc++;
        x->wait = W_NONE;
        exec_run(x);
        return;
    }
    char *url = exec_action_url(x, g->action, "Gather");
    if (!url) {
        x->top.pc++;
        x->wait = W_NONE;
        exec_run(x);
        return;
    }
    form extra;
    form_init(&extra);
    if (!exec_form_add(&extra, "msg", "Gather End") ||
        !exec_form_add(&extra, "Digits", x->digits) ||
        !exec_form_add(&extra, "FinishedOnKey", fok))
        exec_internal_failure(x, "out of memory");
    else if (exec_follow_allowed(x, "the <Gather> action"))
        exec_fetch_doc(x, url, twiml_method_name(g->method), &extra, false);
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
void exec_gather_prompts_done(exec *x)
{
    x->g_prompts_done = true;
    gather_arm(x);
}

void exec_gather_key(exec *x, char d)
{
    const twiml_gather *g = x->g;
    if (!(g->input & TGATHER_DTMF))
        return;
    if (!x->g_prompts_done) {
        /* Twilio stops the prompt at the first key. Kaphila cannot stop a
         * playback: the rest of the prompt is not sent, but what plays now
         * plays to its end. */
        if (x->wait == W_PLAYBACK && exec_once(x, REP_BARGE_IN))
            call_log(x->c, "twiml/gather/barge-in",
                     json_pack("{s:s}", "detail", "key pressed during the prompt: the rest of"
                               " the prompt is skipped, but Kaphila cannot stop the playback"
                               " in progress"));
        exec_playback_abandon(x);
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
