/* recordings_store.c — around the recordings rows (store/recstore.h has
 * the rows and their SQL): the cache paths of their media, and their
 * Twilio JSON (contract §6.1, §6.2). Any thread. */
#include "recordings_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/calljson.h"
#include "base/log.h"

/* ---- cache paths ---- */

bool rec_cache_dir(const config *cfg, char out[PATH_MAX])
{
    int n = snprintf(out, PATH_MAX, "%s.recordings", cfg->db_path);
    return n > 0 && n < PATH_MAX - 64;   /* room for "/<SID>.wav.part" */
}

bool rec_bridge_path(const config *cfg, const char *call_sid, char out[PATH_MAX])
{
    char dir[PATH_MAX];
    int n;
    if (!rec_cache_dir(cfg, dir) || !sid_valid(call_sid, "CA")) return false;
    n = snprintf(out, PATH_MAX, "%s/%s.wav", dir, call_sid);
    return n > 0 && n < PATH_MAX;
}

bool rec_media_path(const config *cfg, const rec_row *r, char out[PATH_MAX])
{
    char dir[PATH_MAX];
    int n;
    if (!rec_is_window(r)) return rec_bridge_path(cfg, r->call_sid, out);
    if (!rec_cache_dir(cfg, dir) || !sid_valid(r->sid, "RE")) return false;
    n = snprintf(out, PATH_MAX, "%s/%s.wav", dir, r->sid);
    return n > 0 && n < PATH_MAX;
}

bool rec_mp3_path(const config *cfg, const rec_row *r, char out[PATH_MAX])
{
    char dir[PATH_MAX];
    int n;
    if (!rec_cache_dir(cfg, dir) || !sid_valid(r->sid, "RE")) return false;
    n = snprintf(out, PATH_MAX, "%s/%s.mp3", dir, r->sid);
    return n > 0 && n < PATH_MAX;
}

/* ---- JSON ---- */

void rec_media_url(const char *public_url, const rec_row *r, char *out, size_t n)
{
    snprintf(out, n, "%s" API_PREFIX "/Accounts/%s/Recordings/%s", public_url, r->account_sid,
             r->sid);
}

json_t *rec_json(const rec_row *r, const char *public_url, bool account_level)
{
    json_t *o = json_object();
    char uri[256], dur[16];
    if (!o) return NULL;
    json_object_set_new(o, "account_sid", json_string(r->account_sid));
    json_object_set_new(o, "api_version", json_string("2010-04-01"));
    json_object_set_new(o, "call_sid", json_string(r->call_sid));
    json_object_set_new(o, "conference_sid", json_null());
    json_object_set_new(o, "channels", json_integer(r->channels));
    json_object_set_new(o, "date_created", calljson_time(r->date_created));
    json_object_set_new(o, "date_updated", calljson_time(r->date_updated));
    json_object_set_new(o, "start_time", calljson_time(r->start_time));
    if (r->duration >= 0) {
        snprintf(dur, sizeof dur, "%d", r->duration);
        json_object_set_new(o, "duration", json_string(dur));
    } else {
        json_object_set_new(o, "duration", json_null());
    }
    json_object_set_new(o, "encryption_details", json_null());
    json_object_set_new(o, "error_code", r->error_code ? json_integer(r->error_code) : json_null());
    json_object_set_new(o, "price", json_null());
    json_object_set_new(o, "price_unit", json_string("USD"));
    json_object_set_new(o, "sid", json_string(r->sid));
    json_object_set_new(o, "source", json_string(r->source));
    json_object_set_new(o, "status", json_string(account_level && r->deleted ? "deleted" : r->status));
    if (account_level) {
        char media[768];
        json_t *sub = json_object();
        snprintf(uri, sizeof uri, API_PREFIX "/Accounts/%s/Recordings/%s/AddOnResults.json",
                 r->account_sid, r->sid);
        json_object_set_new(sub, "add_on_results", json_string(uri));
        snprintf(uri, sizeof uri, API_PREFIX "/Accounts/%s/Recordings/%s/Transcriptions.json",
                 r->account_sid, r->sid);
        json_object_set_new(sub, "transcriptions", json_string(uri));
        json_object_set_new(o, "subresource_uris", sub);
        rec_media_url(public_url, r, media, sizeof media);
        json_object_set_new(o, "media_url", json_string(media));
        snprintf(uri, sizeof uri, API_PREFIX "/Accounts/%s/Recordings/%s.json", r->account_sid,
                 r->sid);
    } else {
        json_object_set_new(o, "track", json_string(r->track));
        snprintf(uri, sizeof uri, API_PREFIX "/Accounts/%s/Calls/%s/Recordings/%s.json",
                 r->account_sid, r->call_sid, r->sid);
    }
    json_object_set_new(o, "uri", json_string(uri));
    return o;
}
