/* recordings_int — what the recordings files share; not part of the API.
 *
 * Files: recordings.c (engine thread: where recordings come from, Kaphila
 * events, callbacks, downloads, window cutting, the REST work that changes
 * state), recordings_rest.c (HTTP threads: handlers, reads, media from the
 * cache), recordings_store.c (cache paths, JSON; rows and SQL are
 * store/recstore.h; any thread with
 * its own store connection), recordings_media.c (pure WAV/Range helpers),
 * recordings_mp3.c (the rec-mp3 encoder thread).
 *
 * Every change to a recordings row happens on the engine thread, so rows
 * never race with each other; HTTP threads only read. What the REST side
 * (http/recordings_rest.c) shares with these files is in engine/recordings.h;
 * this header keeps only the engine side's constants. */
#ifndef TWIGATE_RECORDINGS_INT_H
#define TWIGATE_RECORDINGS_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "conf/app.h"
#include "conf/config.h"
#include "engine/engine.h"
#include "engine/recordings.h"
#include "base/sid.h"
#include "store/store.h"
#include "store/recstore.h"   /* the rows: rec_row, rec_db_* */

/* Windows shorter than this are empty recordings: <Record>'s own rule
 * (exec.c sends no action for them), and Twilio's "too short" (16101). */
#define REC_MIN_WINDOW_MS 500
/* Twilio's "recording too short / unavailable" codes (error_code, ErrorCode). */
#define REC_ERR_TOO_SHORT 16101
/* Kaphila has no file for the call (download 404): twigate's own choice of
 * code, Twilio has none for it (docs/recordings.md). */
#define REC_ERR_NO_FILE 20404


#endif
