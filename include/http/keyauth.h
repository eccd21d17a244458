/* keyauth — accounts for Kaphila-key users (accounts.kaphila_keys = true;
 * issue 15, docs/security.md §2).
 *
 * Users of Kaphila's SDKs set TWILIO_AUTH_TOKEN to their Kaphila API key and
 * any AC… SID. Basic auth whose password is a key Kaphila's GET /api/me
 * accepts is then an account: the key is its auth token (webhooks are
 * signed with it) and its Kaphila key (its calls are made with it). The
 * account SID is bound to that key on first use, in the store's
 * account_keys table, and stays bound: another key for the same SID is 401.
 *
 * What keeps it from being a key-checking oracle against Kaphila: verdicts
 * of /api/me (positive and negative) are cached by the key's SHA-256, so a
 * repeated wrong password costs Kaphila nothing, and failed attempts are
 * counted per client address: past KEYAUTH_FAIL_LIMIT in
 * KEYAUTH_FAIL_WINDOW_MS the address gets 429 / 20429 without a look-up.
 *
 * Threads:
 *   - keyauth_auth runs on MHD threads (from rest_auth). A key with a fresh
 *     verdict is answered at once. Otherwise the request is suspended and
 *     the engine thread asks /api/me (engine_submit, engine_kaphila_key);
 *     its callback stores the verdict and calls http_redispatch, so the
 *     handler runs again on an MHD thread and finds the verdict. No thread
 *     waits for Kaphila.
 *   - The first successful use of a SID writes its binding to the store
 *     from the MHD thread (one short INSERT per account, ever, like a call
 *     DELETE), under keyauth's lock so two keys cannot both win.
 *   - keyauth_account (the config's account hook) runs on any thread.
 * One mutex guards the bound accounts, the verdict cache and the failure
 * counts; nothing is done under it but table work and that one INSERT.
 *
 * Ownership: keyauth owns every bound account (config_account) until
 * keyauth_destroy; they never change or move once bound, so the pointers it
 * hands out stay valid as long as the keyauth does (the engine keeps them
 * for no longer than a step, like file accounts). */
#ifndef TWIGATE_KEYAUTH_H
#define TWIGATE_KEYAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include "conf/app.h"
#include "conf/config.h"
#include "net/httpd.h"

typedef struct keyauth keyauth;

/* Bound accounts held (and loaded from the store at start). Past it, a new
 * SID is refused (401 with a message saying why): a deployment with more
 * wants accounts in the file. */
#define KEYAUTH_MAX_ACCOUNTS 10000
/* /api/me verdicts kept: a direct-mapped cache, so a flood of random keys
 * evicts only verdicts, never bound accounts. */
#define KEYAUTH_CACHE_SLOTS 4096
/* A key Kaphila accepted is checked again after this long (a key revoked at
 * Kaphila stops working here within it); a refused one is refused from the
 * cache for the shorter time. */
#define KEYAUTH_OK_TTL_MS (5 * 60 * 1000)
#define KEYAUTH_BAD_TTL_MS (60 * 1000)
/* Failed attempts per client address before 429, and the window they are
 * counted in; client slots are direct-mapped too. */
#define KEYAUTH_FAIL_LIMIT 10
#define KEYAUTH_FAIL_WINDOW_MS (60 * 1000)
#define KEYAUTH_CLIENT_SLOTS 4096
/* /api/me look-ups in flight at once; more get 503 with Retry-After. */
#define KEYAUTH_MAX_PENDING 256

/* Loads the bindings from the store. NULL with err filled on failure. */
keyauth *keyauth_create(app *a, char *err, size_t errlen);
void keyauth_destroy(keyauth *k);   /* accepts NULL; after the engine and HTTP stop */

/* Authenticates r for an account SID that is not in the config file. Returns
 * the account, or NULL when it has answered r (401, 429, 503) or suspended
 * it (the request will be dispatched again). MHD threads. */
const config_account *keyauth_auth(keyauth *k, http_req *r, const char *path_account_sid);

/* The bound account of sid, or NULL. Any thread; the config's hook. */
const config_account *keyauth_account(void *k, const char *sid);

#endif
