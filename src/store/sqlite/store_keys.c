/* store_keys.c — the account_keys table (migration 4): the account SID each
 * Kaphila key was bound to on first use, for keyauth.c. Called from the HTTP
 * threads (a bind) and at start-up (the load); rows are never updated. */
#include "sqlite_int.h"

#include <openssl/crypto.h>

store_status sq_account_key_bind(store_conn *c, const char *sid, const char *key,
                                    int64_t now, bool *same)
{
    sqlite3_stmt *st;
    store_status r;
    *same = false;
    st = store_stmt_get(c, "INSERT OR IGNORE INTO account_keys(account_sid, kaphila_key, created)"
                           " VALUES(?1, ?2, ?3)");
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    bind_text(st, 2, key);
    sqlite3_bind_int64(st, 3, now);
    r = store_map_rc_c(c, sqlite3_step(st), "account key bind");
    store_stmt_done(c, st);
    if (r != STORE_OK) return r;
    st = store_stmt_get(c, "SELECT kaphila_key FROM account_keys WHERE account_sid = ?1");
    if (!st) return STORE_ERROR;
    bind_text(st, 1, sid);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        /* Constant time: the stored key is a credential. */
        const char *stored = (const char *)sqlite3_column_text(st, 0);
        *same = stored && strlen(stored) == strlen(key) &&
                CRYPTO_memcmp(stored, key, strlen(key)) == 0;
        r = STORE_OK;
    } else {
        r = rc == SQLITE_DONE ? STORE_ERROR : store_map_rc_c(c, rc, "account key read");
        if (r == STORE_OK) r = STORE_ERROR;
    }
    store_stmt_done(c, st);
    return r;
}

store_status sq_account_key_each(store_conn *c, int max,
        bool (*cb)(const char *sid, const char *key, int64_t created, void *arg), void *arg)
{
    sqlite3_stmt *st = store_stmt_get(c, "SELECT account_sid, kaphila_key, created FROM account_keys"
                                         " ORDER BY rowid LIMIT ?1");
    store_status r = STORE_OK;
    int rc;
    if (!st) return STORE_ERROR;
    sqlite3_bind_int(st, 1, max);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *sid = (const char *)sqlite3_column_text(st, 0);
        const char *key = (const char *)sqlite3_column_text(st, 1);
        if (!sid || !key) continue;
        if (!cb(sid, key, sqlite3_column_int64(st, 2), arg)) { r = STORE_ERROR; break; }
    }
    if (r == STORE_OK && rc != SQLITE_DONE) r = store_map_rc_c(c, rc, "account keys");
    store_stmt_done(c, st);
    return r;
}
