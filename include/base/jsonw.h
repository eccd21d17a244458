/* jsonw — json_dumps(j, JSON_COMPACT), byte for byte, without jansson's
 * per-token callbacks and per-character UTF-8 walk.
 *
 * twigate dumps small objects on every hot path (a call's params on each
 * row write, each event-log entry, each /makecall body, each checkpoint):
 * jansson's dump was ~10 % of the engine's CPU per create. This writer
 * covers what those hold — objects, arrays, ASCII strings, integers, true,
 * false, null — and hands anything else (a real, a non-ASCII string, nesting
 * deeper than JSONW_MAX_DEPTH) to json_dumps itself, so the result is always
 * json_dumps's. Any thread; pure. */
#ifndef TWIGATE_JSONW_H
#define TWIGATE_JSONW_H

#include <jansson.h>

#define JSONW_MAX_DEPTH 32

/* As json_dumps(j, JSON_COMPACT): a new string for free(), or NULL (j not an
 * object or array, or out of memory). */
char *jsonw_dumps(const json_t *j);

/* The one escape table of twigate's JSON writers (jsonw_dumps and the Call
 * renderer, calljson.c), as jansson's dump_string writes it without flags:
 * '"' and '\\' escaped, \b \f \n \r \t by name, the other control bytes
 * (NUL included) as \u00XX in upper-case hex; '/' and DEL as they are. */
#define JSONW_NEEDS_ESCAPE(ch) ((ch) < 0x20 || (ch) == '"' || (ch) == '\\')
/* The escape of an ASCII byte that needs one: a constant or buf, *len its
 * length; NULL for a byte that needs none. Any thread; pure. */
const char *jsonw_escape(unsigned char ch, char buf[6], size_t *len);

#endif
