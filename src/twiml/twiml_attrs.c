/* twiml_attrs — the TwiML parser's tables (see twiml_int.h): one value
 * parser per attribute type, the attributes of each verb, the verbs
 * themselves and the SSML tags, each verb's defaults and its destructor.
 * Adding an attribute is one row here and one field in twiml.h. */
#include "twiml_int.h"

#include <libxml/tree.h>

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- 3. values ----------------------------------------------------------- */

typedef enum {
    AT_INT,      /* int in [min, max] */
    AT_BOOL,     /* true/false, case-insensitive → bool */
    AT_METHOD,   /* GET/POST, case-insensitive → twiml_method */
    AT_STR,      /* copied (char *); empty = not given */
    AT_KEY,      /* one DTMF key, or empty = 0 → char */
    AT_KEYSET,   /* any number of DTMF keys, empty allowed → char * */
    AT_DIGITS,   /* [0-9*#w]+ → char * */
    AT_FLAGS,    /* space/comma list of words → int bits, at least one */
    AT_CHOICE,   /* exactly one of the words → bool */
    AT_ACCEPT,   /* valid TwiML we do not act on: no warning, not stored */
} attr_type;

typedef struct word_value {
    const char *word;
    int         value;
} word_value;

typedef struct attr_spec {
    const char        *name;
    attr_type          type;
    size_t             off;      /* into twiml_verb */
    int                min, max; /* AT_INT */
    const word_value  *words;    /* AT_FLAGS, AT_CHOICE; ends with a NULL word */
} attr_spec;

typedef enum { V_OK, V_BAD, V_NOMEM } vres;

static const char DTMF_KEYS[] = "0123456789*#";

static bool parse_int(const char *s, size_t n, int min, int max, int *out)
{
    if (n == 0)
        return false;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
        if (v > max)   /* also stops overflow long before it could happen */
            return false;
    }
    if (v < min)
        return false;
    *out = (int)v;
    return true;
}

static bool all_in(const char *s, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\0' || strchr(set, s[i]) == NULL)
            return false;
    return true;
}

/* The word s[0..n) names: an exact match, else the one word equal to it
 * ignoring case (ported apps write reason="Busy", input="DTMF"); when two
 * words of a table differ only in case, case decides — as params.c does for
 * REST enums. */
static const word_value *find_word(const word_value *w, const char *s, size_t n)
{
    const word_value *fold = NULL;
    int folds = 0;
    for (; w->word; w++) {
        if (strlen(w->word) != n)
            continue;
        if (memcmp(w->word, s, n) == 0)
            return w;
        if (strncasecmp(w->word, s, n) == 0) {
            fold = w;
            folds++;
        }
    }
    return folds == 1 ? fold : NULL;
}

static vres store_str(char **dst, const char *s, size_t n)
{
    char *c = strndup(s, n);
    if (c == NULL)
        return V_NOMEM;
    free(*dst);
    *dst = c;
    return V_OK;
}

/* Values are trimmed first: stray spaces around "true" or a URL are a
 * typing slip, not a different value. */
static vres set_value(twiml_verb *v, const attr_spec *a, const char *raw)
{
    char *dst = (char *)v + a->off;
    size_t n;
    const char *s = twiml_trim(raw, &n);
    switch (a->type) {
    case AT_INT: {
        int x;
        if (!parse_int(s, n, a->min, a->max, &x))
            return V_BAD;
        *(int *)(void *)dst = x;
        return V_OK;
    }
    case AT_BOOL:
        if (n == 4 && strncasecmp(s, "true", 4) == 0)
            *(bool *)dst = true;
        else if (n == 5 && strncasecmp(s, "false", 5) == 0)
            *(bool *)dst = false;
        else
            return V_BAD;
        return V_OK;
    case AT_METHOD:
        if (n == 3 && strncasecmp(s, "GET", 3) == 0)
            *(twiml_method *)(void *)dst = TM_GET;
        else if (n == 4 && strncasecmp(s, "POST", 4) == 0)
            *(twiml_method *)(void *)dst = TM_POST;
        else
            return V_BAD;
        return V_OK;
    case AT_STR:
        return n == 0 ? V_OK : store_str((char **)(void *)dst, s, n);
    case AT_KEY:
        if (n == 0)
            *dst = '\0';
        else if (n == 1 && all_in(s, 1, DTMF_KEYS))
            *dst = s[0];
        else
            return V_BAD;
        return V_OK;
    case AT_KEYSET:
        if (!all_in(s, n, DTMF_KEYS))
            return V_BAD;
        return store_str((char **)(void *)dst, s, n);
    case AT_DIGITS:
        if (n == 0 || !all_in(s, n, "0123456789*#w"))
            return V_BAD;
        return store_str((char **)(void *)dst, s, n);
    case AT_FLAGS: {
        int bits = 0;
        size_t i = 0;
        while (i < n) {
            if (is_ws(s[i]) || s[i] == ',') {
                i++;
                continue;
            }
            size_t j = i;
            while (j < n && !is_ws(s[j]) && s[j] != ',')
                j++;
            const word_value *w = find_word(a->words, s + i, j - i);
            if (w == NULL)
                return V_BAD;
            bits |= w->value;
            i = j;
        }
        if (bits == 0)
            return V_BAD;
        *(int *)(void *)dst = bits;
        return V_OK;
    }
    case AT_CHOICE: {
        const word_value *w = find_word(a->words, s, n);
        if (w == NULL)
            return V_BAD;
        *(bool *)dst = w->value != 0;
        return V_OK;
    }
    case AT_ACCEPT:
        return V_OK;
    }
    return V_BAD;
}

/* ---- 4. tables ----------------------------------------------------------- */

#define OFF(f) offsetof(twiml_verb, u.f)
#define A_INT(n, f, lo, hi)  { n, AT_INT, OFF(f), lo, hi, NULL }
#define A_BOOL(n, f)         { n, AT_BOOL, OFF(f), 0, 0, NULL }
#define A_METHOD(n, f)       { n, AT_METHOD, OFF(f), 0, 0, NULL }
#define A_STR(n, f)          { n, AT_STR, OFF(f), 0, 0, NULL }
#define A_TYPED(n, t, f, w)  { n, t, OFF(f), 0, 0, w }
#define A_ACCEPT(n)          { n, AT_ACCEPT, 0, 0, 0, NULL }
#define COUNT(a) (sizeof (a) / sizeof (a)[0])

static const word_value gather_inputs[] = {
    { "dtmf", TGATHER_DTMF }, { "speech", TGATHER_SPEECH }, { NULL, 0 },
};
static const word_value rec_events[] = {
    { "in-progress", TREC_EV_IN_PROGRESS }, { "completed", TREC_EV_COMPLETED },
    { "absent", TREC_EV_ABSENT }, { NULL, 0 },
};
static const word_value trim_words[] = {
    { "trim-silence", 1 }, { "do-not-trim", 0 }, { NULL, 0 },
};
static const word_value reject_reasons[] = {
    { "rejected", 0 }, { "busy", 1 }, { NULL, 0 },
};

static const attr_spec say_attrs[] = {
    A_STR("voice", say.voice),
    A_STR("language", say.language),
    A_INT("loop", say.loop, 0, TWIML_INT_MAX),
};
static const attr_spec play_attrs[] = {
    A_INT("loop", play.loop, 0, TWIML_INT_MAX),
    A_TYPED("digits", AT_DIGITS, play.digits, NULL),
};
static const attr_spec pause_attrs[] = {
    A_INT("length", pause.length, 0, TWIML_INT_MAX),
};
static const attr_spec gather_attrs[] = {
    A_STR("action", gather.action),
    A_METHOD("method", gather.method),
    A_TYPED("input", AT_FLAGS, gather.input, gather_inputs),
    A_INT("timeout", gather.timeout, 1, TWIML_INT_MAX),
    A_TYPED("finishOnKey", AT_KEY, gather.finish_on_key, NULL),
    A_INT("numDigits", gather.num_digits, 1, TWIML_INT_MAX),
    A_BOOL("actionOnEmptyResult", gather.action_on_empty_result),
    /* Speech recognition: valid TwiML; the executor reports speech input
     * as unsupported, so these are accepted and not stored. */
    A_ACCEPT("speechTimeout"),
    A_ACCEPT("maxSpeechTime"),
    A_ACCEPT("partialResultCallback"),
    A_ACCEPT("partialResultCallbackMethod"),
    A_ACCEPT("language"),
    A_ACCEPT("hints"),
    A_ACCEPT("profanityFilter"),
    A_ACCEPT("speechModel"),
    A_ACCEPT("enhanced"),
    A_ACCEPT("bargeIn"),
    A_ACCEPT("debug"),
};
static const attr_spec record_attrs[] = {
    A_STR("action", record.action),
    A_METHOD("method", record.method),
    A_INT("timeout", record.timeout, 0, TWIML_INT_MAX),
    A_TYPED("finishOnKey", AT_KEYSET, record.finish_on_key, NULL),
    A_INT("maxLength", record.max_length, 1, TWIML_INT_MAX),
    A_BOOL("playBeep", record.play_beep),
    A_TYPED("trim", AT_CHOICE, record.trim, trim_words),
    A_STR("recordingStatusCallback", record.rsc),
    A_METHOD("recordingStatusCallbackMethod", record.rsc_method),
    A_TYPED("recordingStatusCallbackEvent", AT_FLAGS, record.rsc_events, rec_events),
    A_BOOL("transcribe", record.transcribe),
    A_ACCEPT("transcribeCallback"),
    A_ACCEPT("recordingConfigurationId"),
};
static const attr_spec redirect_attrs[] = {
    A_METHOD("method", redirect.method),
};
static const attr_spec reject_attrs[] = {
    A_TYPED("reason", AT_CHOICE, reject.busy, reject_reasons),
};

#define VERB(n, k, a) { n, k, a, COUNT(a) }
#define VERB_NOATTR(n, k) { n, k, NULL, 0 }

/* Every element that may appear directly under <Response> (contract §11.12). */
static const verb_spec verbs[] = {
    VERB("Say", TV_SAY, say_attrs),
    VERB("Play", TV_PLAY, play_attrs),
    VERB("Pause", TV_PAUSE, pause_attrs),
    VERB("Gather", TV_GATHER, gather_attrs),
    VERB("Record", TV_RECORD, record_attrs),
    VERB("Redirect", TV_REDIRECT, redirect_attrs),
    VERB_NOATTR("Hangup", TV_HANGUP),
    VERB("Reject", TV_REJECT, reject_attrs),
    VERB_NOATTR("Dial", TV_UNSUPPORTED),
    VERB_NOATTR("Enqueue", TV_UNSUPPORTED),
    VERB_NOATTR("Leave", TV_UNSUPPORTED),
    VERB_NOATTR("Connect", TV_UNSUPPORTED),
    VERB_NOATTR("Start", TV_UNSUPPORTED),
    VERB_NOATTR("Stop", TV_UNSUPPORTED),
    VERB_NOATTR("Pay", TV_UNSUPPORTED),
    VERB_NOATTR("Refer", TV_UNSUPPORTED),
    VERB_NOATTR("Sms", TV_UNSUPPORTED),
    VERB_NOATTR("Echo", TV_UNSUPPORTED),
    VERB_NOATTR("Prompt", TV_UNSUPPORTED),
    VERB_NOATTR("Queue", TV_UNSUPPORTED),
};

/* SSML elements allowed inside <Say> (contract §11.2). */
static const char *const ssml_tags[] = {
    "break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w",
};

const verb_spec *twiml_find_verb(const char *name)
{
    for (size_t i = 0; i < COUNT(verbs); i++)
        if (strcmp(verbs[i].name, name) == 0)
            return &verbs[i];
    return NULL;
}

static const attr_spec *find_attr(const verb_spec *vs, const char *name)
{
    for (size_t i = 0; i < vs->n_attrs; i++)
        if (strcmp(vs->attrs[i].name, name) == 0)
            return &vs->attrs[i];
    return NULL;
}

bool twiml_is_ssml(const char *name)
{
    for (size_t i = 0; i < COUNT(ssml_tags); i++)
        if (strcmp(ssml_tags[i], name) == 0)
            return true;
    return false;
}

void twiml_verb_defaults(twiml_verb *v)
{
    switch (v->kind) {
    case TV_SAY:
        v->u.say.loop = 1;
        break;
    case TV_PLAY:
        v->u.play.loop = 1;
        break;
    case TV_PAUSE:
        v->u.pause.length = 1;
        break;
    case TV_GATHER:
        v->u.gather.method = TM_POST;
        v->u.gather.input = TGATHER_DTMF;
        v->u.gather.timeout = 5;
        v->u.gather.finish_on_key = '#';
        v->u.gather.num_digits = 0;
        break;
    case TV_RECORD:
        v->u.record.method = TM_POST;
        v->u.record.timeout = 5;
        v->u.record.max_length = 3600;
        v->u.record.play_beep = true;
        v->u.record.trim = true;
        v->u.record.rsc_method = TM_POST;
        v->u.record.rsc_events = TREC_EV_COMPLETED;
        break;
    case TV_REDIRECT:
        v->u.redirect.method = TM_POST;
        break;
    case TV_HANGUP:
    case TV_REJECT:
    case TV_UNSUPPORTED:
        break;
    }
}

void twiml_verb_fini(twiml_verb *v)
{
    free(v->name);
    switch (v->kind) {
    case TV_SAY:
        free(v->u.say.text);
        free(v->u.say.voice);
        free(v->u.say.language);
        break;
    case TV_PLAY:
        free(v->u.play.url);
        free(v->u.play.digits);
        break;
    case TV_GATHER:
        free(v->u.gather.action);
        for (size_t i = 0; i < v->u.gather.n_children; i++)
            twiml_verb_fini(&v->u.gather.children[i]);
        free(v->u.gather.children);
        break;
    case TV_RECORD:
        free(v->u.record.action);
        free(v->u.record.finish_on_key);
        free(v->u.record.rsc);
        break;
    case TV_REDIRECT:
        free(v->u.redirect.url);
        break;
    case TV_PAUSE:
    case TV_HANGUP:
    case TV_REJECT:
    case TV_UNSUPPORTED:
        break;
    }
}

/* Attributes of el per the verb's table: unknown → warning, bad value →
 * warning and the default stays. Each lookup is O(table). */
int twiml_apply_attrs(pstate *st, const xmlNode *el, const verb_spec *vs, twiml_verb *v)
{
    for (const xmlAttr *a = el->properties; a != NULL; a = a->next) {
        const char *an = nm(a->name);
        /* A prefixed attribute (xml:lang, foo:loop) is never a TwiML one. */
        const attr_spec *spec = a->ns == NULL ? find_attr(vs, an) : NULL;
        if (spec == NULL) {
            if (twiml_warn(st, el, "'%.*s%s' is not a valid attribute of <%s>; ignored",
                     ECHO(an), vs->name) < 0)
                return -1;
            continue;
        }
        if (spec->type == AT_ACCEPT)
            continue;
        xmlChar *val = xmlNodeGetContent((const xmlNode *)a);
        if (val == NULL)
            return twiml_nomem(st);
        vres r = set_value(v, spec, nm(val));
        int rc = 0;
        if (r == V_NOMEM)
            rc = twiml_nomem(st);
        else if (r == V_BAD)
            rc = twiml_warn(st, el, "'%.*s%s' is not a valid value for '%s' on <%s>; "
                      "the default is used", ECHO(nm(val)), spec->name, vs->name);
        xmlFree(val);
        if (rc < 0)
            return -1;
    }
    return 0;
}
