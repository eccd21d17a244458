/* sim_api — Kaphila's endpoints as Kaphila's API documentation (v2.0.0) describes them: call
 * control (/makecall, /batchcall, /hangup, /voice, /play, /gather), state
 * (/calls, /recordings, /api/me, /api/call-logs, /health) and recording
 * downloads (served by sim_rec.c). Requests are validated here, at the edge, by a
 * small table of fields per endpoint; the call machinery trusts what it gets.
 * Loop thread only. */
#include "sim_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_VERSION "2.0.0-sim"
#define DEFAULT_VOICE "en-US-Neural2-A"
#define DEFAULT_RING_TIMEOUT_S 30
#define MAX_RING_TIMEOUT_S 300      /* a trunk gives up long before */
#define MAX_NUMBER_DIGITS 20        /* E.164 is at most 15; leave room for prefixes */
#define MAX_SHORT_FIELD 256         /* callerId, voiceName, file, webhookUrl parts */
#define MAX_WEBHOOK_URL 2048
#define MAX_GATHER_TIMEOUT_MS 600000
#define DEFAULT_GATHER_TIMEOUT_MS 10000
#define DEFAULT_PAGE_SIZE 50
#define MAX_PAGE_SIZE 100
#define MAX_PATH_SEGS 6

/* ---------------------------------------------------------------- fields */

typedef enum { F_STR, F_INT, F_BOOL } ftype;

typedef struct field {
    const char *name;
    ftype       type;
    bool        required;
    long        min, max;   /* F_INT bounds; F_STR max length */
} field;

typedef struct fval {
    const char *s;     /* borrowed from the request JSON */
    long        i;
    bool        b;
    bool        present;
} fval;

/* Validates obj against the table; answers 400 and returns false on the
 * first bad field. */
static bool fields_check(sim_req *r, const json_t *obj, const field *f, size_t n, fval *out)
{
    char msg[160];
    for (size_t k = 0; k < n; k++) {
        json_t *v = json_object_get(obj, f[k].name);
        out[k] = (fval){0};
        if (!v || json_is_null(v)) {
            if (f[k].required) {
                snprintf(msg, sizeof msg, "%s is required", f[k].name);
                goto bad;
            }
            continue;
        }
        switch (f[k].type) {
        case F_STR:
            if (!json_is_string(v)) {
                snprintf(msg, sizeof msg, "%s must be a string", f[k].name);
                goto bad;
            }
            out[k].s = json_string_value(v);
            if (f[k].required && !*out[k].s) {
                snprintf(msg, sizeof msg, "%s is required", f[k].name);
                goto bad;
            }
            if ((long)json_string_length(v) > f[k].max) {
                snprintf(msg, sizeof msg, "%s is too long", f[k].name);
                goto bad;
            }
            break;
        case F_INT: {
            double d;
            if (json_is_integer(v))
                d = (double)json_integer_value(v);
            else if (json_is_real(v))
                d = json_real_value(v);
            else if (json_is_string(v) && *json_string_value(v)) {
                char *end;
                d = strtod(json_string_value(v), &end);
                if (*end) {
                    snprintf(msg, sizeof msg, "%s must be a number", f[k].name);
                    goto bad;
                }
            } else {
                snprintf(msg, sizeof msg, "%s must be a number", f[k].name);
                goto bad;
            }
            if (d < (double)f[k].min || d > (double)f[k].max) {
                snprintf(msg, sizeof msg, "%s must be between %ld and %ld", f[k].name, f[k].min,
                         f[k].max);
                goto bad;
            }
            out[k].i = (long)d;
            break;
        }
        case F_BOOL:
            if (!json_is_boolean(v)) {
                snprintf(msg, sizeof msg, "%s must be a boolean", f[k].name);
                goto bad;
            }
            out[k].b = json_is_true(v);
            break;
        }
        out[k].present = true;
    }
    return true;
bad:
    sim_reply_error(r, 400, msg, NULL);
    return false;
}

#define NFIELDS(t) (sizeof(t) / sizeof *(t))

/* The call named by callId, owned by key; answers 404 otherwise. */
static sim_call *own_call(sim *s, sim_req *r, int key, const char *id)
{
    sim_call *c = sim_call_find(s, id);
    if (!c || sim_call_key(c) != key || strcmp(sim_call_id(c), id) != 0) {
        sim_reply_error(r, 404, "Call not found", NULL);
        return NULL;
    }
    return c;
}

static const char *play_to(sim_req *r, const fval *v)
{
    if (!v->present)
        return "bridge";
    if (strcmp(v->s, "bridge") == 0 || strcmp(v->s, "channel") == 0)
        return v->s;
    sim_reply_error(r, 400, "playTo must be bridge or channel", NULL);
    return NULL;
}

/* Maps the state machine's refusal to Kaphila's answer. */
static void reply_status(sim_req *r, sim_status st)
{
    switch (st) {
    case SIM_ERR_NOT_FOUND:
    case SIM_ERR_ENDED:
        sim_reply_error(r, 404, "Call not found or already ended", NULL);
        break;
    case SIM_ERR_NOT_ANSWERED:
        sim_reply_error(r, 400, "Call not answered", NULL);
        break;
    case SIM_ERR_FULL:
        sim_reply_error(r, 400, "Too many queued playbacks", NULL);
        break;
    case SIM_ERR_INVALID:
        sim_reply_error(r, 400, "Invalid parameters", NULL);
        break;
    default:
        sim_reply_error(r, 500, "Internal server error", NULL);
        break;
    }
}

/* ---------------------------------------------------------------- call control */

static const field makecall_fields[] = {
    {"number", F_STR, true, 0, MAX_NUMBER_DIGITS},
    {"webhookUrl", F_STR, false, 0, MAX_WEBHOOK_URL},
    {"callerId", F_STR, false, 0, MAX_SHORT_FIELD},
    {"useAmd", F_BOOL, false, 0, 0},
    {"voiceName", F_STR, false, 0, MAX_SHORT_FIELD},
    {"ringTimeout", F_INT, false, 1, MAX_RING_TIMEOUT_S},
};

static void api_makecall(sim *s, sim_req *r, int key)
{
    json_t *body = sim_req_json(r);
    if (!body)
        return;
    fval v[NFIELDS(makecall_fields)];
    if (!fields_check(r, body, makecall_fields, NFIELDS(makecall_fields), v))
        goto out;
    const char *number = v[0].s;
    if (strspn(number, "0123456789") != strlen(number)) {
        sim_reply_error(r, 400, "Invalid phone number: digits only, no +", NULL);
        goto out;
    }
    if (v[1].present && *v[1].s && strncmp(v[1].s, "http://", 7) != 0 &&
        strncmp(v[1].s, "https://", 8) != 0) {
        sim_reply_error(r, 400, "webhookUrl must be an http(s) URL", NULL);
        goto out;
    }
    if (s->keys[key].credits <= 0) {
        sim_reply_error(r, 402, "Insufficient credits", NULL);
        goto out;
    }
    sim_call_params p = {
        .number = number,
        .webhook = v[1].s,
        .caller_id = v[2].s,
        .use_amd = v[3].b,
        .voice = v[4].present ? v[4].s : DEFAULT_VOICE,
        .ring_timeout_s = v[5].present ? (int)v[5].i : DEFAULT_RING_TIMEOUT_S,
        .key = key,
    };
    sim_call *c = sim_call_originate(s, &p);
    if (!c) {
        sim_reply_error(r, 500, "Failed to originate call", "ORIGINATION_FAILED");
        goto out;
    }
    char ts[32];
    sim_iso_now(ts);
    sim_reply_json(r, 200,
                   json_pack("{s:b, s:s, s:s, s:b, s:s, s:f, s:i, s:s, s:i, s:i, s:s}", "success",
                             1, "callId", sim_call_id(c), "status", "ringing", "amdEnabled",
                             p.use_amd, "voiceName", p.voice, "credits", s->keys[key].credits,
                             "ringTimeoutSeconds", p.ring_timeout_s, "trunk", "sim-trunk-1",
                             "trunkAttempts", 1, "totalTrunks", 1, "timestamp", ts));
    sim_call_note_request(c, r, true);
out:
    json_decref(body);
}

static const field callid_fields[] = {
    {"callId", F_STR, true, 0, SIM_CALL_ID_SIZE},
};

static void api_hangup(sim *s, sim_req *r, int key)
{
    json_t *body = sim_req_json(r);
    if (!body)
        return;
    fval v[1];
    if (!fields_check(r, body, callid_fields, 1, v))
        goto out;
    sim_call *c = own_call(s, r, key, v[0].s);
    if (!c)
        goto out;
    if (!sim_call_live(c)) {
        sim_reply_error(r, 404, "Call not found or already ended", NULL);
    } else {
        sim_reply_json(r, 200, json_pack("{s:b, s:s, s:s}", "success", 1, "message",
                                         "Call hangup initiated", "callId", sim_call_id(c)));
    }
    sim_call_note_request(c, r, true);
    if (r->status == 200 && sim_call_hangup_api(c) != SIM_OK)
        sim_reply_error(r, 404, "Call not found or already ended", NULL);
out:
    json_decref(body);
}

static const field voice_fields[] = {
    {"callId", F_STR, true, 0, SIM_CALL_ID_SIZE},
    {"text", F_STR, true, 0, SIM_MAX_TEXT},
    {"playTo", F_STR, false, 0, 16},
};

static const field play_fields[] = {
    {"callId", F_STR, true, 0, SIM_CALL_ID_SIZE},
    {"file", F_STR, true, 0, MAX_SHORT_FIELD},
    {"playTo", F_STR, false, 0, 16},
};

/* /voice (tts) and /play (!tts) */
static void api_playback(sim *s, sim_req *r, int key, bool tts)
{
    json_t *body = sim_req_json(r);
    if (!body)
        return;
    fval v[3];
    if (!fields_check(r, body, tts ? voice_fields : play_fields, 3, v))
        goto out;
    sim_call *c = own_call(s, r, key, v[0].s);
    if (!c)
        goto out;
    const char *method = play_to(r, &v[2]);
    if (method) {
        char pb[32];
        sim_status st = sim_call_play(c, tts ? v[1].s : NULL, tts ? NULL : v[1].s, pb);
        if (st != SIM_OK)
            reply_status(r, st);
        else if (tts)
            sim_reply_json(r, 200, json_pack("{s:b, s:s, s:s, s:s, s:s}", "success", 1,
                                             "message", "TTS played successfully", "text",
                                             v[1].s, "playbackId", pb, "method", method));
        else
            sim_reply_json(r, 200, json_pack("{s:b, s:s, s:s, s:s, s:s}", "success", 1,
                                             "message", "Audio played successfully", "file",
                                             v[1].s, "playbackId", pb, "method", method));
    }
    sim_call_note_request(c, r, true);
out:
    json_decref(body);
}

static const field gather_fields[] = {
    {"callId", F_STR, true, 0, SIM_CALL_ID_SIZE},
    {"text", F_STR, true, 0, SIM_MAX_TEXT},
    {"numDigits", F_INT, false, 1, SIM_MAX_GATHER},
    {"timeout", F_INT, false, 0, MAX_GATHER_TIMEOUT_MS},
    {"playTo", F_STR, false, 0, 16},
};

static void api_gather(sim *s, sim_req *r, int key)
{
    json_t *body = sim_req_json(r);
    if (!body)
        return;
    fval v[NFIELDS(gather_fields)];
    if (!fields_check(r, body, gather_fields, NFIELDS(gather_fields), v))
        goto out;
    sim_call *c = own_call(s, r, key, v[0].s);
    if (!c)
        goto out;
    int num = v[2].present ? (int)v[2].i : 1;
    int timeout = v[3].present ? (int)v[3].i : DEFAULT_GATHER_TIMEOUT_MS;
    if (play_to(r, &v[4])) {
        sim_status st = sim_call_gather(c, v[1].s, num, timeout);
        if (st != SIM_OK)
            reply_status(r, st);
        else
            sim_reply_json(r, 200, json_pack("{s:b, s:s, s:s, s:i, s:i}", "success", 1,
                                             "message", "Gather started", "callId",
                                             sim_call_id(c), "expectedDigits", num, "timeoutMs",
                                             timeout));
    }
    sim_call_note_request(c, r, true);
out:
    json_decref(body);
}

/* ---------------------------------------------------------------- state */

static void api_calls(sim *s, sim_req *r, int key)
{
    json_t *arr = json_array();
    long active = 0;
    for (sim_call *c = sim_calls_first(s); c; c = sim_calls_next(c)) {
        if (sim_call_key(c) != key || !sim_call_live(c))
            continue;
        active++;
        json_array_append_new(arr, sim_call_summary(c));
    }
    /* /sim/listing: a Kaphila whose listing also carries calls that ended,
     * as many as asked (a long listing for the reconciler to read). */
    for (int i = 0; i < s->listed_ended; i++) {
        char id[32];
        snprintf(id, sizeof id, "1700000000.%d", i);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:n, s:n, s:n, s:s, s:b}",
                                             "callId", id, "status", "completed", "number",
                                             "15005550000", "amd", "gather", "recording",
                                             "voiceName", "", "hasBridge", 0));
    }
    char ts[32];
    sim_iso_now(ts);
    sim_reply_json(r, 200, json_pack("{s:b, s:i, s:i, s:o, s:s}", "success", 1, "totalCalls",
                                     (int)s->keys[key].total_calls, "activeCalls", (int)active,
                                     "calls", arr, "timestamp", ts));
}

static void api_call_get(sim *s, sim_req *r, int key, const char *id)
{
    sim_call *c = own_call(s, r, key, id);
    if (!c)
        return;
    sim_reply_json(r, 200, sim_call_detail(c));
    sim_call_note_request(c, r, false);
}

void sim_api_health(sim *s, sim_req *r)
{
    char ts[32];
    sim_iso_now(ts);
    sim_reply_json(r, 200,
                   json_pack("{s:s, s:s, s:s, s:s, s:{s:i}, s:{s:b, s:b, s:b, s:b}}", "status",
                             "healthy", "service", "kaphila-sim", "version", SIM_VERSION,
                             "timestamp", ts, "stats", "activeCalls", (int)sim_calls_live(s),
                             "features", "recording", 1, "amd", 1, "tts", 1, "playback", 1));
}

static void api_me(sim *s, sim_req *r, int key)
{
    const sim_key *k = &s->keys[key];
    char created[32], used[32], key_id[32];
    sim_iso_ms(k->created_ms, created);
    sim_iso_ms(k->last_used_ms ? k->last_used_ms : k->created_ms, used);
    snprintf(key_id, sizeof key_id, "key_%d", key + 1);
    sim_reply_json(r, 200,
                   json_pack("{s:b, s:{s:i, s:s, s:s, s:f, s:i, s:i, s:i, s:s, s:s}}", "success",
                             1, "apiKey", "id", key + 1, "keyId", key_id, "name", "kaphila-sim key",
                             "credits", k->credits, "totalCalls", (int)k->total_calls,
                             "successfulCalls", (int)k->successful_calls, "rateLimit",
                             k->rate_limit, "createdAt", created, "lastUsed", used));
}

static const field logs_fields[] = {
    {"page", F_INT, false, 1, 1000000},
    {"page_size", F_INT, false, 1, MAX_PAGE_SIZE},
    {"status", F_STR, false, 0, 32},
};

static void api_call_logs(sim *s, sim_req *r, int key)
{
    json_t *body = r->body->len ? sim_req_json(r) : json_object();
    if (!body)
        return;
    fval v[3];
    if (!fields_check(r, body, logs_fields, 3, v))
        goto out;
    long page = v[0].present ? v[0].i : 1;
    long size = v[1].present ? v[1].i : DEFAULT_PAGE_SIZE;
    const char *status = v[2].present && *v[2].s ? v[2].s : NULL;
    /* Newest first, as a log view shows them. */
    json_t *logs = json_array();
    long total = 0, first = (page - 1) * size;
    /* Collect matching calls oldest first, then emit the page newest first. */
    size_t cap = 0, n = 0;
    sim_call **match = NULL;
    for (sim_call *c = sim_calls_first(s); c; c = sim_calls_next(c)) {
        if (sim_call_key(c) != key || (status && strcmp(status, sim_call_status(c)) != 0))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            sim_call **nm = realloc(match, ncap * sizeof *nm);
            if (!nm)
                break;
            match = nm;
            cap = ncap;
        }
        match[n++] = c;
    }
    total = (long)n;
    for (long i = first; i < first + size && i < total; i++)
        json_array_append_new(logs, sim_call_log(match[n - 1 - (size_t)i]));
    free(match);
    sim_reply_json(r, 200,
                   json_pack("{s:b, s:o, s:i, s:{s:i, s:i, s:i}}", "success", 1, "logs", logs,
                             "total_count", (int)total, "pagination", "page", (int)page,
                             "page_size", (int)size, "total_pages",
                             (int)((total + size - 1) / size)));
out:
    json_decref(body);
}

/* ---------------------------------------------------------------- recordings */

static void api_recordings(sim *s, sim_req *r, int key)
{
    json_t *active = json_array();
    for (sim_call *c = sim_calls_first(s); c; c = sim_calls_next(c)) {
        if (sim_call_key(c) != key)
            continue;
        json_t *rec = sim_call_recording(c);
        if (rec && json_is_true(json_object_get(rec, "active")))
            json_array_append_new(active, rec);
        else
            json_decref(rec);
    }
    json_t *files = sim_recs_files(s);
    sim_reply_json(r, 200, json_pack("{s:b, s:o, s:o}", "success", 1, "active", active, "files",
                                     files));
}

static void api_recording(sim *s, sim_req *r, int key, const char *id, const char *action)
{
    sim_call *c = own_call(s, r, key, id);
    if (!c)
        return;
    json_t *rec = sim_call_recording(c);
    if (!action) {
        if (rec) {
            json_object_set_new(rec, "success", json_true());
            sim_reply_json(r, 200, rec);
            rec = NULL;
        } else {
            sim_reply_error(r, 404, "No recording for this call", NULL);
        }
    } else if (strcmp(action, "download") == 0) {
        if (rec)
            sim_rec_download(s, r, sim_call_id(c));
        else
            sim_reply_error(r, 404, "No recording for this call", NULL);
    } else {   /* stop */
        if (sim_call_stop_recording(c) == SIM_OK) {
            sim_reply_json(r, 200, json_pack("{s:b, s:s, s:O, s:O}", "success", 1, "message",
                                             "Recording stopped", "filename",
                                             json_object_get(rec, "filename"), "recordingId",
                                             json_object_get(rec, "recordingId")));
        } else {
            sim_reply_error(r, 404, "No active recording for this call", NULL);
        }
    }
    json_decref(rec);
    sim_call_note_request(c, r, false);
}

/* ---------------------------------------------------------------- routing */

/* Splits path into segments (in place in copy); returns the count. */
static size_t split_path(char *copy, char *seg[MAX_PATH_SEGS])
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == MAX_PATH_SEGS)
            return MAX_PATH_SEGS + 1;
        seg[n++] = t;
    }
    return n;
}

void sim_api_route(sim *s, sim_req *r, int key)
{
    bool get = strcmp(r->method, "GET") == 0;
    bool post = strcmp(r->method, "POST") == 0;
    const char *p = r->path;

    if (post && (strcmp(p, "/makecall") == 0 || strcmp(p, "/batchcall") == 0)) {
        api_makecall(s, r, key);
        return;
    }
    if (post && strcmp(p, "/hangup") == 0) {
        api_hangup(s, r, key);
        return;
    }
    if (post && strcmp(p, "/voice") == 0) {
        api_playback(s, r, key, true);
        return;
    }
    if (post && strcmp(p, "/play") == 0) {
        api_playback(s, r, key, false);
        return;
    }
    if (post && strcmp(p, "/gather") == 0) {
        api_gather(s, r, key);
        return;
    }
    if (get && strcmp(p, "/calls") == 0) {
        api_calls(s, r, key);
        return;
    }
    if (get && strcmp(p, "/recordings") == 0) {
        api_recordings(s, r, key);
        return;
    }
    if (get && strcmp(p, "/api/me") == 0) {
        api_me(s, r, key);
        return;
    }
    if (post && strcmp(p, "/api/call-logs") == 0) {
        api_call_logs(s, r, key);
        return;
    }

    char copy[1024];
    char *seg[MAX_PATH_SEGS];
    if (strlen(p) >= sizeof copy) {
        sim_reply_error(r, 404, "Endpoint not found", NULL);
        return;
    }
    snprintf(copy, sizeof copy, "%s", p);
    size_t n = split_path(copy, seg);
    if (get && n == 2 && strcmp(seg[0], "calls") == 0) {
        api_call_get(s, r, key, seg[1]);
        return;
    }
    if (n >= 2 && strcmp(seg[0], "recordings") == 0) {
        if (get && n == 4 && strcmp(seg[1], "file") == 0 && strcmp(seg[3], "download") == 0) {
            if (sim_rec_filename_ok(seg[2]))
                sim_rec_download_file(s, r, seg[2]);
            else
                sim_reply_error(r, 400, "Invalid filename", NULL);
            return;
        }
        if (get && n == 2) {
            api_recording(s, r, key, seg[1], NULL);
            return;
        }
        if (get && n == 3 && strcmp(seg[2], "download") == 0) {
            api_recording(s, r, key, seg[1], "download");
            return;
        }
        if (post && n == 3 && strcmp(seg[2], "stop") == 0) {
            api_recording(s, r, key, seg[1], "stop");
            return;
        }
    }
    sim_reply_error(r, 404, "Endpoint not found", NULL);
}
