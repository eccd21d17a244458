/* libFuzzer target for the Basic credentials parser (http_basic_decode):
 * arbitrary bytes as an Authorization value. Whatever it accepts must hold
 * no NUL and no ':' in the user name, and must come back the same when
 * re-encoded as "Basic base64(user:pass)" and parsed again. */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/httpd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1), *user = NULL, *pass = NULL, *u2 = NULL, *p2 = NULL;
    char *plain = NULL, *hdr = NULL;
    if (!in) return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    if (http_basic_decode(in, &user, &pass)) {
        size_t ul = strlen(user), pl = strlen(pass), n = ul + 1 + pl;
        if (strchr(user, ':')) abort();
        plain = malloc(n + 1);
        hdr = malloc(6 + 4 * (n / 3 + 1) + 1);
        if (plain && hdr) {
            memcpy(plain, user, ul);
            plain[ul] = ':';
            memcpy(plain + ul + 1, pass, pl + 1);
            memcpy(hdr, "Basic ", 6);
            EVP_EncodeBlock((unsigned char *)hdr + 6, (const unsigned char *)plain, (int)n);
            if (!http_basic_decode(hdr, &u2, &p2) || strcmp(user, u2) || strcmp(pass, p2))
                abort();
        }
    }
    free(user);
    free(pass);
    free(u2);
    free(p2);
    free(plain);
    free(hdr);
    free(in);
    return 0;
}
