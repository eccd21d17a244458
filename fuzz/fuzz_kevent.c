/* fuzz_kevent — any bytes Kaphila (or an attacker holding a call's token)
 * could post as an event: JSON decoding plus kevent's typed view and its
 * Twilio meaning must never crash or read out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/kevent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *ev = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    kevent k;
    if (ev && kevent_parse(ev, &k)) {
        const char *st = kevent_terminal_status(&k, size & 1, size & 2);
        const char *by = kevent_answered_by(k.amd_status, size & 4);
        if (!st || !by || strlen(k.name) >= KEVENT_NAME_LEN) __builtin_trap();
    }
    json_decref(ev);
    return 0;
}
