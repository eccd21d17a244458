/* config_file.c — the config file parser (see config.c for the map of the config files). */
#include "config_int.h"
#include "net/connguard.h"
#include "sim/sim.h"
#include "base/timefmt.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- the file format -------------------------------------------------- */

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* A section is known when some key lives under it, or it is account.<name>. */
static bool section_known(const char *s)
{
    if (strncmp(s, ACCOUNT_PREFIX, ACCOUNT_PREFIX_LEN) == 0)
        return config_valid_account_name(s + ACCOUNT_PREFIX_LEN, strlen(s + ACCOUNT_PREFIX_LEN));
    size_t n = strlen(s);
    for (size_t i = 0; i < config_n_keys; i++)
        if (strncmp(config_keys[i].name, s, n) == 0 && config_keys[i].name[n] == '.')
            return true;
    return false;
}

/* A line must be UTF-8 without NULs or control characters (tab is whitespace). */
static int check_line_bytes(const char *line, size_t len, char *why, size_t whylen)
{
    if (memchr(line, '\0', len) != NULL) {
        config_fail(why, whylen, "line contains a NUL byte");
        return -1;
    }
    const char *bad_utf8 = config_utf8_problem((const unsigned char *)line, len);
    if (bad_utf8 != NULL) {
        config_fail(why, whylen, "line is %s", bad_utf8);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7F) {
            config_fail(why, whylen, "line contains control character 0x%02x", ch);
            return -1;
        }
    }
    return 0;
}

/* "[name]" from p (at the '[') to end: checks it and makes it the current section. */
static int parse_section(const char *p, const char *end, char section[KEY_MAX],
                         char *why, size_t whylen)
{
    const char *close = memchr(p, ']', (size_t)(end - p));
    if (close == NULL) {
        config_fail(why, whylen, "section header without ']'");
        return -1;
    }
    const char *rest = close + 1;
    while (rest < end && is_ws(*rest))
        rest++;
    if (rest < end && *rest != '#' && *rest != ';') {
        config_fail(why, whylen, "unexpected text after ']'");
        return -1;
    }
    const char *s = p + 1, *e = close;
    while (s < e && is_ws(*s))
        s++;
    while (e > s && is_ws(e[-1]))
        e--;
    size_t n = (size_t)(e - s);
    bool chars_ok = n > 0 && n < KEY_MAX;
    for (size_t i = 0; chars_ok && i < n; i++)
        chars_ok = config_is_key_char(s[i]);
    if (!chars_ok) {
        config_fail(why, whylen, "bad section header '[%.*s]' (lower-case [a-z0-9_.-])",
                    (int)(close - p - 1), p + 1);
        return -1;
    }
    char name[KEY_MAX];
    memcpy(name, s, n);
    name[n] = '\0';
    if (!section_known(name)) {
        config_fail(why, whylen, "unknown section [%s]", name);
        return -1;
    }
    memcpy(section, name, n + 1);
    return 0;
}

/* "key =" at *pp: writes section.key to key and leaves *pp after the '='. */
static int parse_key(const char **pp, const char *end, const char *section, char key[KEY_MAX],
                     char *why, size_t whylen)
{
    const char *p = *pp;
    const char *k = p;
    while (p < end && !is_ws(*p) && *p != '=')
        p++;
    size_t klen = (size_t)(p - k);
    while (p < end && is_ws(*p))
        p++;
    if (p == end || *p != '=') {
        config_fail(why, whylen, "expected 'key = value'");
        return -1;
    }
    p++;

    size_t slen = strlen(section);
    if (slen + 1 + klen >= KEY_MAX) {
        config_fail(why, whylen, "key '%.*s' is too long", (int)klen, k);
        return -1;
    }
    for (size_t i = 0; i < klen; i++) {
        if (!config_is_key_char(k[i])) {
            config_fail(why, whylen, "unknown key '%.*s%s%.*s'", (int)slen, section,
                        slen ? "." : "", (int)klen, k);
            return -1;
        }
    }
    size_t o = 0;
    if (slen > 0) {
        memcpy(key, section, slen);
        key[slen] = '.';
        o = slen + 1;
    }
    memcpy(key + o, k, klen);
    key[o + klen] = '\0';
    *pp = p;
    return 0;
}

/* A "quoted value" from p (after the opening quote) into value; only \" and
 * \\ are escapes, and only a comment may follow the closing quote. */
static int read_quoted(const char *p, const char *end, const char *key, char *value,
                       size_t *vlen, char *why, size_t whylen)
{
    size_t n = 0;
    for (;;) {
        if (p == end) {
            config_fail(why, whylen, "%s: missing closing quote", key);
            return -1;
        }
        if (*p == '"')
            break;
        if (*p == '\\') {
            p++;
            if (p == end || (*p != '"' && *p != '\\')) {
                config_fail(why, whylen, "%s: only \\\" and \\\\ may be escaped in a quoted value", key);
                return -1;
            }
        }
        value[n++] = *p++;
    }
    p++;
    while (p < end && is_ws(*p))
        p++;
    if (p < end && *p != '#' && *p != ';') {
        config_fail(why, whylen, "%s: unexpected text after the closing quote", key);
        return -1;
    }
    *vlen = n;
    return 0;
}

/* A bare value: a '#' at the start of the value or after whitespace opens a
 * trailing comment; quote the value to keep one. */
static size_t read_bare(const char *p, const char *end, char *value)
{
    const char *v = p, *stop = end;
    for (const char *q = p; q < end; q++) {
        if (*q == '#' && (q == v || is_ws(q[-1]))) {
            stop = q;
            break;
        }
    }
    while (stop > v && is_ws(stop[-1]))
        stop--;
    size_t vlen = (size_t)(stop - v);
    memcpy(value, v, vlen);
    return vlen;
}

/* The value from p to end, unquoted, applied to key through config_set_value. */
static int parse_value(config *c, const char *key, const char *p, const char *end,
                       char *why, size_t whylen)
{
    while (p < end && is_ws(*p))
        p++;
    /* The value is never longer than the rest of the line. */
    char *value = malloc((size_t)(end - p) + 1);
    if (value == NULL) {
        config_fail(why, whylen, "%s: out of memory", key);
        return -1;
    }
    int rc = -1;
    size_t vlen = 0;
    if (p < end && *p == '"') {
        if (read_quoted(p + 1, end, key, value, &vlen, why, whylen) != 0)
            goto out;
    } else {
        vlen = read_bare(p, end, value);
    }
    value[vlen] = '\0';
    if (strlen(value) != vlen) {
        config_fail(why, whylen, "%s: value contains a NUL byte", key);
        goto out;
    }
    rc = config_set_value(c, key, value, why, whylen);
out:
    free(value);
    return rc;
}

/* Parses one line (without its newline) and applies it. section is the
 * current [section] (empty at the top) and is updated by headers. Returns 0,
 * or -1 with the reason (no location) in why. */
static int parse_line(config *c, const char *line, size_t len, char section[KEY_MAX],
                      char *why, size_t whylen)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (check_line_bytes(line, len, why, whylen) != 0)
        return -1;

    const char *p = line, *end = line + len;
    while (p < end && is_ws(*p))
        p++;
    if (p == end || *p == '#' || *p == ';')
        return 0;
    if (*p == '[')
        return parse_section(p, end, section, why, whylen);

    char key[KEY_MAX];
    if (parse_key(&p, end, section, key, why, whylen) != 0)
        return -1;
    return parse_value(c, key, p, end, why, whylen);
}

int config_load_string(config *c, const char *text, size_t len, const char *name,
                       char *err, size_t errlen)
{
    if (name == NULL)
        name = "<string>";
    if (len > CONFIG_MAX_FILE_BYTES) {
        config_fail(err, errlen, "%s: larger than %d bytes", name, CONFIG_MAX_FILE_BYTES);
        return -1;
    }
    /* A UTF-8 byte-order mark is legal at the start of a UTF-8 file. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }
    char section[KEY_MAX] = "";
    const char *p = text, *end = text + len;
    int line_no = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        line_no++;
        char why[512];
        if (parse_line(c, p, n, section, why, sizeof why) != 0) {
            config_fail(err, errlen, "%s:%d: %s", name, line_no, why);
            return -1;
        }
        p += n + (nl != NULL);
    }
    return 0;
}

int config_load_file(config *c, const char *path, char *err, size_t errlen)
{
    int rc = -1;
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        config_fail(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    /* Read one byte past the cap so an oversized file is detected. */
    text = malloc(CONFIG_MAX_FILE_BYTES + 1);
    if (text == NULL) {
        config_fail(err, errlen, "%s: out of memory", path);
        goto out;
    }
    errno = 0;
    size_t n = fread(text, 1, CONFIG_MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        /* A directory opens fine and fails here with EISDIR. */
        config_fail(err, errlen, "%s: %s", path, errno != 0 ? strerror(errno) : "read error");
        goto out;
    }
    rc = config_load_string(c, text, n, path, err, errlen);
out:
    free(text);
    if (f != NULL)
        fclose(f);
    return rc;
}
