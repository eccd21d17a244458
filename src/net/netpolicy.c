/* netpolicy.c — the destination policy for customer URLs.
 *
 * Map: addresses (one normalised form for IPv4, IPv6 and IPv4 written as
 * IPv6); the built-in table of non-public ranges; list entries (parsed
 * once, at create); twigate's own listeners; the verdict; the URL host
 * parser used per connection.
 *
 * Why judge the socket address and not the URL: a URL can spell 127.0.0.1
 * as 2130706433, 0x7f.1, 127.1, [::ffff:7f00:1] or a name that resolves to
 * it. libcurl resolves and normalises all of them; the address it is about
 * to connect to has one spelling, and that is what is judged here. */
#include "net/netpolicy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A host name is at most 253 characters; an entry longer than this is no
 * host name and no CIDR, and would match nothing anyway. */
#define NAME_MAX_LEN 255
/* Local interface addresses kept for wildcard listeners (0.0.0.0, ::);
 * a host with more addresses than this is unusual, and the ones beyond are
 * still refused by the built-in ranges unless webhook.allow opens them. */
#define MAX_LOCAL_ADDRS 64
/* Listeners: the API, the simulator, a metrics listener; room to spare. */
#define MAX_LISTENERS 16

typedef struct naddr {
    int     fam;          /* 4 or 6 */
    uint8_t b[16];        /* IPv4 in b[0..3] */
} naddr;

typedef enum { E_NET, E_NAME, E_SUFFIX } ekind;

typedef struct entry {
    ekind kind;
    naddr net;            /* E_NET */
    int   bits;
    char  name[NAME_MAX_LEN + 1];   /* E_NAME: host; E_SUFFIX: ".domain" */
} entry;

/* The list's length is bounded by its config value's (a line of the
 * config file, itself capped): one entry per comma. */
typedef struct elist {
    entry *e;
    size_t n;
    bool   has_nets;
} elist;

typedef struct listener {
    naddr a;
    int   port;
    bool  wildcard;
} listener;

struct netpolicy {
    int      refs;
    uint64_t gen;
    char    *allow_src, *deny_src, *proxy;
    elist    allow, deny;
    listener listeners[MAX_LISTENERS];
    size_t   n_listeners;
    naddr    locals[MAX_LOCAL_ADDRS];
    size_t   n_locals;
    char     up_host[NAME_MAX_LEN + 1];   /* Kaphila: "" = none */
    naddr    up_addr;                     /* when up_host is numeric */
    bool     up_numeric;
    int      up_port;
    naddr    special[];   /* SPECIAL's networks, parsed once */
};

/* ---- addresses ---- */

/* IPv4 carried in IPv6 (mapped ::ffff:a.b.c.d, SIIT ::ffff:0:a.b.c.d,
 * compatible ::a.b.c.d, NAT64 64:ff9b::a.b.c.d) is judged as the IPv4
 * address it carries: that is where the packets go. */
static void normalise(naddr *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t siit[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t zero[12] = {0};
    if (a->fam != 6) return;
    bool carry = !memcmp(a->b, mapped, 12) || !memcmp(a->b, siit, 12) ||
                 !memcmp(a->b, nat64, 12);
    /* ::a.b.c.d, but not :: and ::1, which are IPv6's own. */
    if (!carry && !memcmp(a->b, zero, 12))
        carry = a->b[12] | a->b[13] | a->b[14] | (a->b[15] > 1);
    if (!carry) return;
    memmove(a->b, a->b + 12, 4);
    memset(a->b + 4, 0, 12);
    a->fam = 4;
}

static bool from_sockaddr(const struct sockaddr *sa, naddr *a, int *port)
{
    memset(a, 0, sizeof *a);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        a->fam = 4;
        memcpy(a->b, &s4->sin_addr, 4);
        if (port) *port = ntohs(s4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        a->fam = 6;
        memcpy(a->b, &s6->sin6_addr, 16);
        if (port) *port = ntohs(s6->sin6_port);
    } else {
        return false;
    }
    normalise(a);
    return true;
}

/* A numeric address as inet_pton reads it (dotted quad or IPv6). */
static bool from_text(const char *s, naddr *a)
{
    memset(a, 0, sizeof *a);
    if (inet_pton(AF_INET, s, a->b) == 1) a->fam = 4;
    else if (inet_pton(AF_INET6, s, a->b) == 1) a->fam = 6;
    else return false;
    normalise(a);
    return true;
}

static bool in_net(const naddr *a, const naddr *net, int bits)
{
    if (a->fam != net->fam) return false;
    for (int i = 0; bits > 0; i++, bits -= 8) {
        uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
        if ((a->b[i] & mask) != (net->b[i] & mask)) return false;
    }
    return true;
}

static bool unspecified(const naddr *a)
{
    static const uint8_t zero[16] = {0};
    return !memcmp(a->b, zero, a->fam == 4 ? 4 : 16);
}

/* ---- the built-in non-public ranges ---- */

typedef struct range {
    const char *net;
    int         bits;
    const char *why;
} range;

/* Refused unless a webhook.allow CIDR covers the address (a host name in
 * webhook.allow does not: DNS is the customer's, the address is ours). */
static const range SPECIAL[] = {
    {"0.0.0.0", 8, "\"this network\" address (0.0.0.0/8)"},
    {"10.0.0.0", 8, "private address (RFC 1918)"},
    {"100.64.0.0", 10, "shared address space (CGNAT, 100.64.0.0/10)"},
    {"127.0.0.0", 8, "loopback address"},
    {"169.254.0.0", 16, "link-local address"},
    {"172.16.0.0", 12, "private address (RFC 1918)"},
    {"192.0.0.0", 24, "IETF protocol address (192.0.0.0/24)"},
    {"192.168.0.0", 16, "private address (RFC 1918)"},
    {"224.0.0.0", 4, "multicast address"},
    {"240.0.0.0", 4, "reserved or broadcast address"},
    {"::", 128, "unspecified address (::)"},
    {"::1", 128, "loopback address"},
    {"fc00::", 7, "unique-local address"},
    {"fe80::", 10, "link-local address"},
    {"fec0::", 10, "site-local address"},
    {"ff00::", 8, "multicast address"},
};
#define N_SPECIAL (sizeof SPECIAL / sizeof SPECIAL[0])

static const char *special_range(const netpolicy *p, const naddr *a)
{
    for (size_t i = 0; i < N_SPECIAL; i++)
        if (in_net(a, &p->special[i], SPECIAL[i].bits)) return SPECIAL[i].why;
    return NULL;
}

/* ---- list entries ---- */

static void lower_copy(char *out, size_t outlen, const char *s, size_t n)
{
    if (n >= outlen) n = outlen - 1;
    for (size_t i = 0; i < n; i++) out[i] = (char)tolower((unsigned char)s[i]);
    out[n] = '\0';
    /* "example.com." is example.com. */
    while (n > 0 && out[n - 1] == '.') out[--n] = '\0';
}

static void parse_entry(const char *s, size_t n, entry *e)
{
    char text[NAME_MAX_LEN + 1], *slash;
    lower_copy(text, sizeof text, s, n);
    if (text[0] == '[') {                       /* [::1] or [::1]/128 */
        char *close = strchr(text, ']');
        if (close) memmove(close, close + 1, strlen(close));
        memmove(text, text + 1, strlen(text));
    }
    slash = strchr(text, '/');
    if (slash) *slash = '\0';
    if (from_text(text, &e->net)) {
        int max = e->net.fam == 4 ? 32 : 128;
        int bits = slash ? atoi(slash + 1) : max;
        /* An IPv4 CIDR written as IPv6 (::ffff:10.0.0.0/104) was
         * normalised to IPv4: its prefix loses the 96 bits it carried. */
        if (slash && e->net.fam == 4 && strchr(text, ':')) bits -= 96;
        if (bits < 0 || bits > max) bits = max;
        e->kind = E_NET;
        e->bits = bits;
        return;
    }
    if (slash) *slash = '/';
    if (text[0] == '*' && text[1] == '.') {
        e->kind = E_SUFFIX;
        snprintf(e->name, sizeof e->name, "%s", text + 1);
    } else {
        e->kind = E_NAME;
        snprintf(e->name, sizeof e->name, "%s", text);
    }
}

static bool elist_parse(elist *l, const char *src)
{
    size_t cap = 1;
    for (const char *p = src; *p; p++) cap += *p == ',';
    l->e = calloc(cap, sizeof *l->e);
    if (!l->e) return false;
    for (const char *p = src; *p;) {
        size_t n = strcspn(p, ",");
        const char *s = p, *end = p + n;
        while (s < end && isspace((unsigned char)*s)) s++;
        while (end > s && isspace((unsigned char)end[-1])) end--;
        if (end > s) {
            parse_entry(s, (size_t)(end - s), &l->e[l->n]);
            if (l->e[l->n].kind == E_NET) l->has_nets = true;
            l->n++;
        }
        p += n;
        if (*p == ',') p++;
    }
    return true;
}

static bool name_match(const entry *e, const char *host)
{
    if (e->kind == E_NAME) return !strcmp(e->name, host);
    size_t h = strlen(host), s = strlen(e->name);
    return h > s && !strcmp(host + h - s, e->name);
}

/* host: lower case, or NULL; a: NULL when unknown. */
static bool elist_match(const elist *l, const char *host, const naddr *a)
{
    for (size_t i = 0; i < l->n; i++) {
        const entry *e = &l->e[i];
        if (e->kind == E_NET ? a && in_net(a, &e->net, e->bits) : host && name_match(e, host))
            return true;
    }
    return false;
}

static bool elist_covers(const elist *l, const naddr *a)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->e[i].kind == E_NET && in_net(a, &l->e[i].net, l->e[i].bits)) return true;
    return false;
}

/* ---- twigate's own listeners ---- */

static void collect_locals(netpolicy *p)
{
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) return;
    for (struct ifaddrs *i = ifs; i && p->n_locals < MAX_LOCAL_ADDRS; i = i->ifa_next)
        if (i->ifa_addr && from_sockaddr(i->ifa_addr, &p->locals[p->n_locals], NULL))
            p->n_locals++;
    freeifaddrs(ifs);
}

static bool is_loopback(const naddr *a)
{
    static const uint8_t one[16] = {[15] = 1};
    return a->fam == 4 ? a->b[0] == 127 : !memcmp(a->b, one, 16);
}

static bool own_listener(const netpolicy *p, const naddr *a, int port)
{
    for (size_t i = 0; i < p->n_listeners; i++) {
        const listener *l = &p->listeners[i];
        if (l->port != port) continue;
        /* Connecting to 0.0.0.0 or :: reaches the local host. */
        if (unspecified(a)) return true;
        if (!l->wildcard) {
            if (l->a.fam == a->fam && !memcmp(l->a.b, a->b, 16)) return true;
            continue;
        }
        if (is_loopback(a)) return true;
        for (size_t j = 0; j < p->n_locals; j++)
            if (p->locals[j].fam == a->fam && !memcmp(p->locals[j].b, a->b, 16)) return true;
    }
    return false;
}

/* Kaphila's host:port, by address when the URL has one, else by name
 * (judged with the port of the socket address). */
static bool upstream(const netpolicy *p, const char *host, const naddr *a, int port)
{
    if (!p->up_host[0] || port != p->up_port) return false;
    if (p->up_numeric) return a && a->fam == p->up_addr.fam && !memcmp(a->b, p->up_addr.b, 16);
    return host && !strcmp(host, p->up_host);
}

static void parse_upstream(netpolicy *p, const char *url)
{
    const char *hostend, *colon;
    if (!url || !netpolicy_url_host(url, p->up_host, sizeof p->up_host)) return;
    p->up_numeric = from_text(p->up_host, &p->up_addr);
    p->up_port = !strncasecmp(url, "https:", 6) ? 443 : 80;
    /* the port follows the host (after a ']' for IPv6) */
    hostend = strstr(url, "://") + 3;
    hostend += strcspn(hostend, "/?#");
    colon = hostend;
    while (colon > url && colon[-1] != ':' && colon[-1] != ']' && colon[-1] != '/') colon--;
    if (colon > url && colon[-1] == ':' && colon < hostend) p->up_port = atoi(colon);
}

/* ---- the policy ---- */

netpolicy *netpolicy_create(const char *allow, const char *deny, const char *proxy,
                            const netpolicy_listener *listeners, size_t n_listeners,
                            const char *upstream_url, uint64_t gen)
{
    netpolicy *p = calloc(1, sizeof *p + N_SPECIAL * sizeof(naddr));
    bool wildcard = false;
    if (!p) return NULL;
    for (size_t i = 0; i < N_SPECIAL; i++)
        if (!from_text(SPECIAL[i].net, &p->special[i])) p->special[i].fam = -1;   /* never */
    p->refs = 1;
    p->gen = gen;
    p->allow_src = strdup(allow ? allow : "");
    p->deny_src = strdup(deny ? deny : "");
    p->proxy = strdup(proxy ? proxy : "");
    if (!p->allow_src || !p->deny_src || !p->proxy || !elist_parse(&p->allow, p->allow_src) ||
        !elist_parse(&p->deny, p->deny_src))
        goto fail;
    for (size_t i = 0; i < n_listeners && p->n_listeners < MAX_LISTENERS; i++) {
        listener *l = &p->listeners[p->n_listeners];
        if (listeners[i].port <= 0) continue;
        l->port = listeners[i].port;
        l->wildcard = !listeners[i].address || !from_text(listeners[i].address, &l->a) ||
                      unspecified(&l->a);
        wildcard |= l->wildcard;
        p->n_listeners++;
    }
    if (wildcard) collect_locals(p);
    parse_upstream(p, upstream_url);
    return p;
fail:
    netpolicy_unref(p);
    return NULL;
}

netpolicy *netpolicy_ref(netpolicy *p)
{
    p->refs++;
    return p;
}

void netpolicy_unref(netpolicy *p)
{
    if (!p || --p->refs > 0) return;
    free(p->allow.e);
    free(p->deny.e);
    free(p->allow_src);
    free(p->deny_src);
    free(p->proxy);
    free(p);
}

uint64_t netpolicy_gen(const netpolicy *p) { return p->gen; }
const char *netpolicy_proxy(const netpolicy *p) { return p->proxy; }

bool netpolicy_same(const netpolicy *p, const char *allow, const char *deny, const char *proxy)
{
    return !strcmp(p->allow_src, allow ? allow : "") && !strcmp(p->deny_src, deny ? deny : "") &&
           !strcmp(p->proxy, proxy ? proxy : "");
}

const char *netpolicy_check(const netpolicy *p, const char *host, const struct sockaddr *addr)
{
    char name[NAME_MAX_LEN + 1];
    naddr a;
    int port = -1;
    bool have = false;
    const char *why;

    if (host) {
        size_t n = strlen(host);
        if (n >= 2 && host[0] == '[' && host[n - 1] == ']') host++, n -= 2;
        lower_copy(name, sizeof name, host, n);
        host = name;
    }
    if (addr) have = from_sockaddr(addr, &a, &port);
    /* A literal address in the URL is judged as one even when the socket
     * address is not known (a proxy resolves and connects for us). */
    if (!have && host && from_text(host, &a)) have = true;

    if (have && port >= 0 && own_listener(p, &a, port))
        return "one of twigate's own listening sockets";
    if (port >= 0 && upstream(p, host, have ? &a : NULL, port))
        return "twigate's Kaphila endpoint";
    if (elist_match(&p->deny, host, have ? &a : NULL))
        return "listed in webhook.deny";
    if (p->allow.n && !elist_match(&p->allow, host, have ? &a : NULL)) {
        /* Before the address is known only a name entry can match; a list
         * with CIDRs is decided at connect time. */
        if (have || !p->allow.has_nets) return "not listed in webhook.allow";
    }
    if (have && (why = special_range(p, &a)) && !elist_covers(&p->allow, &a))
        return why;
    return NULL;
}

bool netpolicy_url_host(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://"), *end, *at;
    size_t n;
    if (!p || outlen == 0) return false;
    p += 3;
    end = p + strcspn(p, "/?#");
    /* user info: the last '@' before the path */
    for (at = end; at > p && at[-1] != '@'; at--)
        ;
    if (at > p) p = at;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close) return false;
        p++;
        n = (size_t)(close - p);
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        n = (size_t)((colon ? colon : end) - p);
    }
    if (n == 0 || n >= outlen) return false;
    lower_copy(out, outlen, p, n);
    return out[0] != '\0';   /* "http://./" has no host either */
}
