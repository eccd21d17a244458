/* config_int.h — private to src/conf/: the key table's types and the helpers
 * the config files share. Single-threaded like config itself (start-up and
 * reload on the main thread); nothing here is owned beyond what config.h says.
 * The table (config_keys, config_fields) is defined once, in config.c. */
#ifndef TWIGATE_CONFIG_INT_H
#define TWIGATE_CONFIG_INT_H

#include "conf/config.h"

#include <stdbool.h>
#include <stddef.h>

/* The longest legal key is account.<64>.api_key_secret (~88 bytes); anything
 * past this is a typo or garbage, and a fixed buffer keeps the parser simple. */
#define KEY_MAX 128
/* 1024 accounts with every field and a comment each fit in well under 1 MiB;
 * a bigger file is not a config file. */
#define CONFIG_MAX_FILE_BYTES (4 * 1024 * 1024)
/* Twilio's own limit on friendly_name (Twilio's Accounts resource: 64 characters). */
#define FRIENDLY_NAME_MAX 64
/* E.164 numbers have at most 15 digits, so a longer suffix can never match. */
#define OUTCOME_SUFFIX_MAX 15
/* Kaphila's voice names are like en-US-Neural2-A; 64 leaves room for any
 * vendor prefix and stays well under the 256 bytes Kaphila's fields take. */
#define CONFIG_MAX_VOICE_NAME 64

typedef enum { KT_STRING, KT_SECRET, KT_INT, KT_BOOL, KT_TIME } key_type;

/* Extra shape check for a string value; fills why (without the key) on failure. */
typedef bool (*value_check)(const char *v, char *why, size_t whylen);

typedef struct key_def {
    const char *name;
    key_type    type;
    const char *def;        /* default, as it would be written in the file */
    int         min, max;   /* ints only */
    bool        reloadable;
    size_t      offset;     /* of the field in struct config */
    value_check check;
    const char *desc;
} key_def;

typedef struct field_def {
    const char *name;       /* the <field> in account.<name>.<field> */
    key_type    type;
    bool        required;
    size_t      offset;     /* of the field in struct config_account */
    value_check check;
    const char *desc;
} field_def;
#define ACCOUNT_PREFIX "account."
#define ACCOUNT_PREFIX_LEN (sizeof ACCOUNT_PREFIX - 1)
#define ENV_PREFIX "TWIGATE_"
#define ENV_PREFIX_LEN (sizeof ENV_PREFIX - 1)
#define ENV_ACCOUNT "TWIGATE_ACCOUNT_"
#define ENV_ACCOUNT_NEW "TWIGATE_ACCOUNT__"
#define MASK "********"

extern const key_def config_keys[];
extern const size_t config_n_keys;
extern const field_def config_fields[];
extern const size_t config_n_fields;

/* Helpers shared by the config files (defined in config.c unless noted). */
__attribute__((format(printf, 3, 4)))
void config_fail(char *err, size_t errlen, const char *fmt, ...);   /* no-op on NULL/0 */
char **config_str_field(void *base, size_t offset);
/* Replaces a heap string field; false on out-of-memory (field untouched). */
bool config_replace_str(char **slot, const char *v);
bool config_is_hex(const char *s, size_t n);
bool config_sid_shape(const char *v, const char *prefix);
bool config_is_key_char(char ch);
bool config_valid_account_name(const char *s, size_t n);
/* NULL when s (of length n) is valid UTF-8, else a reason. */
const char *config_utf8_problem(const unsigned char *s, size_t n);
int config_control_char(const char *s, size_t n);   /* the first one, or -1 */
size_t config_utf8_chars(const char *s);
const key_def *config_find_key(const char *name);
const field_def *config_find_field(const char *name);
size_t config_edit_distance(const char *a, const char *b);   /* SIZE_MAX if too long */
bool config_http_url_ok(const char *v);   /* http(s)://host... */
void config_unknown_key(const char *key, char *why, size_t whylen);   /* "did you mean" */

/* config_set.c: the one place a key gets a value, whatever the source. */
int config_set_value(config *c, const char *key, const char *value, char *why, size_t whylen);
config_account *config_find_account(config *c, const char *name, size_t n);

#endif
