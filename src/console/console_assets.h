/* console_assets — the console's static files, compiled in at build time by
 * tools/mkassets.c into build/gen/console_assets.c (not committed). Read-only
 * data; any thread. */
#ifndef TWIGATE_CONSOLE_ASSETS_H
#define TWIGATE_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct console_asset {
    const char          *name;    /* file name, e.g. "app.js"; NULL ends the table */
    const char          *type;    /* Content-Type */
    const unsigned char *data;
    size_t               len;
    const char          *etag;    /* strong, quoted */
} console_asset;

extern const console_asset console_assets[];

#endif
