/* exec_ckpt.c — executor checkpoints and the resume after a restart
 * (docs/scale-out.md §3, docs/architecture.md "Recovery").
 *
 * A checkpoint is the call's document (as received: re-parsed on resume,
 * twiml.c being pure) plus a small JSON state: the cursors, the <Gather>
 * digits so far, the wait, the wall-clock due time of a <Pause> or gather
 * timeout, the fetch being waited for, the redirect count and the
 * once-per-call reports. The executor only marks the call (exec_ckpt_mark);
 * the engine writes the state as it is when its write batch commits, in that
 * batch, so a checkpoint commits with the event that moved the call and costs
 * no extra commit. A Kaphila command goes out before its batch commits, so a
 * checkpoint can be one step behind a command that reached Kaphila: a resume
 * then sends it again (at least once — a prompt may be heard twice, never
 * skipped).
 *
 * Resume, by the wait recorded: a fetch is made again; a playback is sent
 * again from where it was sent (pb_at); a <Pause> or gather timeout is
 * re-armed for what is left of its due time (a past one fires at once); a
 * <Record> starts over; a hang-up is asked for again. Engine loop only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/jsonw.h"
#include "base/log.h"
#include "exec_int.h"

#define CKPT_VERSION 1

void exec_ckpt_mark(exec *x)
{
    call_ckpt_mark(x->c);
}

void exec_ckpt_fetch(exec *x, const char *url, const char *method, const form *extra,
                     bool fallback)
{
    /* url may be x->f_url itself (a resume): copy before freeing. */
    char *u = strdup(url), *m = strdup(method);
    json_t *ex = json_array();
    for (size_t i = 0; extra && ex && i < extra->n; i++)
        json_array_append_new(ex, json_pack("[s, s]", extra->pairs[i].key,
                                            extra->pairs[i].value));
    free(x->f_url);
    free(x->f_method);
    json_decref(x->f_extra);
    x->f_url = u;
    x->f_method = m;
    x->f_extra = ex;
    x->f_fallback = fallback;
    exec_ckpt_mark(x);
}

/* ---------------------------------------------------------------- the state */

static json_t *cur_json(const cursor *c)
{
    return json_pack("[I, i, I]", (json_int_t)c->pc, c->iter, (json_int_t)c->off);
}

json_t *exec_ckpt_encode(const exec *x, int redirects)
{
    return json_pack("{s:i, s:i, s:i, s:o, s:o, s:o, s:b, s:b, s:s, s:I, s:i, s:i,"
                     " s:s*, s:s*, s:O*, s:b}",
                     "v", CKPT_VERSION, "wait", (int)x->wait, "mode", (int)x->mode,
                     "top", cur_json(&x->top), "prompt", cur_json(&x->prompt),
                     "pb_at", cur_json(&x->pb_at), "pb_in_prompt", x->pb_in_prompt,
                     "g_done", x->g_prompts_done, "digits", x->digits,
                     "due", (json_int_t)x->due_ms, "redirects", redirects,
                     "reported", (int)x->reported, "f_url", x->f_url, "f_method", x->f_method,
                     "f_extra", x->f_extra, "f_fallback", x->f_fallback);
}

/* A cursor over verbs[0..n) from [pc, iter, off]: pc may be n (the end),
 * off must stay inside a <Say>'s text. */
static bool cur_set(cursor *c, json_t *j, const twiml_verb *verbs, size_t n)
{
    json_int_t pc, off;
    int iter;
    if (json_unpack(j, "[I, i, I]", &pc, &iter, &off) != 0 || pc < 0 || (size_t)pc > n ||
        iter < 0 || off < 0)
        return false;
    c->verbs = verbs;
    c->n = n;
    c->pc = (size_t)pc;
    c->iter = iter;
    c->off = (size_t)off;
    if (c->off && (c->pc == n || verbs[c->pc].kind != TV_SAY ||
                   c->off > strlen(verbs[c->pc].u.say.text)))
        return false;
    return true;
}

bool exec_ckpt_decode(exec *x, json_t *st, int *redirects)
{
    int v = 0, wait = -1, mode = -1, red = 0, rep = 0, pbp = 0, gd = 0, fb = 0;
    json_t *top = NULL, *prompt = NULL, *pb = NULL, *fx = NULL;
    const char *digits = "", *fu = NULL, *fm = NULL;
    json_int_t due = 0;
    if (json_unpack(st, "{s:i, s:i, s:i, s:o, s:o, s:o, s:b, s:b, s:s, s:I, s:i, s:i,"
                        " s?s, s?s, s?o, s:b}",
                    "v", &v, "wait", &wait, "mode", &mode, "top", &top, "prompt", &prompt,
                    "pb_at", &pb, "pb_in_prompt", &pbp, "g_done", &gd, "digits", &digits,
                    "due", &due, "redirects", &red, "reported", &rep, "f_url", &fu,
                    "f_method", &fm, "f_extra", &fx, "f_fallback", &fb) != 0 ||
        v != CKPT_VERSION || wait < W_NONE || wait > W_DONE || mode < M_NONE ||
        mode > M_RECORD || strlen(digits) > EXEC_MAX_DIGITS || red < 0)
        return false;
    if (wait == W_FETCH && (!fu || !fm))
        return false;
    if (!x->doc) {
        /* No document yet: only its first fetch (or the hang-up) can be waited for. */
        if (wait != W_FETCH && wait != W_DONE) return false;
    } else {
        const twiml_verb *vs = x->doc->verbs;
        size_t n = x->doc->n_verbs;
        if (!cur_set(&x->top, top, vs, n)) return false;
        x->mode = (mode_kind)mode;
        if (x->mode != M_NONE && (x->top.pc == n ||
            vs[x->top.pc].kind != (x->mode == M_GATHER ? TV_GATHER : TV_RECORD)))
            return false;
        if (x->mode == M_GATHER) {
            x->g = &vs[x->top.pc].u.gather;
            if (!cur_set(&x->prompt, prompt, x->g->children, x->g->n_children)) return false;
        } else if (x->mode == M_RECORD) {
            x->r = &vs[x->top.pc].u.record;
        }
        x->pb_in_prompt = pbp && x->mode == M_GATHER;
        if (wait == W_PLAYBACK && x->mode != M_RECORD &&
            !cur_set(&x->pb_at, pb, x->pb_in_prompt ? x->prompt.verbs : vs,
                     x->pb_in_prompt ? x->prompt.n : n))
            return false;
    }
    x->wait = (wait_kind)wait;
    x->g_prompts_done = gd;
    snprintf(x->digits, sizeof x->digits, "%s", digits);
    x->n_digits = strlen(x->digits);
    x->due_ms = due;
    x->reported = (unsigned)rep;
    x->f_fallback = fb;
    free(x->f_url);
    free(x->f_method);
    json_decref(x->f_extra);
    x->f_url = fu ? strdup(fu) : NULL;
    x->f_method = fm ? strdup(fm) : NULL;
    x->f_extra = json_is_array(fx) ? json_incref(fx) : NULL;
    *redirects = red;
    return true;
}

/* ---------------------------------------------------------------- write */

bool exec_ckpt_write(call *c, store_conn *db)
{
    exec *x = c->x;
    if (!x || x->ended) return true;
    json_t *st = exec_ckpt_encode(x, c->redirects);
    char *s = st ? jsonw_dumps(st) : NULL;
    json_decref(st);
    if (!s) return false;
    bool ok = store_call_ckpt_put(db, call_row_sid(c), ++x->ck_seq,
                                  x->src_dirty ? (x->src ? x->src : "") : NULL, s,
                                  timefmt_now_ms()) == STORE_OK;
    free(s);
    if (ok) x->src_dirty = false;
    return ok;
}

/* ---------------------------------------------------------------- resume */

static twiml_doc *doc_from_src(exec *x, json_t *src)
{
    const char *kind = json_string_value(json_object_get(src, "kind"));
    json_t *b = json_object_get(src, "body");
    const char *body = json_string_value(b);
    if (!kind || !body) return NULL;
    if (!strcmp(kind, "say") || !strcmp(kind, "play"))
        return exec_synth_doc(kind[0] == 's' ? TV_SAY : TV_PLAY, body);
    if (strcmp(kind, "xml") != 0) return NULL;
    /* Its warnings were notified when it first ran: parsed quietly. */
    const config *cfg = call_config(x->c);
    twiml_limits lim;
    char err[256];
    int code = 0;
    twiml_limits_default(&lim);
    lim.max_bytes = (size_t)cfg->max_twiml_bytes;
    lim.max_depth = cfg->max_twiml_depth;
    return twiml_parse(body, json_string_length(b), &lim, &code, err, sizeof err);
}

static bool resume_state(exec *x, const char *doc, const char *state)
{
    json_t *src = doc && *doc ? json_loads(doc, 0, NULL) : NULL;
    json_t *st = json_loads(state, 0, NULL);
    bool ok = st != NULL;
    if (ok && src) {
        twiml_doc *d = doc_from_src(x, src);
        const char *kind = json_string_value(json_object_get(src, "kind"));
        json_t *b = json_object_get(src, "body");
        ok = d != NULL;
        if (ok)
            exec_doc_set(x, d, json_string_value(json_object_get(src, "url")),
                         json_string_value(json_object_get(src, "method")), kind,
                         json_string_value(b), json_string_length(b));
    }
    if (ok) ok = exec_ckpt_decode(x, st, &x->c->redirects);
    json_decref(src);
    json_decref(st);
    return ok;
}

static int64_t left_ms(const exec *x)
{
    int64_t ms = x->due_ms - timefmt_now_ms();
    return ms < 0 ? 0 : ms;
}

/* Goes on from a decoded state (see the header comment). */
static void resume_go(exec *x)
{
    static const char *const waits[] = {"running", "fetch", "playback", "pause", "input", "done"};
    call_log(x->c, "twiml/resume",
             json_pack("{s:s, s:s, s:I}", "detail", "twigate restarted during the call: its"
                       " TwiML goes on from the last checkpoint", "wait", waits[x->wait],
                       "verb", (json_int_t)x->top.pc));
    switch (x->wait) {
    case W_FETCH: {
        form extra;
        form_init(&extra);
        bool ok = true;
        size_t i;
        json_t *p;
        json_array_foreach(x->f_extra, i, p)
            if (ok) ok = exec_form_add(&extra, json_string_value(json_array_get(p, 0)),
                                       json_string_value(json_array_get(p, 1)));
        if (ok) exec_fetch_doc(x, x->f_url, x->f_method, &extra, x->f_fallback);
        else exec_internal_failure(x, "out of memory");
        form_fini(&extra);
        return;
    }
    case W_PLAYBACK:
        if (x->mode == M_RECORD) {
            x->mode = M_NONE;     /* the <Record> starts over, beep included */
        } else {
            cursor *cur = x->pb_in_prompt ? &x->prompt : &x->top;
            cur->pc = x->pb_at.pc;
            cur->iter = x->pb_at.iter;
            cur->off = x->pb_at.off;
        }
        x->wait = W_NONE;
        exec_run(x);
        return;
    case W_PAUSE:
        if (!exec_timer_start(x, &x->t_play, left_ms(x), exec_pause_end))
            exec_internal_failure(x, "cannot start a timer");
        exec_ckpt_mark(x);
        return;
    case W_INPUT:
        if (x->mode == M_GATHER) {
            exec_gather_resume(x, left_ms(x));
            return;
        }
        x->mode = M_NONE;         /* an open <Record> window starts over */
        x->r_active = false;
        x->wait = W_NONE;
        exec_run(x);
        return;
    case W_DONE:
        exec_hangup_as(x, "resumed: the TwiML had ended the call", true);
        return;
    case W_NONE:
    default:
        x->wait = W_NONE;
        exec_run(x);
        return;
    }
}

void exec_resume(call *c, const char *doc, const char *state)
{
    exec *x;
    call_ref(c);
    if (!(x = exec_get(c)) || x->ended || call_is_over(c))
        goto out;
    if (!resume_state(x, doc, state)) {
        log_warn("exec", "the call's checkpoint cannot be used; hanging up");
        call_notify(c, 20500, LEVEL_WARNING, "twigate restarted during this call and its"
                    " checkpoint could not be read; the call is ended", NULL, NULL);
        exec_hangup(x, "restart: unusable checkpoint");
        goto out;
    }
    log_info("exec", "resuming the call's TwiML after a restart");
    resume_go(x);
out:
    call_unref(c);
}
