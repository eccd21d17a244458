/* fragment — Twilio's webhook connection overrides (contract §10.2).
 *
 * A customer URL may end in "#ct=2000&rt=3000&rc=3&rp=ct,rt,5xx". The fragment
 * is split off (never sent, never signed) and its values clamped to Twilio's
 * ranges; unknown keys (e, sni, …) are ignored. Pure, any thread. */
#ifndef TWIGATE_FRAGMENT_H
#define TWIGATE_FRAGMENT_H

#include <stdbool.h>
#include <stddef.h>

enum {  /* retry-policy bits for rp= */
    FRAG_RP_CT  = 1 << 0,   /* connect failure or connect timeout */
    FRAG_RP_RT  = 1 << 1,   /* read timeout */
    FRAG_RP_4XX = 1 << 2,
    FRAG_RP_5XX = 1 << 3,
    FRAG_RP_ALL = FRAG_RP_CT | FRAG_RP_RT | FRAG_RP_4XX | FRAG_RP_5XX,
};

typedef struct fragment_opts {
    int connect_ms;   /* ct: 100–10000, default 5000 */
    int read_ms;      /* rt: 100–15000, default 15000 */
    int total_ms;     /* tt: 100–15000, default 15000 */
    int retries;      /* rc: 0–5, default 1 */
    int retry_policy; /* rp: FRAG_RP_* bits, default FRAG_RP_CT */
} fragment_opts;

void fragment_defaults(fragment_opts *o);
/* Splits url at '#': writes the part before it to base (size base_size,
 * truncation → false) and parses the overrides into o (defaults first;
 * out-of-range values are clamped). A URL without '#' yields defaults. */
bool fragment_split(const char *url, char *base, size_t base_size, fragment_opts *o);

#endif
