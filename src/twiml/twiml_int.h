/* twiml_int — what the TwiML parser's files share; not part of the API.
 *
 * Files: twiml.c (the parser: messages, strings, verb bodies, libxml2 glue,
 * twiml_parse and the destructors) and twiml_attrs.c (the per-verb attribute
 * tables and their value validators, the verb table, defaults and fini).
 * Pure functions of their arguments: any thread, no shared state; a pstate
 * belongs to one twiml_parse call and the doc it builds is the caller's.
 *
 * Error handling: helpers return 0, or -1 with st->code/st->msg set (code 0
 * = out of memory). Warnings never stop the parse. */
#ifndef TWIGATE_TWIML_INT_H
#define TWIGATE_TWIML_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <libxml/tree.h>

#include "twiml/twiml.h"

#define ERR_NOT_WELL_FORMED 12100
#define ERR_BAD_ROOT        12102
#define WARN_SCHEMA         12200

/* Bytes of a user-supplied name or value echoed into a message: enough to
 * recognise it, short enough that a 60 KB attribute can't become a 60 KB
 * notification. */
#define ECHO_MAX 64
/* Room for one warning: three echoed pieces plus fixed text. */
#define WARN_MSG_MAX 512
/* Room for a fatal message before it is copied into the caller's err. */
#define FATAL_MSG_MAX 512

typedef struct pstate {
    const twiml_limits *lim;
    twiml_doc          *doc;
    size_t              warn_alloc;
    size_t              n_verbs;     /* all verbs so far, nested ones too */
    int                 code;        /* fatal: 12100/12102, 0 = out of memory */
    char                msg[FATAL_MSG_MAX];
} pstate;

typedef struct attr_spec attr_spec;   /* twiml_attrs.c */

/* A verb the parser knows, with its attribute table. */
typedef struct verb_spec {
    const char      *name;
    twiml_verb_kind  kind;
    const attr_spec *attrs;
    size_t           n_attrs;
} verb_spec;

/* <Record>'s default finishOnKey, in Twilio's spelling. */
#define TWIML_RECORD_FINISH_DEFAULT "1234567890*#"

/* ---- twiml.c: messages and strings */
/* "%.*s%s" arguments for an echoed name or value. */
#define ECHO(s) twiml_clip_len((s), ECHO_MAX), (s), twiml_clip_tail((s), ECHO_MAX)
int twiml_clip_len(const char *s, size_t max);
const char *twiml_clip_tail(const char *s, size_t max);
/* Sets the out-of-memory error; returns -1. */
int twiml_nomem(pstate *st);
/* Adds a 12200 warning at at's line; -1 only when out of memory. */
__attribute__((format(printf, 3, 4)))
int twiml_warn(pstate *st, const xmlNode *at, const char *fmt, ...);
/* s without XML whitespace at either end; its length in *len. */
const char *twiml_trim(const char *s, size_t *len);

static inline const char *nm(const xmlChar *s)
{
    return (const char *)s;
}

/* The XML whitespace set; other spaces (NBSP…) are text. */
static inline bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ---- twiml_attrs.c: the tables */
/* The verb called name, or NULL when TwiML has none. */
const verb_spec *twiml_find_verb(const char *name);
/* True for the SSML elements allowed inside <Say>. */
bool twiml_is_ssml(const char *name);
/* Twilio's defaults for v->kind's attributes. */
void twiml_verb_defaults(twiml_verb *v);
/* Frees what v owns (nested verbs too), not v itself. */
void twiml_verb_fini(twiml_verb *v);
/* el's attributes per vs's table: unknown → warning, bad value → warning
 * and the default stays. */
int twiml_apply_attrs(pstate *st, const xmlNode *el, const verb_spec *vs, twiml_verb *v);

#endif
