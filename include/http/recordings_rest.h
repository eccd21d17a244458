/* recordings_rest — the HTTP side of Twilio's Recording resources
 * (contract §6, §8.6; routes in docs/recordings.md), registered by rest.c.
 *
 * Threads: HTTP threads only; ctx is the app *. The handlers read the store
 * through their own connection and hand every change to the engine thread
 * (rec_job_submit), which replies to the suspended request; media is served
 * from the cache directly, MP3 through rec-mp3 (engine/recordings.h). */
#ifndef TWIGATE_RECORDINGS_REST_H
#define TWIGATE_RECORDINGS_REST_H

#include "net/httpd.h"

/* GET …/Recordings.json (account-wide list). */
void rec_list(void *ctx, http_req *r, const http_match *m);
/* GET and DELETE …/Recordings/{RE}.json. */
void rec_fetch(void *ctx, http_req *r, const http_match *m);
void rec_delete(void *ctx, http_req *r, const http_match *m);
/* GET …/Recordings/{RE}, {RE}.wav (WAV), {RE}.mp3 (MP3, encoded once by
 * rec-mp3 and cached); Range honoured. Without credentials too unless the
 * account sets media_auth. */
void rec_media(void *ctx, http_req *r, const http_match *m);
/* GET and POST …/Calls/{CA}/Recordings.json. */
void rec_call_list(void *ctx, http_req *r, const http_match *m);
void rec_call_create(void *ctx, http_req *r, const http_match *m);
/* GET, POST and DELETE …/Calls/{CA}/Recordings/{RE}.json. */
void rec_call_fetch(void *ctx, http_req *r, const http_match *m);
void rec_call_update(void *ctx, http_req *r, const http_match *m);
void rec_call_delete(void *ctx, http_req *r, const http_match *m);
/* GET and POST …/Calls/{CA}/Recordings/Twilio.CURRENT.json: the call's
 * newest recording still in progress. */
void rec_call_current_fetch(void *ctx, http_req *r, const http_match *m);
void rec_call_current_update(void *ctx, http_req *r, const http_match *m);

/* Answers r with the file at path (200, or 206/416 per the Range header
 * range) as content_type; false, without replying, when the file does not
 * exist. Any thread (the engine's and rec-mp3's replies come here through
 * rest_engine_reply). */
bool rec_serve_media(http_req *r, const char *path, const char *range, const char *content_type);

#endif
