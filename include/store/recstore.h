/* recstore — the recordings table (each backend owns every statement on
 * it: SQLite's in src/store/sqlite/store_recordings.c, the table created by
 * its store_schema.c's migration 1; store.c dispatches these calls to it):
 * a recording's row and its reads and writes. The engine's recordings files
 * (recordings_int.h) build on it. Any thread, with its own store connection
 * (store.h); every change to a row is made on the engine thread, HTTP
 * threads only read. A row owns its callback_url (rec_row_fini). */
#ifndef TWIGATE_STORE_RECSTORE_H
#define TWIGATE_STORE_RECSTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/sid.h"
#include "store/store.h"

/* recordingStatusCallbackEvent bits, as the table stores them (and as
 * twiml.h's TREC_EV_* and engine_int.h's rsc_events number them). */
enum { REC_EV_IN_PROGRESS = 1, REC_EV_COMPLETED = 2, REC_EV_ABSENT = 4 };

/* Recordings per call. A TwiML loop around <Record> makes one per turn;
 * past this many the loop is a runaway, and every row costs a cut file. */
#define REC_MAX_PER_CALL 1000
#define REC_KID_LEN 128
#define REC_FILENAME_LEN 256

typedef struct rec_row {
    int64_t id;                       /* rowid: list order, newest = largest */
    char    sid[SID_SIZE];
    char    account_sid[SID_SIZE];
    char    call_sid[SID_SIZE];
    char    source[24];               /* OutboundAPI | RecordVerb | StartCallRecordingAPI */
    char    status[16];               /* in-progress stopped processing completed absent */
    int     channels;
    char    track[12];
    int64_t date_created, date_updated, start_time;   /* ms since the epoch */
    int     duration;                 /* seconds, -1 = null */
    int64_t offset_ms;                /* window start on the call_answered_ms() clock */
    int64_t window_ms;                /* window length; -1 = open (or the whole bridge) */
    char    kaphila_call_id[STORE_KID_LEN];
    char    kaphila_recording_id[REC_KID_LEN];
    char    filename[REC_FILENAME_LEN];   /* Kaphila's file name, "" until known */
    int     error_code;               /* 0 = null */
    char   *callback_url;             /* owned; NULL = no recording status callback */
    char    callback_method[8];
    int     callback_events;          /* REC_EV_* bits */
    bool    deleted;
} rec_row;

void rec_row_fini(rec_row *r);      /* frees callback_url; accepts NULL */
bool rec_is_window(const rec_row *r);   /* not the whole bridge (OutboundAPI) */

/* ---- SQL; c is the calling thread's connection ---- */
typedef struct rec_filter {
    const char *account_sid;
    const char *call_sid;             /* NULL/"" = any */
    int64_t     created_from, created_to;   /* [from, to) ms; 0 = unbounded */
    bool        include_deleted;
} rec_filter;

__attribute__((warn_unused_result))
store_status rec_db_insert(store_conn *c, rec_row *r);            /* sets r->id */
/* By SID within an account (account_sid NULL = any account: engine only).
 * Deleted rows are returned too; callers decide. */
__attribute__((warn_unused_result))
store_status rec_db_get(store_conn *c, const char *account_sid, const char *sid, rec_row *out);
__attribute__((warn_unused_result))
store_status rec_db_get_id(store_conn *c, int64_t id, rec_row *out);
/* Writes the columns the engine changes: status, date_updated, duration,
 * window_ms, Kaphila ids, filename, channels, error_code. */
__attribute__((warn_unused_result))
store_status rec_db_update(store_conn *c, const rec_row *r);
__attribute__((warn_unused_result))
store_status rec_db_set_deleted(store_conn *c, const char *sid, int64_t now);
/* Keyset page, newest first (see store_call_list); rows lack callback_url. */
__attribute__((warn_unused_result))
store_status rec_db_list(store_conn *c, const rec_filter *f, int64_t before_id, int64_t offset,
                         int limit, rec_row *out, int *n_out);
/* Every row of a call, oldest first (at most REC_MAX_PER_CALL), into a new
 * array the caller frees with rec_rows_free. *out is NULL when there are none. */
__attribute__((warn_unused_result))
store_status rec_db_for_call(store_conn *c, const char *call_sid, rec_row **out, int *n_out);
void rec_rows_free(rec_row *rows, int n);
/* Calls that have recordings waiting for their media (recovery). */
__attribute__((warn_unused_result))
store_status rec_db_pending_calls(store_conn *c, char (*out)[SID_SIZE], int max, int *n_out);

#endif
