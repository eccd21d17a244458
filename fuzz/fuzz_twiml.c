/* fuzz_twiml — libFuzzer target for twiml_parse with the default limits.
 *
 * Besides "no crash, no leak", it checks what callers rely on: exactly one of
 * doc / error comes back, error codes are the documented ones, and every
 * string a caller may print is present. The seed corpus is fuzz/corpus/twiml. */
#include "twiml/twiml.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Messages end up in JSON notifications, and jansson refuses invalid UTF-8. */
static void check_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t need = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2
                    : (*p & 0xF8) == 0xF0 ? 3 : 4;
        if (need == 4 || *p == 0xC0 || *p == 0xC1)
            abort();
        for (size_t i = 1; i <= need; i++)
            if ((p[i] & 0xC0) != 0x80)
                abort();
        p += need + 1;
    }
}

static void check_verb(const twiml_verb *v, int depth)
{
    if (v->name == NULL || v->kind < TV_SAY || v->kind > TV_UNSUPPORTED)
        abort();
    switch (v->kind) {
    case TV_SAY:
        if (v->u.say.text == NULL || v->u.say.loop < 0)
            abort();
        check_utf8(v->u.say.text);
        break;
    case TV_PLAY:
        if (v->u.play.url == NULL && v->u.play.digits == NULL)
            abort();
        break;
    case TV_REDIRECT:
        if (v->u.redirect.url == NULL || v->u.redirect.url[0] == '\0')
            abort();
        check_utf8(v->u.redirect.url);
        break;
    case TV_RECORD:
        if (v->u.record.finish_on_key == NULL)
            abort();
        break;
    case TV_GATHER:
        if (depth > 0 || v->u.gather.input == 0)
            abort();
        for (size_t i = 0; i < v->u.gather.n_children; i++) {
            twiml_verb_kind k = v->u.gather.children[i].kind;
            if (k != TV_SAY && k != TV_PLAY && k != TV_PAUSE)
                abort();
            check_verb(&v->u.gather.children[i], depth + 1);
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int code = -1;
    char err[256] = "";
    twiml_doc *d = twiml_parse((const char *)data, size, NULL, &code, err, sizeof err);
    if (d == NULL) {
        if (code != 12100 && code != 12102 && code != 0)
            abort();
        if (err[0] == '\0')
            abort();
        check_utf8(err);
        return 0;
    }
    if (d->n_warnings > TWIML_MAX_WARNINGS)
        abort();
    for (size_t i = 0; i < d->n_warnings; i++)
        if (d->warnings[i].code != 12200 || d->warnings[i].message == NULL)
            abort();
        else
            check_utf8(d->warnings[i].message);
    for (size_t i = 0; i < d->n_verbs; i++)
        check_verb(&d->verbs[i], 0);
    twiml_doc_destroy(d);
    return 0;
}
