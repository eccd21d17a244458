/* exec_sound — maps a <Play> URL to the name of a sound on the Kaphila
 * server, because Kaphila plays only files it already has (POST /play
 * {file}) and cannot fetch a URL (docs/twiml.md, "<Play>").
 *
 * The rule, in order:
 *   1. play.sound_map: comma-separated `URL=sound` pairs; the URL must match
 *      exactly (byte for byte, after relative-URL resolution). The pair is
 *      split at its last '=', so URLs with query strings work; a URL with a
 *      comma in it cannot be mapped.
 *   2. otherwise play.sound_prefix + the basename of the URL's path without
 *      its extension: https://x/a/welcome.mp3 → "custom/welcome" with the
 *      prefix "custom/". The basename must be made of [A-Za-z0-9_.-] and
 *      must not start with '.', so a URL can never name a path outside the
 *      prefix on Kaphila's server.
 *
 * Pure; any thread. */
#ifndef TWIGATE_EXEC_SOUND_H
#define TWIGATE_EXEC_SOUND_H

#include <stddef.h>

/* Writes the sound name for url into out (n bytes, NUL-terminated). map and
 * prefix may be NULL (= empty). Returns 0, or -1 when the URL yields no
 * usable name (no basename, characters outside the safe set) or the name
 * does not fit in out. */
int exec_sound_name(const char *map, const char *prefix, const char *url, char *out, size_t n);

#endif
