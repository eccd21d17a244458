/* callcache — rendered JSON bodies of ended calls, for GET .../Calls/{Sid}.json.
 *
 * Polling a call with client.calls(sid).fetch() is the commonest Twilio usage
 * pattern, and a call in a terminal status changes only when it is deleted
 * (or, rarely, when a late write touches its row), so its body can be served
 * without SQLite or jansson. Only the REST fetch puts bodies in; every write
 * to the calls table goes through store.c, which tells the cache (below).
 *
 * Keyed by call SID (exact bytes, as SQLite's `sid = ?` compares); each entry
 * remembers its account, and a lookup by another account misses, so that
 * account gets the same 404 from the database as without the cache. Bounded:
 * at most max_entries bodies, least recently used evicted first, in shards
 * with their own locks so HTTP threads do not serialise.
 *
 * Coherence (the cache never serves a body older than the committed row):
 *   - A writer calls callcache_write before the SQL statement that changes a
 *     row: the SID's entry goes, and its shard counts one write in flight.
 *   - After the transaction ends (commit or rollback; a statement outside a
 *     transaction ends its own), callcache_writes_done releases the shard.
 *   - A reader that misses gets a ticket (the shard's generation) BEFORE it
 *     reads the row, and callcache_put stores the body only if no write was
 *     in flight on the shard when it puts, and none began or ended since the
 *     ticket (every callcache_write and every release bumps the generation).
 * Why that suffices: a put succeeds only if the shard had no write in flight
 * anywhere in [ticket, put] — a write in flight at the ticket would have had
 * to end (bumping the generation) for the put to see none — so no change to
 * the row committed in that interval and the body read then is the committed
 * row at the put. Any later change first removes the entry (callcache_write,
 * before its statement) and blocks puts on the shard until it has committed
 * or rolled back; readers whose ticket predates the release are refused, and
 * later readers read after the commit. The price: a shard takes no new
 * bodies while a write on it is open (the engine's batch is milliseconds).
 *
 * Threads: any; every call is thread-safe. A NULL cache (max_entries 0) is
 * the disabled cache: lookups miss, puts and writes do nothing. */
#ifndef TWIGATE_CALLCACHE_H
#define TWIGATE_CALLCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct callcache callcache;

/* Shards: enough that two to a few dozen HTTP threads rarely meet on a lock;
 * fewer when max_entries is small, each holding at least MIN_SHARD_ENTRIES
 * (the least recently used entry goes first within a shard). */
#define CALLCACHE_MAX_SHARDS 64
#define CALLCACHE_MIN_SHARD_ENTRIES 8
/* A body larger than this is not cached (a Call body is ~2 KB; the bound
 * keeps one odd row from pinning much memory). */
#define CALLCACHE_MAX_BODY 8192

/* NULL when max_entries is 0 (disabled) or out of memory. */
callcache *callcache_create(size_t max_entries);
void       callcache_destroy(callcache *cc);     /* accepts NULL */

/* What a miss hands to callcache_put: the shard's generation at the lookup. */
typedef uint64_t callcache_ticket;

/* On a hit (sid cached for account_sid) returns true with *body a malloc'd
 * copy (the caller owns it) of *len bytes. On a miss returns false and fills
 * *ticket; read the row only after this call. */
bool callcache_get(callcache *cc, const char *sid, const char *account_sid, char **body,
                   size_t *len, callcache_ticket *ticket);
/* Stores a copy of body for sid if the ticket is still good (see above);
 * returns whether it did. Only for calls in a terminal status. */
bool callcache_put(callcache *cc, callcache_ticket ticket, const char *sid,
                   const char *account_sid, const char *body, size_t len);

/* A writer's writes not yet ended: caller storage, one per store connection
 * (a connection is used by one thread at a time). Fields are private. */
typedef struct callcache_writes {
    uint32_t in_flight[CALLCACHE_MAX_SHARDS];
    bool     any;
} callcache_writes;

void callcache_writes_init(callcache_writes *w);
/* Before the statement that inserts, updates or deletes sid's row. */
void callcache_write(callcache *cc, callcache_writes *w, const char *sid);
/* After the transaction holding those writes committed or rolled back. */
void callcache_writes_done(callcache *cc, callcache_writes *w);

typedef struct callcache_stats {
    uint64_t hits, misses;   /* lookups served / not served from the cache */
    uint64_t entries;        /* bodies held now */
} callcache_stats;
void callcache_get_stats(callcache *cc, callcache_stats *out);   /* zeros for NULL */

#endif
