/* sim_map — a string-keyed hash map (chained, grows by doubling) for the
 * simulator's tables: calls by callId and by CallSid, recordings by callId.
 * Keys are borrowed from the values they map to, so a value must outlive
 * its entries. Loop thread only, like the tables. */
#include "sim_int.h"

#include <stdlib.h>
#include <string.h>

#define MAP_MIN_BUCKETS 64

typedef struct sim_map_ent {
    struct sim_map_ent *next;
    const char         *key;
    void               *v;
} sim_map_ent;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

int sim_map_init(sim_map *m)
{
    m->nb = MAP_MIN_BUCKETS;
    m->n = 0;
    m->b = calloc(m->nb, sizeof *m->b);
    return m->b ? 0 : -1;
}

void sim_map_fini(sim_map *m)
{
    for (size_t i = 0; m->b && i < m->nb; i++) {
        sim_map_ent *e = m->b[i];
        while (e) {
            sim_map_ent *n = e->next;
            free(e);
            e = n;
        }
    }
    free(m->b);
    m->b = NULL;
    m->n = 0;
}

void *sim_map_get(const sim_map *m, const char *key)
{
    for (sim_map_ent *e = m->b[hash_str(key) % m->nb]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e->v;
    return NULL;
}

static void grow(sim_map *m)
{
    size_t nb = m->nb * 2;
    sim_map_ent **b = calloc(nb, sizeof *b);
    if (!b)
        return;   /* keep the longer chains; still correct */
    for (size_t i = 0; i < m->nb; i++) {
        sim_map_ent *e = m->b[i];
        while (e) {
            sim_map_ent *n = e->next;
            size_t j = hash_str(e->key) % nb;
            e->next = b[j];
            b[j] = e;
            e = n;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

int sim_map_put(sim_map *m, const char *key, void *v)
{
    size_t i = hash_str(key) % m->nb;
    for (sim_map_ent *e = m->b[i]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            e->key = key;
            e->v = v;
            return 0;
        }
    }
    sim_map_ent *e = malloc(sizeof *e);
    if (!e)
        return -1;
    e->key = key;
    e->v = v;
    e->next = m->b[i];
    m->b[i] = e;
    if (++m->n > m->nb)
        grow(m);
    return 0;
}

void sim_map_del(sim_map *m, const char *key, const void *v)
{
    sim_map_ent **pp = &m->b[hash_str(key) % m->nb];
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->v == v && strcmp((*pp)->key, key) == 0) {
            sim_map_ent *e = *pp;
            *pp = e->next;
            free(e);
            m->n--;
            return;
        }
    }
}
