/* Unit tests for exec_sound: the <Play> URL → Kaphila sound name rule
 * (the map first, exact match; then prefix + basename without extension;
 * refusals for names that are empty, unsafe or too long). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "engine/exec_sound.h"

static void test_default_basename(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(exec_sound_name("", "custom/", "https://x/a/welcome.mp3", out, sizeof out), 0);
    assert_string_equal(out, "custom/welcome");
    assert_int_equal(exec_sound_name(NULL, NULL, "http://h:8080/menu.wav", out, sizeof out), 0);
    assert_string_equal(out, "menu");
    assert_int_equal(exec_sound_name("", "", "https://x/a/b/c/hold-music_2", out, sizeof out), 0);
    assert_string_equal(out, "hold-music_2");           /* no extension: kept whole */
    assert_int_equal(exec_sound_name("", "p/", "https://x/v1.2.wav", out, sizeof out), 0);
    assert_string_equal(out, "p/v1.2");                 /* only the last extension goes */
}

static void test_query_and_fragment_ignored(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(exec_sound_name("", "s/", "https://x/dir/beep.mp3?v=3&x=a/b.wav", out,
                                     sizeof out), 0);
    assert_string_equal(out, "s/beep");
    assert_int_equal(exec_sound_name("", "s/", "https://x/dir/tone.ulaw#rc=2", out, sizeof out), 0);
    assert_string_equal(out, "s/tone");
}

static void test_map_exact_match_first(void **state)
{
    (void)state;
    char out[64];
    const char *map = "https://x/a/welcome.mp3=greetings/hello, https://x/q.mp3?v=2=custom/q2";
    assert_int_equal(exec_sound_name(map, "custom/", "https://x/a/welcome.mp3", out, sizeof out), 0);
    assert_string_equal(out, "greetings/hello");        /* not prefixed */
    /* Split at the last '=': the URL keeps its query string. */
    assert_int_equal(exec_sound_name(map, "custom/", "https://x/q.mp3?v=2", out, sizeof out), 0);
    assert_string_equal(out, "custom/q2");
    /* Exact match only: another query string or a prefix of the URL misses. */
    assert_int_equal(exec_sound_name(map, "c/", "https://x/q.mp3?v=3", out, sizeof out), 0);
    assert_string_equal(out, "c/q");
    assert_int_equal(exec_sound_name(map, "c/", "https://x/a/welcome.mp", out, sizeof out), 0);
    assert_string_equal(out, "c/welcome");
}

static void test_map_tolerates_blanks_and_junk(void **state)
{
    (void)state;
    char out[64];
    const char *map = " , junk-without-equals ,\thttps://x/a.mp3 =  snd/a\t,=orphan,https://x/b.mp3=";
    assert_int_equal(exec_sound_name(map, "d/", "https://x/a.mp3", out, sizeof out), 0);
    assert_string_equal(out, "snd/a");
    /* An empty sound name in the map is no mapping: the default applies. */
    assert_int_equal(exec_sound_name(map, "d/", "https://x/b.mp3", out, sizeof out), 0);
    assert_string_equal(out, "d/b");
}

static void test_refusals(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(exec_sound_name("", "c/", "https://x/dir/", out, sizeof out), -1);     /* no basename */
    assert_int_equal(exec_sound_name("", "c/", "https://x", out, sizeof out), -1);          /* no path */
    assert_int_equal(exec_sound_name("", "c/", "https://x/..", out, sizeof out), -1);       /* dot name */
    assert_int_equal(exec_sound_name("", "c/", "https://x/.hidden.mp3", out, sizeof out), -1);
    assert_int_equal(exec_sound_name("", "c/", "https://x/a%20b.mp3", out, sizeof out), -1); /* unsafe */
    assert_int_equal(exec_sound_name("", "c/", "https://x/a b.mp3", out, sizeof out), -1);
    assert_int_equal(exec_sound_name("", "c/", NULL, out, sizeof out), -1);
}

static void test_output_size(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(exec_sound_name("", "c/", "https://x/abcde.mp3", out, sizeof out), 0);
    assert_string_equal(out, "c/abcde");                 /* 7 chars + NUL fit exactly */
    assert_int_equal(exec_sound_name("", "c/", "https://x/abcdef.mp3", out, sizeof out), -1);
    assert_int_equal(exec_sound_name("https://x/m=longer-than-8", "", "https://x/m", out, sizeof out), -1);
    assert_int_equal(exec_sound_name("", "", "https://x/a.mp3", out, 0), -1);
}

static void test_relative_path(void **state)
{
    (void)state;
    char out[64];
    /* The executor resolves URLs first, but a bare path still works. */
    assert_int_equal(exec_sound_name("", "c/", "/audio/intro.mp3", out, sizeof out), 0);
    assert_string_equal(out, "c/intro");
    assert_int_equal(exec_sound_name("", "c/", "intro.mp3", out, sizeof out), 0);
    assert_string_equal(out, "c/intro");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_basename),
        cmocka_unit_test(test_query_and_fragment_ignored),
        cmocka_unit_test(test_map_exact_match_first),
        cmocka_unit_test(test_map_tolerates_blanks_and_junk),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_output_size),
        cmocka_unit_test(test_relative_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
