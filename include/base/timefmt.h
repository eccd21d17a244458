/* timefmt — the two time formats of the Twilio wire.
 *
 * Internally every time is int64 milliseconds since the Unix epoch (UTC).
 * REST JSON and webhook parameters use RFC 2822 with a numeric +0000 zone:
 * "Tue, 31 Aug 2010 20:36:28 +0000". List filters arrive as YYYY-MM-DD or
 * ISO 8601 (YYYY-MM-DDTHH:MM:SSZ, optional fraction and offset); Kaphila's
 * events carry ISO 8601 with milliseconds. Pure functions, any thread. */
#ifndef TWIGATE_TIMEFMT_H
#define TWIGATE_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TIMEFMT_RFC2822_LEN 32   /* "Tue, 31 Aug 2010 20:36:28 +0000" + NUL, with room */

int64_t timefmt_now_ms(void);          /* wall clock, CLOCK_REALTIME */
int64_t timefmt_mono_ms(void);         /* CLOCK_MONOTONIC, for timers */
/* Writes the RFC 2822 form of ms (seconds precision) into out. */
void timefmt_rfc2822(int64_t ms, char out[TIMEFMT_RFC2822_LEN]);
/* Parses ISO 8601 / YYYY-MM-DD / "YYYY-MM-DD HH:MM:SS[.fff]" into ms (UTC; an
 * explicit offset is honoured). *date_only is set when only a date was given,
 * so callers can treat "StartTime=2024-01-02" as the whole day.
 * Returns false on anything else. */
bool timefmt_parse_iso8601(const char *s, int64_t *ms, bool *date_only);
/* Parses the RFC 2822 form produced above (for tests and round trips). */
bool timefmt_parse_rfc2822(const char *s, int64_t *ms);

#endif
