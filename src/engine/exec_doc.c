/* exec_doc.c — the executor's documents: fetching them (with the standard
 * parameters, the fallback URL and the generation that drops late answers),
 * what an answer's content type makes of it (contract §10.4), the
 * application-error document (§10.3), the redirect guard and action URLs.
 * Engine loop only; see exec.c for the executor's model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/form.h"
#include "base/jsonw.h"
#include "base/log.h"
#include "exec_int.h"

/* Context of a document fetch. */
typedef struct fetch_ctx {
    call    *c;
    unsigned gen;
    bool     fallback;    /* this is the FallbackUrl request */
    bool     final;       /* the call is over: the answer is not executed */
    char    *url;
    char    *method;
} fetch_ctx;

/* ---------------------------------------------------------------- documents */

static twiml_verb *synth_verbs(twiml_doc *d, size_t n)
{
    d->verbs = calloc(n, sizeof *d->verbs);
    d->n_verbs = d->verbs ? n : 0;
    return d->verbs;
}

/* A document of <Say text/> (or <Play url/>) then <Hangup/>: what Twilio
 * does with text/plain and audio answers and with application errors. */
twiml_doc *exec_synth_doc(twiml_verb_kind kind, const char *s)
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
void exec_doc_set(exec *x, twiml_doc *doc, const char *url, const char *method,
                  const char *kind, const char *body, size_t len)
{
    char *u = url ? strdup(url) : NULL;
    char *m = method ? strdup(method) : NULL;
    json_t *src = json_pack("{s:s, s:s%, s:s?, s:s?}", "kind", kind, "body", body ? body : "",
                            body ? len : 0, "url", url, "method", method);
    free(x->src);
    x->src = src ? jsonw_dumps(src) : NULL;
    x->src_dirty = true;
    json_decref(src);
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

void exec_app_error(exec *x)
{
    twiml_doc *d = exec_synth_doc(TV_SAY, APP_ERROR_TEXT);
    if (!d) {
        exec_internal_failure(x, "out of memory");
        return;
    }
    call_log(x->c, "twiml/application-error",
             json_pack("{s:s}", "detail", "no usable TwiML: playing the application-error"
                       " message, then hanging up"));
    exec_doc_set(x, d, NULL, NULL, "say", APP_ERROR_TEXT, strlen(APP_ERROR_TEXT));
    exec_run(x);
}

/* A document could not be had from url (code says why; the notification is
 * out already): FallbackUrl with ErrorCode and ErrorUrl, once; else the
 * application-error message (contract §10.3). */
void exec_fetch_failed(exec *x, int code, const char *url, bool was_fallback)
{
    const char *fb = exec_param_str(x->c, "fallback_url");
    if (!was_fallback && fb && x->wait != W_DONE) {
        const char *fm = exec_param_str(x->c, "fallback_method");
        char num[16];
        form extra;
        form_init(&extra);
        snprintf(num, sizeof num, "%d", code);
        if (exec_form_add(&extra, "ErrorCode", num) &&
            exec_form_add(&extra, "ErrorUrl", url ? url : "")) {
            exec_fetch_doc(x, fb, fm ? fm : "POST", &extra, true);
            form_fini(&extra);
            return;
        }
        form_fini(&extra);
    }
    exec_app_error(x);
}

/* Parses xml; on success emits the 12200 warnings and returns the document. */
twiml_doc *exec_parse(exec *x, const char *xml, size_t len, const char *url, const char *method,
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
void exec_media_type(const char *ct, char *out, size_t n)
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
    const char *kind = "xml";
    exec_media_type(res->content_type, mt, sizeof mt);
    if (!strcmp(mt, "text/xml") || !strcmp(mt, "application/xml") || !strcmp(mt, "text/html")) {
        d = exec_parse(x, buf_str(&res->body), res->body.len, k->url, k->method, &code);
        if (!d) {
            exec_fetch_failed(x, code, k->url, k->fallback);
            return;
        }
    } else if (!strncmp(mt, "audio/", 6)) {
        d = exec_synth_doc(TV_PLAY, k->url);
        kind = "play";
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
        d = exec_synth_doc(TV_SAY, buf_str(&text));
        kind = "say";
        buf_fini(&text);
    } else {
        char msg[256];
        snprintf(msg, sizeof msg, "Invalid Content-Type: '%.100s' is neither TwiML (text/xml,"
                 " application/xml, text/html), audio/* nor text/plain", res->content_type);
        call_notify(x->c, CODE_CONTENT_TYPE, LEVEL_ERROR, msg, k->url, k->method);
        exec_fetch_failed(x, CODE_CONTENT_TYPE, k->url, k->fallback);
        return;
    }
    if (!d) {
        exec_internal_failure(x, "out of memory");
        return;
    }
    /* The checkpoint keeps what re-creates d: the body, or the synthetic
     * document's one text or URL. */
    const char *body = kind[0] == 'x' ? buf_str(&res->body)
                     : kind[0] == 'p' ? k->url : d->verbs[0].u.say.text;
    exec_doc_set(x, d, k->url, k->method, kind, body,
                 kind[0] == 'x' ? res->body.len : strlen(body));
    exec_run(x);
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
        exec_fetch_failed(x, res->error_code, k->url, k->fallback);
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
void exec_fetch_doc(exec *x, const char *url, const char *method, const form *extra,
                      bool fallback)
{
    form f;
    fetch_ctx *k;
    bool ok;
    x->gen++;
    x->wait = W_FETCH;
    x->mode = M_NONE;
    exec_ckpt_fetch(x, url, method, extra, fallback);
    form_init(&f);
    ok = exec_voice_params(x, &f, false);
    for (size_t i = 0; extra && ok && i < extra->n; i++)
        ok = exec_form_add(&f, extra->pairs[i].key, extra->pairs[i].value);
    k = ok ? fetch_ctx_new(x, url, method) : NULL;
    if (!k) {
        form_fini(&f);
        exec_internal_failure(x, "out of memory");
        return;
    }
    k->fallback = fallback;
    if (call_webhook(x->c, url, method, &f, true, on_doc, k) != 0) {
        char msg[160];
        fetch_ctx_free(k);
        form_fini(&f);
        snprintf(msg, sizeof msg, "HTTP retrieval failure: twigate could not start the request");
        call_notify(x->c, 11200, LEVEL_ERROR, msg, url, method);
        exec_fetch_failed(x, 11200, url, fallback);
        return;
    }
    form_fini(&f);
}

/* The loop guard: a call follows at most limits.max_redirects documents
 * after its first one — <Redirect>s and <Gather>/<Record> actions, the steps
 * a document can take by itself (the fallback and REST updates do not
 * count). Past it: 11215 and hang-up. */
bool exec_follow_allowed(exec *x, const char *what)
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
    call_notify(c, CODE_TOO_MANY_REDIRECTS, LEVEL_ERROR, msg, exec_doc_url(x), exec_doc_method(x));
    exec_hangup(x, "too many redirects");
    return false;
}

/* An action URL: the attribute resolved against the document, or the
 * document's own URL (Twilio's default for <Gather> and <Record>). NULL
 * (with a notification) when there is none. */
char *exec_action_url(exec *x, const char *attr, const char *verb)
{
    char msg[256];
    char *u = attr ? exec_url_resolve(x->doc_url, attr) : (x->doc_url ? strdup(x->doc_url) : NULL);
    if (u)
        return u;
    if (attr)
        snprintf(msg, sizeof msg, "Invalid URL format: <%s action=\"%.150s\"> is not an http(s)"
                 " URL%s", verb, attr, x->doc_url ? "" : " (relative URLs need a document URL)");
    else
        snprintf(msg, sizeof msg, "<%s> has no action and the document has no URL (it came from"
                 " the Twiml parameter): the result cannot be delivered", verb);
    call_notify(x->c, CODE_BAD_URL, LEVEL_ERROR, msg, exec_doc_url(x), exec_doc_method(x));
    return NULL;
}

/* Posts the action of a <Record> the caller ended by hanging up: the call is
 * over, so the request carries CallStatus completed and its answer is not
 * executed (contract §8.5). */
void exec_fetch_final(exec *x, const char *url, const char *method, const form *extra)
{
    form f;
    bool ok;
    fetch_ctx *k = fetch_ctx_new(x, url, method);
    form_init(&f);
    ok = k && exec_voice_params(x, &f, true);
    for (size_t i = 0; ok && i < extra->n; i++)
        ok = exec_form_add(&f, extra->pairs[i].key, extra->pairs[i].value);
    if (k) k->final = true;
    if (!ok || call_webhook(x->c, url, k->method, &f, true, on_doc, k) != 0) {
        log_warn("exec", "could not send the <Record> action after the hang-up");
        fetch_ctx_free(k);
    }
    form_fini(&f);
}
