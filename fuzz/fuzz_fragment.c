/* libFuzzer target for fragment: any URL must split without crashing, the
 * base must be exactly the text before the first '#', and every option must
 * end up inside Twilio's documented range. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/fragment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ranges(const fragment_opts *o)
{
    if (o->connect_ms < 100 || o->connect_ms > 10000 || o->read_ms < 100 ||
        o->read_ms > 15000 || o->total_ms < 100 || o->total_ms > 15000 || o->retries < 0 ||
        o->retries > 5 || o->retry_policy == 0 || (o->retry_policy & ~FRAG_RP_ALL) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (url == NULL)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';   /* URLs reach fragment_split as C strings */
    size_t blen = strcspn(url, "#");

    /* A base buffer big enough, and one exactly one byte too small. */
    char *base = malloc(blen + 1);
    fragment_opts o;
    if (base != NULL) {
        if (!fragment_split(url, base, blen + 1, &o) || strlen(base) != blen ||
            memcmp(base, url, blen) != 0)
            abort();
        check_ranges(&o);
        if (blen > 0 && fragment_split(url, base, blen, &o))
            abort();
        check_ranges(&o);
    }
    free(base);
    free(url);
    return 0;
}
