/* libFuzzer target for form: parse arbitrary bytes; whatever parses must
 * survive encode → parse unchanged (same pairs, same order), and lookups on
 * the parsed form must agree with its pair list. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/form.h"

/* Worst case an encoded byte is "%XX": three times the decoded bytes, plus
 * '=' and '&' per pair. */
static size_t encoded_cap(const form *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        n += 3 * (strlen(f->pairs[i].key) + strlen(f->pairs[i].value)) + 2;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    form f, g;
    buf b;
    form_init(&f);
    form_init(&g);
    buf_init(&b, 0);

    form_status st = form_parse(&f, (const char *)data, size);
    /* Without '&' or '=' the input is one key, so the single-component
     * decoder must agree with the form decoder on it. */
    if (size > 0 && !memchr(data, '&', size) && !memchr(data, '=', size)) {
        char *u = form_unescape((const char *)data, size, true);
        if ((u != NULL) != (st == FORM_OK) || (u != NULL && strcmp(u, f.pairs[0].key) != 0))
            abort();
        free(u);
    }
    if (st != FORM_OK) {
        if (f.n != 0)   /* a failed parse must leave nothing behind */
            abort();
        goto out;
    }
    buf_init(&b, encoded_cap(&f));
    if (form_encode(&f, &b) != BUF_OK)
        abort();
    if (form_parse(&g, b.data ? b.data : "", b.len) != FORM_OK || g.n != f.n)
        abort();
    for (size_t i = 0; i < f.n; i++) {
        if (strcmp(f.pairs[i].key, g.pairs[i].key) != 0 ||
            strcmp(f.pairs[i].value, g.pairs[i].value) != 0)
            abort();
    }
    if (f.n > 0) {
        const char *k = f.pairs[0].key;
        if (form_get(&f, k) != f.pairs[0].value || form_count(&f, k) == 0 ||
            form_get_nth(&f, k, form_count(&f, k)) != NULL)
            abort();
    }
out:
    buf_fini(&b);
    form_fini(&g);
    form_fini(&f);
    return 0;
}
