/* conf_rig — see conf_rig.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "conf_rig.h"

#include <stdlib.h>
#include <string.h>

int ut_conf_load(config *c, const char *text, char *err, size_t errlen)
{
    return config_load_string(c, text, strlen(text), "t.conf", err, errlen);
}

config *ut_conf_loaded(const char *text)
{
    config *c = config_create();
    assert_non_null(c);
    char err[512] = "";
    int rc = ut_conf_load(c, text, err, sizeof err);
    if (rc != 0)
        fail_msg("load failed: %s", err);
    return c;
}

char *ut_conf_capture(void (*print)(const config *, FILE *), const config *c)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    print(c, f);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return buf;
}

void ut_conf_print_help(const config *c, FILE *f)
{
    (void)c;
    config_print_help(f);
}
