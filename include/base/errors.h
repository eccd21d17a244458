/* errors — the one catalogue of Twilio error codes twigate emits.
 *
 * REST errors (2xxxx) are rendered as Twilio's JSON error body
 * {"code","message","more_info","status"} with the HTTP status from the
 * table. Call-time errors (11xxx–13xxx, 16xxx) never reach a REST response:
 * they become notifications with the table's log level. Any thread. */
#ifndef TWIGATE_ERRORS_H
#define TWIGATE_ERRORS_H

#include <stddef.h>

typedef struct twerr_def {
    int         code;
    int         http_status;   /* for REST codes; 0 for notification-only codes */
    const char *log_level;     /* notifications: "ERROR" or "WARNING" */
    const char *title;         /* default message */
} twerr_def;

/* Twilio's generic "Calls resource error": twigate's code for a malformed
 * optional parameter, with a message naming it (docs/api.md). */
#define TWERR_BAD_PARAM 21200

/* NULL for a code that is not in the catalogue. */
const twerr_def *twerr_lookup(int code);
/* HTTP status for code (400 when unknown or notification-only). */
int twerr_http_status(int code);
/* Renders the JSON body into a new heap string (caller frees). message NULL
 * → the catalogue title. http_status 0 → the catalogue's status. */
char *twerr_render(int code, int http_status, const char *message);
/* "https://www.twilio.com/docs/errors/<code>" into out. */
void twerr_more_info(int code, char *out, size_t size);

#endif
