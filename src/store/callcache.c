/* callcache.c — sharded LRU of rendered Call bodies.
 *
 * Map: the entry and shard structs; hashing; create/destroy; the reader side
 * (get, put); the writer side (write, writes_done); stats. The coherence
 * protocol and why it is correct are in include/store/callcache.h.
 *
 * A shard is a mutex, a chained hash table sized for its share of the cap
 * (load factor at most 1), an LRU list, a generation counter and the number
 * of writes in flight. Each entry is one allocation: the header plus the body.
 * A hit copies the body out under the shard lock (a malloc and ~2 KB memcpy),
 * so an entry is never used after its lock is released and needs no
 * reference count. */
#include "store/callcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/sid.h"

typedef struct entry {
    struct entry *chain;             /* next in the hash bucket */
    struct entry *prev, *next;       /* LRU list, most recent at head */
    uint64_t      hash;
    char          sid[SID_SIZE];
    char          account_sid[SID_SIZE];
    size_t        len;
    char          body[];
} entry;

typedef struct shard {
    pthread_mutex_t lock;
    entry   **buckets;
    size_t    mask;                  /* buckets - 1 (a power of two) */
    entry    *head, *tail;
    size_t    n, cap;
    uint64_t  gen;                   /* bumped by every write and every release */
    uint64_t  in_flight;             /* writes whose transaction has not ended */
    uint64_t  hits, misses;
    /* Shards sit in one array; keep each lock on its own cache line. */
    char      pad[64];
} shard;

struct callcache {
    size_t nshards;                  /* a power of two, <= CALLCACHE_MAX_SHARDS */
    shard  shards[];
};

/* FNV-1a over the SID's bytes, then a 64-bit finaliser (MurmurHash3's
 * fmix64): FNV alone hardly moves its top bits for the last characters, and
 * the high bits pick the shard, the low bits the bucket. */
static uint64_t hash_sid(const char *sid)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *sid; sid++) h = (h ^ (unsigned char)*sid) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static size_t shard_index(const callcache *cc, uint64_t h)
{
    return (size_t)(h >> 58) & (cc->nshards - 1);
}

static shard *shard_of(callcache *cc, uint64_t h)
{
    return &cc->shards[shard_index(cc, h)];
}

callcache *callcache_create(size_t max_entries)
{
    size_t n = 1;
    callcache *cc;
    if (max_entries == 0) return NULL;
    /* Shards of at least CALLCACHE_MIN_SHARD_ENTRIES, so that a small cache
     * still evicts by recency rather than by which shard a SID hashes to. */
    while (n * 2 <= CALLCACHE_MAX_SHARDS && n * 2 * CALLCACHE_MIN_SHARD_ENTRIES <= max_entries)
        n *= 2;
    cc = calloc(1, sizeof *cc + n * sizeof(shard));
    if (!cc) return NULL;
    cc->nshards = n;
    for (size_t i = 0; i < n; i++) {
        shard *s = &cc->shards[i];
        size_t b = 1;
        /* The cap divided as evenly as it goes: the shards add up to it. */
        s->cap = max_entries / n + (i < max_entries % n);
        while (b < s->cap) b *= 2;
        s->mask = b - 1;
        s->buckets = calloc(b, sizeof *s->buckets);
        pthread_mutex_init(&s->lock, NULL);
        if (!s->buckets) {
            cc->nshards = i + 1;
            callcache_destroy(cc);
            return NULL;
        }
    }
    return cc;
}

void callcache_destroy(callcache *cc)
{
    if (!cc) return;
    for (size_t i = 0; i < cc->nshards; i++) {
        shard *s = &cc->shards[i];
        for (entry *e = s->head, *next; e; e = next) {
            next = e->next;
            free(e);
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(cc);
}

/* ---- shard internals (caller holds the shard lock) ---- */

static entry **find_slot(shard *s, uint64_t h, const char *sid)
{
    entry **p = &s->buckets[h & s->mask];
    while (*p && ((*p)->hash != h || strcmp((*p)->sid, sid) != 0)) p = &(*p)->chain;
    return p;
}

static void lru_unlink(shard *s, entry *e)
{
    if (e->prev) e->prev->next = e->next; else s->head = e->next;
    if (e->next) e->next->prev = e->prev; else s->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_head(shard *s, entry *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head) s->head->prev = e; else s->tail = e;
    s->head = e;
}

static void remove_at(shard *s, entry **slot)
{
    entry *e = *slot;
    *slot = e->chain;
    lru_unlink(s, e);
    s->n--;
    free(e);
}

/* ---- readers ---- */

bool callcache_get(callcache *cc, const char *sid, const char *account_sid, char **body,
                   size_t *len, callcache_ticket *ticket)
{
    uint64_t h;
    shard *s;
    entry *e;
    char *copy = NULL;
    *ticket = 0;
    *body = NULL;
    if (!cc) return false;
    h = hash_sid(sid);
    s = shard_of(cc, h);
    pthread_mutex_lock(&s->lock);
    e = *find_slot(s, h, sid);
    /* Another account's call is a miss: the database answers it (404). */
    if (e && strcmp(e->account_sid, account_sid) == 0 && (copy = malloc(e->len))) {
        memcpy(copy, e->body, e->len);
        *len = e->len;
        if (s->head != e) {
            lru_unlink(s, e);
            lru_push_head(s, e);
        }
        s->hits++;
    } else {
        *ticket = s->gen;
        s->misses++;
    }
    pthread_mutex_unlock(&s->lock);
    *body = copy;
    return copy != NULL;
}

bool callcache_put(callcache *cc, callcache_ticket ticket, const char *sid,
                   const char *account_sid, const char *body, size_t len)
{
    uint64_t h;
    shard *s;
    entry *e, **slot;
    bool stored = false;
    if (!cc || len > CALLCACHE_MAX_BODY || strlen(sid) >= SID_SIZE ||
        strlen(account_sid) >= SID_SIZE)
        return false;
    h = hash_sid(sid);
    s = shard_of(cc, h);
    /* Allocated and filled before taking the lock; freed if refused. */
    e = malloc(sizeof *e + len);
    if (!e) return false;
    memset(e, 0, sizeof *e);
    e->hash = h;
    strcpy(e->sid, sid);
    strcpy(e->account_sid, account_sid);
    e->len = len;
    memcpy(e->body, body, len);

    pthread_mutex_lock(&s->lock);
    if (s->gen == ticket && s->in_flight == 0) {
        slot = find_slot(s, h, sid);
        if (*slot) remove_at(s, slot);          /* a racing reader put it first */
        while (s->n >= s->cap && s->tail) {
            entry *old = s->tail;
            remove_at(s, find_slot(s, old->hash, old->sid));
        }
        e->chain = s->buckets[h & s->mask];
        s->buckets[h & s->mask] = e;
        lru_push_head(s, e);
        s->n++;
        stored = true;
    }
    pthread_mutex_unlock(&s->lock);
    if (!stored) free(e);
    return stored;
}

/* ---- writers ---- */

void callcache_writes_init(callcache_writes *w)
{
    memset(w, 0, sizeof *w);
}

void callcache_write(callcache *cc, callcache_writes *w, const char *sid)
{
    uint64_t h;
    size_t i;
    shard *s;
    entry **slot;
    if (!cc) return;
    h = hash_sid(sid);
    i = shard_index(cc, h);
    s = &cc->shards[i];
    pthread_mutex_lock(&s->lock);
    slot = find_slot(s, h, sid);
    if (*slot) remove_at(s, slot);
    s->in_flight++;
    s->gen++;
    pthread_mutex_unlock(&s->lock);
    w->in_flight[i]++;
    w->any = true;
}

void callcache_writes_done(callcache *cc, callcache_writes *w)
{
    if (!cc || !w->any) return;
    for (size_t i = 0; i < cc->nshards; i++) {
        shard *s = &cc->shards[i];
        if (!w->in_flight[i]) continue;
        pthread_mutex_lock(&s->lock);
        s->in_flight -= w->in_flight[i];
        s->gen++;
        pthread_mutex_unlock(&s->lock);
        w->in_flight[i] = 0;
    }
    w->any = false;
}

void callcache_get_stats(callcache *cc, callcache_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!cc) return;
    for (size_t i = 0; i < cc->nshards; i++) {
        shard *s = &cc->shards[i];
        pthread_mutex_lock(&s->lock);
        out->hits += s->hits;
        out->misses += s->misses;
        out->entries += s->n;
        pthread_mutex_unlock(&s->lock);
    }
}
