/* netpolicy — where a customer URL may lead: webhook.allow / webhook.deny,
 * the built-in refusal of non-public addresses, and twigate's own listening
 * sockets, compiled once per configuration and judged per connection.
 *
 * A policy is built on the engine thread when the configuration's webhook.*
 * keys change (never per request: parsing, getifaddrs and the listener list
 * happen in netpolicy_create only) and is immutable afterwards. Deliveries
 * hold a reference; the count is plain, not atomic, because every holder
 * lives on the engine's loop thread. netpolicy_check* allocate nothing and
 * resolve nothing: they judge the name and the address libcurl is about to
 * use (docs/security.md §1). */
#ifndef TWIGATE_NETPOLICY_H
#define TWIGATE_NETPOLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct netpolicy netpolicy;

/* One socket twigate listens on (API, built-in simulator, metrics …):
 * a numeric address ("127.0.0.1", "::", "0.0.0.0") and its port. A name
 * that is not numeric counts as a wildcard (every local address). */
typedef struct netpolicy_listener {
    const char *address;
    int         port;
} netpolicy_listener;

/* allow, deny: comma lists of CIDRs, IPs, host names and *.domain (NULL or
 * "" = none); proxy: webhook.proxy ("" = connect directly, and ignore the
 * proxy environment variables). upstream: Kaphila's base URL (NULL = none):
 * its host:port is twigate's own upstream, never a customer's destination,
 * whatever the lists say. gen: the caller's generation number; a
 * newer policy has a larger one (connection caches are keyed by it).
 * NULL on out-of-memory. The reference count starts at 1. */
netpolicy *netpolicy_create(const char *allow, const char *deny, const char *proxy,
                            const netpolicy_listener *listeners, size_t n_listeners,
                            const char *upstream, uint64_t gen);
netpolicy *netpolicy_ref(netpolicy *p);
void       netpolicy_unref(netpolicy *p);   /* accepts NULL */

uint64_t    netpolicy_gen(const netpolicy *p);
const char *netpolicy_proxy(const netpolicy *p);   /* "" = none */
/* True when p was built from these three strings (a reload that left the
 * webhook.* keys alone keeps its policy and its connections). */
bool netpolicy_same(const netpolicy *p, const char *allow, const char *deny, const char *proxy);

/* The verdict on one connection: NULL = allowed, else a static reason for
 * the notification ("loopback address", "listed in webhook.deny" …).
 * host: the URL host of this hop as libcurl sees it (brackets and a final
 * dot are tolerated); addr: the socket address about to be connected, or
 * NULL when only the name can be judged (before resolution, or through a
 * proxy, which resolves itself). */
const char *netpolicy_check(const netpolicy *p, const char *host, const struct sockaddr *addr);

/* The host part of an absolute http(s) URL, copied to out (lower case,
 * without brackets, port, user info or a final dot); false when it does
 * not fit or there is none. No allocation: called once per connection. */
bool netpolicy_url_host(const char *url, char *out, size_t outlen);

#endif
