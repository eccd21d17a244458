/* twiml — parses a TwiML document into validated, typed verbs.
 *
 * libxml2 with network access, DTD loading and entity expansion off; caps on
 * size and nesting depth. Attribute values are checked here, at the edge: the
 * executor trusts these structs. Problems Twilio reports as schema warnings
 * (12200: unknown verb or attribute, bad value replaced by its default) are
 * collected in doc->warnings and parsing continues; fatal problems (12100 not
 * well-formed, a cap exceeded, a DOCTYPE; 12102 root is not <Response>) fail
 * the parse.
 *
 * Input rules worth knowing: the document is read as UTF-8 whatever its XML
 * declaration says (UTF-16/32 and EBCDIC inputs are refused with 12100);
 * whitespace before "<?xml" is refused as libxml2 and Twilio both do;
 * namespaces are ignored (elements match by local name); booleans, methods
 * and enumerated words (reason, input, trim, …) are case-insensitive where
 * only one word matches that way; element and attribute names are exact.
 *
 * Pure, any thread (libxml2 is initialised once inside, via pthread_once);
 * a doc is owned by its caller (twiml_doc_destroy). */
#ifndef TWIGATE_TWIML_H
#define TWIGATE_TWIML_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    TV_SAY = 1, TV_PLAY, TV_PAUSE, TV_GATHER, TV_RECORD, TV_REDIRECT, TV_HANGUP,
    TV_REJECT,
    TV_UNSUPPORTED,   /* a real top-level Twilio verb Kaphila cannot carry out (Dial,
                         Enqueue, Leave, Connect, Start, Stop, Pay, Refer, Sms, Echo,
                         Prompt, Queue): kept, with name set and no warning, so the
                         executor can report it. Its attributes and children are not
                         examined. <Message> and <Conference> are not top-level
                         Voice verbs and get a 12200 warning instead. */
} twiml_verb_kind;

typedef enum { TM_POST = 0, TM_GET = 1 } twiml_method;

enum { /* recordingStatusCallbackEvent bits */
    TREC_EV_IN_PROGRESS = 1, TREC_EV_COMPLETED = 2, TREC_EV_ABSENT = 4,
};
enum { /* Gather input bits */
    TGATHER_DTMF = 1, TGATHER_SPEECH = 2,
};

/* Every integer attribute (loop, length, timeout, numDigits, maxLength) is at
 * most this; larger values are bad values (12200, default used). A million
 * seconds is far past any call's 4-hour limit, and the cap keeps
 * seconds * 1000 (milliseconds) inside an int for the executor. */
#define TWIML_INT_MAX 1000000

typedef struct twiml_verb twiml_verb;

typedef struct twiml_say {
    char *text;         /* body, never NULL (may be ""): whitespace collapsed and
                           trimmed; SSML children flattened to their text (<sub> to
                           its alias), each SSML tag counting as a word break */
    char *voice;        /* NULL = default */
    char *language;     /* NULL = default */
    int   loop;         /* >= 0; 0 = until the call ends; default 1 */
} twiml_say;

typedef struct twiml_play {
    char *url;          /* body, trimmed (NULL when empty; then digits is set) */
    char *digits;       /* NULL unless given */
    int   loop;         /* >= 0; 0 = until hang-up, capped at 1000 by the executor */
} twiml_play;

typedef struct twiml_pause { int length; /* seconds, default 1, >= 0 */ } twiml_pause;

typedef struct twiml_gather {
    char        *action;        /* NULL = current document URL */
    twiml_method method;
    int          input;         /* TGATHER_* bits, default DTMF */
    int          timeout;       /* seconds, default 5 */
    char         finish_on_key; /* '#' default; 0 = disabled (empty attribute) */
    int          num_digits;    /* 0 = unlimited */
    bool         action_on_empty_result;
    twiml_verb  *children;      /* nested Say/Play/Pause only (Play without digits) */
    size_t       n_children;
} twiml_gather;

typedef struct twiml_record {
    char        *action;          /* NULL = current document URL */
    twiml_method method;
    int          timeout;         /* silence seconds, default 5; 0 = disabled */
    bool         timeout_given;   /* the attribute was written (not the default) */
    char        *finish_on_key;   /* set of keys, default "1234567890*#"; "" = none */
    int          max_length;      /* seconds, default 3600 */
    bool         play_beep;       /* default true */
    bool         trim;            /* trim-silence (default true) */
    char        *rsc;             /* recordingStatusCallback, NULL = none */
    twiml_method rsc_method;
    int          rsc_events;      /* TREC_EV_* bits, default COMPLETED */
    bool         transcribe;
} twiml_record;

typedef struct twiml_redirect { char *url; /* trimmed body, never NULL or empty */
                                 twiml_method method; } twiml_redirect;
typedef struct twiml_reject   { bool busy; /* reason="busy"; default rejected */ } twiml_reject;

struct twiml_verb {
    twiml_verb_kind kind;
    char *name;          /* element name as written (for reports); never NULL */
    int   line;          /* source line, for notifications */
    union {
        twiml_say      say;
        twiml_play     play;
        twiml_pause    pause;
        twiml_gather   gather;
        twiml_record   record;
        twiml_redirect redirect;
        twiml_reject   reject;
    } u;
};

typedef struct twiml_warning {
    int   code;          /* 12200, … */
    char *message;
} twiml_warning;

/* At most this many warnings are kept; the last one then says the rest were
 * dropped. Each becomes a notification, and a flood of identical ones would
 * bury the first, which is the one that explains the rest. */
#define TWIML_MAX_WARNINGS 100

typedef struct twiml_doc {
    twiml_verb    *verbs;
    size_t         n_verbs;
    twiml_warning *warnings;
    size_t         n_warnings;
} twiml_doc;

typedef struct twiml_limits {
    size_t max_bytes;    /* default 65536 */
    int    max_depth;    /* default 16 */
    size_t max_verbs;    /* default 1000; counts nested verbs too */
} twiml_limits;

void twiml_limits_default(twiml_limits *l);
/* lim NULL = defaults. On failure returns NULL and sets *err_code (12100,
 * 12102, or 12100 for a cap exceeded; 0 when out of memory, which is not the
 * document's fault) and a NUL-terminated UTF-8 message in err (truncated to
 * errlen). err_code and err may be NULL. */
twiml_doc *twiml_parse(const char *xml, size_t len, const twiml_limits *lim,
                       int *err_code, char *err, size_t errlen);
void twiml_doc_destroy(twiml_doc *d);    /* accepts NULL */
const char *twiml_method_name(twiml_method m);

#endif
