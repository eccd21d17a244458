/* libFuzzer target for netpolicy: webhook.allow / webhook.deny lists and
 * URLs of any shape must compile and judge without crashing, and the URL
 * host parser must never write past its buffer nor return an empty host.
 * Input: allow list, '\n', deny list, '\n', a URL (missing parts = ""). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/netpolicy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *parts[3] = {"", "", ""}, host[64];
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *p = text;
    for (int i = 0; i < 3 && p; i++) {
        parts[i] = p;
        p = strchr(p, '\n');
        if (p) *p++ = '\0';
    }
    netpolicy_listener ls[] = {{"127.0.0.1", 8080}, {"::", 9000}, {parts[0], 1}};
    netpolicy *np = netpolicy_create(parts[0], parts[1], "", ls, 3, parts[2], 1);
    if (np != NULL) {
        struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(8080)};
        struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(9000)};
        inet_pton(AF_INET, "127.0.0.1", &s4.sin_addr);
        inet_pton(AF_INET6, "::ffff:10.1.2.3", &s6.sin6_addr);
        if (netpolicy_check(np, "x", (struct sockaddr *)&s4) == NULL)
            abort();   /* an own listener is never allowed */
        (void)netpolicy_check(np, parts[2], (struct sockaddr *)&s6);
        (void)netpolicy_check(np, parts[2], NULL);
        if (netpolicy_url_host(parts[2], host, sizeof host)) {
            if (host[0] == '\0')
                abort();
            (void)netpolicy_check(np, host, NULL);
        }
        netpolicy_unref(np);
    }
    free(text);
    return 0;
}
