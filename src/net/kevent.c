/* kevent.c — Kaphila event decoding and its Twilio meaning. */
#include "net/kevent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *name; kevent_kind kind; bool prefix; } kinds[] = {
    {"call.initiated", KE_INITIATED, false}, {"call.answered", KE_ANSWERED, false},
    {"call.ended", KE_ENDED, false},         {"dtmf.received", KE_DTMF, false},
    {"gather.", KE_GATHER, true},            {"tts.played", KE_TTS_PLAYED, false},
    {"recording.", KE_RECORDING, true},
};

static void copy_str(json_t *v, char *out, size_t size)
{
    snprintf(out, size, "%s", json_is_string(v) ? json_string_value(v) : "");
}

/* Kaphila sends numbers sometimes as JSON numbers, sometimes as strings
 * ("hangupCause": "16"); -1 when neither. */
static long long num(json_t *v)
{
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_real(v)) {
        /* A cast of an out-of-range double is undefined: bound it first. */
        double d = json_real_value(v);
        return d >= 0 && d < 1e15 ? (long long)d : -1;
    }
    if (json_is_string(v)) {
        char *end;
        long long n = strtoll(json_string_value(v), &end, 10);
        if (end != json_string_value(v) && *end == '\0') return n;
    }
    return -1;
}

bool kevent_parse(json_t *ev, kevent *out)
{
    json_t *name = json_object_get(ev, "event"), *amd, *d;
    memset(out, 0, sizeof *out);
    out->duration = -1;
    if (!json_is_object(ev) || !json_is_string(name)) return false;
    copy_str(name, out->name, sizeof out->name);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].name);
        if (kinds[i].prefix ? !strncmp(out->name, kinds[i].name, n) : !strcmp(out->name, kinds[i].name)) {
            out->kind = kinds[i].kind;
            break;
        }
    }
    amd = json_object_get(ev, "amd");
    if (json_is_object(amd)) {
        long long ms = num(json_object_get(amd, "durationMs"));
        out->has_amd = true;
        copy_str(json_object_get(amd, "status"), out->amd_status, sizeof out->amd_status);
        out->amd_ms = ms > 0 ? ms : 0;
    }
    out->was_answered = json_is_true(json_object_get(ev, "wasAnswered"));
    long long cause = num(json_object_get(ev, "hangupCause"));
    out->hangup_cause = cause > 0 && cause < 1000 ? (int)cause : 0;
    copy_str(json_object_get(ev, "status"), out->status, sizeof out->status);
    copy_str(json_object_get(ev, "endReason"), out->end_reason, sizeof out->end_reason);
    d = json_object_get(ev, "callDuration");
    if (!d) d = json_object_get(ev, "duration");   /* older payloads */
    long long dur = num(d);
    out->duration = dur >= 0 && dur < 10L * 24 * 3600 ? (int)dur : -1;
    return true;
}

const char *kevent_terminal_status(const kevent *k, bool seen_answered, bool cancel_requested)
{
    static const char *const terminal[] = {"busy", "no-answer", "failed", "canceled"};
    if (k->was_answered || seen_answered) return "completed";
    if (cancel_requested) return "canceled";
    switch (k->hangup_cause) {
    case 17: case 21: return "busy";
    case 18: case 19: return "no-answer";
    case 1: case 3: case 28: return "failed";
    default: break;
    }
    for (size_t i = 0; i < sizeof terminal / sizeof terminal[0]; i++)
        if (!strcmp(k->status, terminal[i])) return terminal[i];
    return "no-answer";
}

const char *kevent_answered_by(const char *amd_status, bool detect_message_end)
{
    if (!amd_status || !*amd_status) return "unknown";
    if (!strcmp(amd_status, "HUMAN") || !strcmp(amd_status, "NOTSURE")) return "human";
    if (!strcmp(amd_status, "MACHINE")) return detect_message_end ? "machine_end_other" : "machine_start";
    return "unknown";
}
