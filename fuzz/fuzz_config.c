/* libFuzzer target for the config parser.
 *
 * The input is loaded as a config file and, when that succeeds, finished,
 * printed and compared for reload. The same bytes, split into lines, are
 * also applied as an environment (envp) to a fresh config, so the
 * TWIGATE_ACCOUNT_… matching gets exercised by the same corpus. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"

/* Enough lines for many variables without making each run slow. */
#define FUZZ_MAX_ENV 256

static void fuzz_env(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    char *envp[FUZZ_MAX_ENV + 1];
    config *c = config_create();
    if (copy == NULL || c == NULL)
        goto out;
    memcpy(copy, data, size);
    copy[size] = '\0';
    size_t n = 0;
    for (char *line = copy; line != NULL && n < FUZZ_MAX_ENV;) {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        envp[n++] = line;
        line = nl != NULL ? nl + 1 : NULL;
    }
    envp[n] = NULL;
    char err[512];
    if (config_apply_env(c, envp, err, sizeof err) == 0)
        (void)config_finish(c, err, sizeof err);
out:
    config_destroy(c);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    config *c = config_create();
    config *d = config_create();
    if (c == NULL || d == NULL)
        goto out;
    if (config_load_string(c, (const char *)data, size, "fuzz.conf", err, sizeof err) != 0)
        goto out;
    if (config_finish(c, err, sizeof err) != 0)
        goto out;
    if (c->public_url[0] == '\0' && config_bind_port(c, 4242, err, sizeof err) != 0)
        goto out;
    FILE *sink = fopen("/dev/null", "w");
    if (sink != NULL) {
        config_print(c, sink);
        fclose(sink);
    }
    (void)config_reload_compatible(d, c, err, sizeof err);
    for (size_t i = 0; i < c->n_accounts; i++)
        if (config_account_by_sid(c, c->accounts[i].sid) == NULL)
            __builtin_trap();   /* every finished account must be found by its SID */
out:
    config_destroy(d);
    config_destroy(c);
    fuzz_env(data, size);
    return 0;
}
