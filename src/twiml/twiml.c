/* twiml — TwiML document → validated, typed verbs (see include/twiml/twiml.h).
 *
 * Map of this file (twiml_attrs.c has the value parsers, one per attribute
 * type, and the tables: attributes per verb, then the verbs themselves;
 * twiml_int.h what the two share):
 *   1. message helpers (UTF-8-safe clipping, warnings, fatal errors)
 *   2. a small string builder and the whitespace rules
 *   5. verb bodies: <Say> (SSML flattening), <Play>/<Redirect> URL text,
 *      <Gather> children, children of verbs that take none
 *   6. libxml2 glue: encoding pre-check, per-context error capture, DOCTYPE
 *      refusal, the depth walk
 *   7. twiml_parse and the destructors
 *
 * Error handling inside: helpers return 0, or -1 with st->code/st->msg set
 * (code 0 = out of memory). Warnings never stop the parse. */
#include "twiml_int.h"

#include <libxml/encoding.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>   /* xmlCreateMemoryParserCtxt */
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- 1. messages --------------------------------------------------------- */

/* Length of s to print so that at most max bytes are shown and no UTF-8
 * sequence is cut in half (jansson refuses invalid UTF-8 downstream). */
int twiml_clip_len(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n <= max)
        return (int)n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return (int)n;
}

const char *twiml_clip_tail(const char *s, size_t max)
{
    return strnlen(s, max + 1) > max ? "..." : "";
}

/* Replaces every byte that is not part of a well-formed UTF-8 sequence with
 * '?', and control characters with spaces. Messages come partly from
 * libxml2 and partly from truncation, and must end up valid UTF-8 text. */
static void utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        size_t need;
        unsigned min;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7F)
                *p = ' ';
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) { need = 1; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; min = 0x10000; }
        else { *p++ = '?'; continue; }
        unsigned cp = c & (0x3F >> need);
        size_t i;
        for (i = 1; i <= need; i++) {
            if ((p[i] & 0xC0) != 0x80)
                break;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (i <= need || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            *p++ = '?';
            continue;
        }
        p += need + 1;
    }
}

static int node_line(const xmlNode *n)
{
    long l = xmlGetLineNo(n);
    return l < 0 ? 0 : l > INT_MAX ? INT_MAX : (int)l;
}

__attribute__((format(printf, 3, 4)))
static int fatal(pstate *st, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof st->msg, fmt, ap);
    va_end(ap);
    st->code = code;
    return -1;
}

int twiml_nomem(pstate *st)
{
    return fatal(st, 0, "out of memory while parsing TwiML");
}

/* Adds a 12200 warning. Past the cap the last slot says so and the rest are
 * dropped (TWIML_MAX_WARNINGS). */
__attribute__((format(printf, 3, 4)))
int twiml_warn(pstate *st, const xmlNode *at, const char *fmt, ...)
{
    twiml_doc *d = st->doc;
    if (d->n_warnings >= TWIML_MAX_WARNINGS)
        return 0;
    char body[WARN_MSG_MAX];
    if (d->n_warnings == TWIML_MAX_WARNINGS - 1) {
        snprintf(body, sizeof body, "more than %d warnings; the rest are not reported",
                 TWIML_MAX_WARNINGS);
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(body, sizeof body, fmt, ap);
        va_end(ap);
    }
    char full[WARN_MSG_MAX + 32];
    snprintf(full, sizeof full, "line %d: %s", node_line(at), body);
    utf8_sanitize(full);
    if (d->n_warnings == st->warn_alloc) {
        size_t n = st->warn_alloc ? st->warn_alloc * 2 : 4;
        twiml_warning *w = realloc(d->warnings, n * sizeof *w);
        if (w == NULL)
            return twiml_nomem(st);
        d->warnings = w;
        st->warn_alloc = n;
    }
    char *m = strdup(full);
    if (m == NULL)
        return twiml_nomem(st);
    d->warnings[d->n_warnings].code = WARN_SCHEMA;
    d->warnings[d->n_warnings].message = m;
    d->n_warnings++;
    return 0;
}

/* ---- 2. strings ---------------------------------------------------------- */

typedef struct sb {
    char  *p;
    size_t len, alloc;
    bool   pending_space;   /* collapse mode: a space is owed before the next char */
    bool   oom;
} sb;

static void sb_putc(sb *b, char c)
{
    if (b->oom)
        return;
    if (b->len + 1 >= b->alloc) {
        /* Bounded: every byte comes from the document, which is capped. */
        size_t n = b->alloc ? b->alloc * 2 : 64;
        char *p = realloc(b->p, n);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->alloc = n;
    }
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
}

static void sb_raw(sb *b, const char *s)
{
    for (; *s; s++)
        sb_putc(b, *s);
}

/* Appends with whitespace runs collapsed to one space, none leading or
 * trailing. */
static void sb_collapse(sb *b, const char *s)
{
    for (; *s; s++) {
        if (is_ws(*s)) {
            b->pending_space = b->len > 0;
        } else {
            if (b->pending_space)
                sb_putc(b, ' ');
            b->pending_space = false;
            sb_putc(b, *s);
        }
    }
}

static void sb_word_break(sb *b)
{
    b->pending_space = b->len > 0;
}

/* Hands over the text ("" when nothing was added), or NULL when out of memory. */
static char *sb_take(sb *b)
{
    if (b->oom) {
        free(b->p);
        return NULL;
    }
    if (b->p == NULL)
        return strdup("");
    return b->p;
}

const char *twiml_trim(const char *s, size_t *len)
{
    size_t n = strlen(s);
    while (n > 0 && is_ws(*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    *len = n;
    return s;
}

/* ---- 5. bodies ----------------------------------------------------------- */

static int say_flatten(pstate *st, const xmlNode *parent, sb *out)
{
    for (const xmlNode *c = parent->children; c != NULL; c = c->next) {
        if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
            if (c->content)
                sb_collapse(out, nm(c->content));
            continue;
        }
        if (c->type != XML_ELEMENT_NODE)
            continue;   /* comments, processing instructions */
        const char *name = nm(c->name);
        if (!twiml_is_ssml(name)) {
            if (twiml_warn(st, c, "<%.*s%s> is not valid inside <Say>; skipped", ECHO(name)) < 0)
                return -1;
            continue;
        }
        /* Every SSML tag is a word break: the SDK generators write SSML
         * children back to back ("Hello<break/><emphasis>…"), and without the
         * break the words either side would run together. */
        sb_word_break(out);
        xmlChar *alias = strcmp(name, "sub") == 0 ? xmlGetNoNsProp(c, BAD_CAST "alias") : NULL;
        if (alias != NULL) {
            sb_collapse(out, nm(alias));
            xmlFree(alias);
        } else if (say_flatten(st, c, out) < 0) {   /* depth is capped before we get here */
            return -1;
        }
        sb_word_break(out);
    }
    return 0;
}

/* Direct text of el, trimmed; NULL in *url when empty. Element children are
 * not part of a URL: warned about and skipped. */
static int body_url(pstate *st, const xmlNode *el, const char *verb, char **url)
{
    sb b = {0};
    for (const xmlNode *c = el->children; c != NULL; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
            sb_raw(&b, nm(c->content));
        } else if (c->type == XML_ELEMENT_NODE) {
            if (twiml_warn(st, c, "<%.*s%s> is not allowed inside <%s>; skipped",
                     ECHO(nm(c->name)), verb) < 0) {
                free(b.p);
                return -1;
            }
        }
    }
    if (b.oom) {
        free(b.p);
        return twiml_nomem(st);
    }
    size_t n;
    const char *s = twiml_trim(b.p ? b.p : "", &n);
    *url = NULL;
    int rc = 0;
    if (n > 0 && (*url = strndup(s, n)) == NULL)
        rc = twiml_nomem(st);
    free(b.p);
    return rc;
}

/* Verbs that take no element children (Pause, Hangup, Reject, Record). */
static int no_children(pstate *st, const xmlNode *el, const verb_spec *vs)
{
    for (const xmlNode *c = el->children; c != NULL; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        /* twilio-python's main-branch generator nests <Parameter> in <Hangup>
         * (SIP headers); valid, and nothing for Kaphila to do with it. */
        if (vs->kind == TV_HANGUP && strcmp(nm(c->name), "Parameter") == 0)
            continue;
        if (twiml_warn(st, c, "<%.*s%s> is not allowed inside <%s>; skipped",
                 ECHO(nm(c->name)), vs->name) < 0)
            return -1;
    }
    return 0;
}

static int parse_list(pstate *st, const xmlNode *parent, bool in_gather,
                      twiml_verb **arr, size_t *n);

/* Fills v from el. *keep false = the verb was skipped (already warned). */
static int parse_verb(pstate *st, const xmlNode *el, const verb_spec *vs, bool in_gather,
                      twiml_verb *v, bool *keep)
{
    *keep = true;
    v->kind = vs->kind;
    v->line = node_line(el);
    twiml_verb_defaults(v);
    if ((v->name = strdup(vs->name)) == NULL)
        return twiml_nomem(st);
    if (vs->kind == TV_UNSUPPORTED)
        return 0;   /* the executor reports it; its contents don't matter */
    if (twiml_apply_attrs(st, el, vs, v) < 0)
        return -1;
    /* The executor warns about a silence timeout only when one was asked
     * for: Twilio's default applies to every <Record> otherwise. */
    if (vs->kind == TV_RECORD)
        v->u.record.timeout_given = xmlHasNsProp(el, BAD_CAST "timeout", NULL) != NULL;

    switch (vs->kind) {
    case TV_SAY: {
        sb b = {0};
        if (say_flatten(st, el, &b) < 0) {
            free(b.p);
            return -1;
        }
        if ((v->u.say.text = sb_take(&b)) == NULL)
            return twiml_nomem(st);
        return 0;
    }
    case TV_PLAY:
        if (in_gather && v->u.play.digits != NULL) {
            free(v->u.play.digits);
            v->u.play.digits = NULL;
            if (twiml_warn(st, el,
                           "'digits' is not allowed on <Play> inside <Gather>; ignored") < 0)
                return -1;
        }
        if (body_url(st, el, vs->name, &v->u.play.url) < 0)
            return -1;
        if (v->u.play.url == NULL && v->u.play.digits == NULL) {
            *keep = false;
            return twiml_warn(st, el, "<Play> has neither a URL nor digits; skipped");
        }
        return 0;
    case TV_REDIRECT:
        if (body_url(st, el, vs->name, &v->u.redirect.url) < 0)
            return -1;
        if (v->u.redirect.url == NULL) {
            *keep = false;
            return twiml_warn(st, el, "<Redirect> has no URL; skipped");
        }
        return 0;
    case TV_GATHER:
        return parse_list(st, el, true, &v->u.gather.children, &v->u.gather.n_children);
    case TV_RECORD:
        if (v->u.record.finish_on_key == NULL &&
            (v->u.record.finish_on_key = strdup(TWIML_RECORD_FINISH_DEFAULT)) == NULL)
            return twiml_nomem(st);
        return no_children(st, el, vs);
    case TV_PAUSE:
    case TV_HANGUP:
    case TV_REJECT:
        return no_children(st, el, vs);
    case TV_UNSUPPORTED:
        break;
    }
    return 0;
}

/* The verbs under <Response> or <Gather>. Text and comments between verbs
 * are ignored without a warning, as Twilio does. */
static int parse_list(pstate *st, const xmlNode *parent, bool in_gather,
                      twiml_verb **arr, size_t *n)
{
    size_t alloc = 0;
    for (const xmlNode *c = parent->children; c != NULL; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        const char *name = nm(c->name);
        const verb_spec *vs = twiml_find_verb(name);
        if (vs == NULL) {
            if (twiml_warn(st, c, "'%.*s%s' is not a valid TwiML verb (names are "
                     "case-sensitive); skipped", ECHO(name)) < 0)
                return -1;
            continue;
        }
        if (in_gather && vs->kind != TV_SAY && vs->kind != TV_PLAY && vs->kind != TV_PAUSE) {
            if (twiml_warn(st, c, "<%s> is not allowed inside <Gather> (only Say, Play "
                     "and Pause are); skipped", vs->name) < 0)
                return -1;
            continue;
        }
        if (st->n_verbs >= st->lim->max_verbs)
            return fatal(st, ERR_NOT_WELL_FORMED, "line %d: more than %zu verbs, "
                         "over the TwiML verb cap", node_line(c), st->lim->max_verbs);
        st->n_verbs++;
        if (*n == alloc) {
            size_t na = alloc ? alloc * 2 : 8;
            twiml_verb *p = realloc(*arr, na * sizeof *p);
            if (p == NULL)
                return twiml_nomem(st);
            *arr = p;
            alloc = na;
        }
        /* Written in place so that whatever it owns is freed with the list,
         * even when parsing it fails half way. */
        twiml_verb *v = &(*arr)[*n];
        memset(v, 0, sizeof *v);
        (*n)++;
        bool keep;
        if (parse_verb(st, c, vs, in_gather, v, &keep) < 0)
            return -1;
        if (!keep) {
            twiml_verb_fini(v);
            (*n)--;
        }
    }
    return 0;
}

/* ---- 6. libxml2 glue ----------------------------------------------------- */

/* What the libxml2 callbacks report back; reached through ctxt->_private,
 * the field libxml2 reserves for its user. */
typedef struct xml_guard {
    bool doctype;
    int  doctype_line;
    bool have_error;
    int  error_line;
    char error[FATAL_MSG_MAX];
} xml_guard;

/* libxml2 2.9.14 has no xmlCtxtSetErrorHandler, and xmlSetStructuredErrorFunc
 * is process-wide (per thread at best). But __xmlRaiseError prefers the
 * parser context's own ctxt->sax->serror for every parser-domain error, and
 * ctxt->sax is a private copy made by xmlCreateMemoryParserCtxt. Setting it
 * there captures the errors of this parse only and keeps them off stderr.
 * The errors that bypass the context (encoding converters) cannot happen:
 * see check_encoding and XML_PARSE_IGNORE_ENC. */
static void on_xml_error(void *user, xmlErrorPtr e)
{
    xmlParserCtxtPtr ctxt = user;   /* ctxt->userData, which is ctxt itself */
    xml_guard *g = ctxt->_private;
    /* Warnings (level 1) don't make a document ill-formed; the first error
     * is the one that explains the rest. */
    if (g->have_error || e == NULL || e->level < XML_ERR_ERROR)
        return;
    g->have_error = true;
    g->error_line = e->line;
    snprintf(g->error, sizeof g->error, "%s", e->message ? e->message : "not well-formed");
    /* libxml2's messages end in "\n" and some span lines: fold to one. */
    sb b = {0};
    sb_collapse(&b, g->error);
    if (!b.oom && b.p)
        snprintf(g->error, sizeof g->error, "%s", b.p);
    free(b.p);
}

/* Called when the parser meets <!DOCTYPE …>, before any internal subset is
 * read: refusing here means entity declarations (billion laughs, external
 * entities) are never even parsed. TwiML has no DTD, so nothing is lost. */
static void on_doctype(void *user, const xmlChar *name, const xmlChar *ext, const xmlChar *sys)
{
    (void)name;
    (void)ext;
    (void)sys;
    xmlParserCtxtPtr ctxt = user;
    xml_guard *g = ctxt->_private;
    g->doctype = true;
    g->doctype_line = ctxt->input != NULL ? ctxt->input->line : 0;
    xmlStopParser(ctxt);
}

/* The document is read as UTF-8 whatever its declaration says (IGNORE_ENC):
 * libxml2 2.9.14 reports iconv conversion failures on the global error
 * channel, i.e. stderr, which a per-context handler cannot catch. TwiML is
 * UTF-8 in practice (every SDK generator writes encoding="UTF-8"). Byte
 * patterns that make libxml2 switch encodings by itself (UTF-16/32 BOMs,
 * EBCDIC) are refused here for the same reason. */
static int check_encoding(pstate *st, const char *xml, size_t len)
{
    if (len < 2)
        return 0;
    xmlCharEncoding enc = xmlDetectCharEncoding((const unsigned char *)xml,
                                                len < 4 ? (int)len : 4);
    if (enc == XML_CHAR_ENCODING_NONE || enc == XML_CHAR_ENCODING_UTF8)
        return 0;
    const char *ename = xmlGetCharEncodingName(enc);
    return fatal(st, ERR_NOT_WELL_FORMED, "line 1: TwiML must be UTF-8; the document "
                 "looks like %s", ename ? ename : "another encoding");
}

/* Deepest element nesting, walked without recursion so that the check
 * itself costs no stack; <Response> is depth 1. */
static int check_depth(pstate *st, const xmlNode *root)
{
    const xmlNode *n = root;
    int depth = 1;
    for (;;) {
        if (n->type == XML_ELEMENT_NODE && depth > st->lim->max_depth)
            return fatal(st, ERR_NOT_WELL_FORMED, "line %d: elements nest deeper than "
                         "the TwiML cap of %d levels", node_line(n), st->lim->max_depth);
        if (n->type == XML_ELEMENT_NODE && n->children != NULL) {
            n = n->children;
            depth++;
            continue;
        }
        while (n != root && n->next == NULL) {
            n = n->parent;
            depth--;
        }
        if (n == root)
            return 0;
        n = n->next;
    }
}

/* The only static that changes, and only once: in 2.9 xmlInitParser must not
 * race with itself or with a parse, and twiml_parse may be called first from
 * any thread. main need not call xmlInitParser (doing so too is harmless). */
static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init(void)
{
    xmlInitParser();
}

/* Never: NOENT (entity substitution), DTDLOAD/DTDATTR (fetching DTDs), HUGE
 * (lifts libxml2's own limits). NOBLANKS is left off too: whitespace-only
 * text between SSML children is part of what <Say> speaks. */
#define XML_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_IGNORE_ENC | \
                     XML_PARSE_BIG_LINES | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)

/* ---- 7. entry points ----------------------------------------------------- */

void twiml_limits_default(twiml_limits *l)
{
    l->max_bytes = 65536;   /* a TwiML document is a page of verbs, not a file */
    l->max_depth = 16;      /* Response > Gather > Say > SSML leaves lots of room */
    l->max_verbs = 1000;
}

const char *twiml_method_name(twiml_method m)
{
    return m == TM_GET ? "GET" : "POST";
}

void twiml_doc_destroy(twiml_doc *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n_verbs; i++)
        twiml_verb_fini(&d->verbs[i]);
    free(d->verbs);
    for (size_t i = 0; i < d->n_warnings; i++)
        free(d->warnings[i].message);
    free(d->warnings);
    free(d);
}

/* Everything after the bytes reached libxml2: root, caps, verbs. */
static int build(pstate *st, xmlDocPtr xdoc)
{
    const xmlNode *root = xmlDocGetRootElement(xdoc);
    if (root == NULL)
        return fatal(st, ERR_NOT_WELL_FORMED, "line 1: document has no root element");
    if (strcmp(nm(root->name), "Response") != 0)
        return fatal(st, ERR_BAD_ROOT, "line %d: the root element is <%.*s%s>; TwiML "
                     "must start with <Response>", node_line(root), ECHO(nm(root->name)));
    if (check_depth(st, root) < 0)
        return -1;
    for (const xmlAttr *a = root->properties; a != NULL; a = a->next)
        if (twiml_warn(st, root, "'%.*s%s' is not a valid attribute of <Response>; ignored",
                 ECHO(nm(a->name))) < 0)
            return -1;
    return parse_list(st, root, false, &st->doc->verbs, &st->doc->n_verbs);
}

twiml_doc *twiml_parse(const char *xml, size_t len, const twiml_limits *lim,
                       int *err_code, char *err, size_t errlen)
{
    twiml_limits defaults;
    if (lim == NULL) {
        twiml_limits_default(&defaults);
        lim = &defaults;
    }
    pstate st = { .lim = lim, .code = ERR_NOT_WELL_FORMED };
    xml_guard guard = {0};
    xmlParserCtxtPtr ctxt = NULL;
    xmlDocPtr xdoc = NULL;
    int rc = -1;

    pthread_once(&xml_once, xml_init);
    if ((st.doc = calloc(1, sizeof *st.doc)) == NULL) {
        twiml_nomem(&st);
        goto out;
    }
    if (len > lim->max_bytes || len > INT_MAX) {
        fatal(&st, ERR_NOT_WELL_FORMED, "document is %zu bytes, over the TwiML size "
              "cap of %zu", len, lim->max_bytes);
        goto out;
    }
    if (xml == NULL || len == 0) {
        fatal(&st, ERR_NOT_WELL_FORMED, "line 1: document is empty");
        goto out;
    }
    if (check_encoding(&st, xml, len) < 0)
        goto out;
    /* Whitespace before "<?xml" is left to libxml2, which refuses it (12100)
     * exactly as Twilio does: accepting it here would hide a bug that
     * production rejects. Whitespace before a bare <Response> is fine in XML
     * and in both. */
    if ((ctxt = xmlCreateMemoryParserCtxt(xml, (int)len)) == NULL) {
        twiml_nomem(&st);
        goto out;
    }
    xmlCtxtUseOptions(ctxt, XML_OPTIONS);
    /* After xmlCtxtUseOptions, which rewrites some sax fields. */
    ctxt->_private = &guard;
    ctxt->sax->serror = on_xml_error;
    ctxt->sax->internalSubset = on_doctype;
    xmlParseDocument(ctxt);
    xdoc = ctxt->myDoc;
    ctxt->myDoc = NULL;   /* ours now, freed below */
    if (guard.doctype) {
        fatal(&st, ERR_NOT_WELL_FORMED, "line %d: DOCTYPE declarations are not allowed "
              "in TwiML", guard.doctype_line);
        goto out;
    }
    if (guard.have_error || !ctxt->wellFormed || !ctxt->nsWellFormed || xdoc == NULL) {
        fatal(&st, ERR_NOT_WELL_FORMED, "line %d: %s", guard.error_line,
              guard.have_error ? guard.error : "document is not well-formed");
        goto out;
    }
    rc = build(&st, xdoc);

out:
    xmlFreeDoc(xdoc);
    xmlFreeParserCtxt(ctxt);
    if (rc == 0)
        return st.doc;
    twiml_doc_destroy(st.doc);
    if (err_code != NULL)
        *err_code = st.code;
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, "%s", st.msg);
        utf8_sanitize(err);
    }
    return NULL;
}

