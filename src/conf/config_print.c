/* config_print.c — printing the effective config and the key help (see config.c for the map of the config files). */
#include "config_int.h"
#include "net/connguard.h"
#include "sim/sim.h"
#include "base/timefmt.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- printing --------------------------------------------------------- */

static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void format_iso8601(long long ms, char *out, size_t outlen)
{
    time_t secs = (time_t)(ms / 1000);
    long long frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, outlen, "invalid");
        return;
    }
    char base[64];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac != 0)
        snprintf(out, outlen, "%s.%03lldZ", base, frac);
    else
        snprintf(out, outlen, "%sZ", base);
}

static size_t section_len(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot != NULL ? (size_t)(dot - name) : 0;
}

void config_print(const config *c, FILE *out)
{
    fprintf(out, "# twigate effective configuration; secrets are shown as %s\n", MASK);
    const char *prev = NULL;
    size_t prev_len = 0;
    for (size_t i = 0; i < config_n_keys; i++) {
        const key_def *k = &config_keys[i];
        size_t sl = section_len(k->name);
        if (sl > 0 && (prev == NULL || sl != prev_len || strncmp(prev, k->name, sl) != 0))
            fprintf(out, "\n[%.*s]\n", (int)sl, k->name);
        prev = k->name;
        prev_len = sl;
        fprintf(out, "%s = ", k->name + (sl ? sl + 1 : 0));
        const void *field = (const char *)c + k->offset;
        switch (k->type) {
        case KT_INT:
            fprintf(out, "%d\n", *(const int *)field);
            break;
        case KT_BOOL:
            fprintf(out, "%s\n", *(const bool *)field ? "true" : "false");
            break;
        case KT_STRING:
        case KT_SECRET:
        case KT_TIME: {
            const char *v = *(char *const *)field;
            print_quoted(out, k->type == KT_SECRET && v[0] != '\0' ? MASK : v);
            fputc('\n', out);
            break;
        }
        }
    }
    for (size_t i = 0; i < c->n_accounts; i++) {
        const config_account *a = &c->accounts[i];
        fprintf(out, "\n[account.%s]\n", a->name);
        for (size_t f = 0; f < config_n_fields; f++) {
            const field_def *fd = &config_fields[f];
            if (fd->type == KT_TIME) {
                if (a->created_at != 0) {
                    char iso[80];
                    format_iso8601(a->created_at, iso, sizeof iso);
                    fprintf(out, "%s = %s\n", fd->name, iso);
                }
                continue;
            }
            if (fd->type == KT_BOOL) {
                fprintf(out, "%s = %s\n", fd->name,
                        *(const bool *)((const char *)a + fd->offset) ? "true" : "false");
                continue;
            }
            const char *v = *(char *const *)((const char *)a + fd->offset);
            if (v == NULL)
                continue;
            fprintf(out, "%s = ", fd->name);
            print_quoted(out, fd->type == KT_SECRET ? MASK : v);
            fputc('\n', out);
        }
    }
}

static const char *type_name(key_type t)
{
    switch (t) {
    case KT_STRING: return "string";
    case KT_SECRET: return "secret";
    case KT_INT:    return "int";
    case KT_BOOL:   return "bool";
    case KT_TIME:   return "time";
    }
    return "?";
}

void config_print_help(FILE *out)
{
    fprintf(out,
            "Configuration keys (file < TWIGATE_<KEY> environment < --set key=value).\n"
            "[reload] marks keys a SIGHUP applies; the others need a restart.\n\n");
    for (size_t i = 0; i < config_n_keys; i++) {
        const key_def *k = &config_keys[i];
        fprintf(out, "  %s  %s  default ", k->name, type_name(k->type));
        if (k->type == KT_STRING || k->type == KT_SECRET)
            print_quoted(out, k->def);
        else
            fputs(k->def, out);
        if (k->type == KT_INT)
            fprintf(out, "  range %d..%d", k->min, k->max);
        fprintf(out, "%s\n      %s\n", k->reloadable ? "  [reload]" : "", k->desc);
    }
    fprintf(out, "\nAccount keys, one [account.<name>] section per account "
            "(<name>: [a-z0-9_-], at most %d accounts):\n\n", CONFIG_MAX_ACCOUNTS);
    for (size_t f = 0; f < config_n_fields; f++) {
        const field_def *fd = &config_fields[f];
        fprintf(out, "  account.<name>.%s  %s  %s  [reload]\n      %s\n", fd->name,
                type_name(fd->type), fd->required ? "required" : "optional", fd->desc);
    }
}
