#!/usr/bin/env bash
# Builds every libFuzzer target (fuzz/fuzz_<name>.c) against the library
# sources under ASan+UBSan, then either replays the committed seed corpora or
# fuzzes for a while.
#
# usage: scripts/fuzz.sh replay          run each target once over every file
#                                         in fuzz/corpus/<name>/; any crash,
#                                         leak or sanitizer report fails
#        scripts/fuzz.sh run [seconds]   fuzz each target for <seconds>
#                                         (default 60); new inputs go to
#                                         build-fuzz/corpus-<name>/, never
#                                         into the repository
#
# Targets are found by globbing fuzz/fuzz_*.c, so a new target needs no
# registration here, only a non-empty fuzz/corpus/<name>/.
set -euo pipefail

cd "$(dirname "$0")/.."

CLANG=${CLANG:-clang}
OUT=build-fuzz
PKGS="libmicrohttpd libcurl jansson libxml-2.0 sqlite3 libpq libcrypto"
# Per-input time limit: a form or URL that takes this long is a hang bug.
INPUT_TIMEOUT_S=10

usage() {
  echo "usage: $0 replay | run [seconds]" >&2
  exit 2
}

mode=${1:-}
case "$mode" in
  replay) ;;
  run)
    secs=${2:-60}
    [[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: seconds must be a positive integer, got '$secs'" >&2; exit 2; }
    ;;
  *) usage ;;
esac

if ! command -v "$CLANG" >/dev/null 2>&1; then
  echo "fuzz: $CLANG not found; install it with: scripts/install-deps.sh test" >&2
  exit 2
fi

WARN="-Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2 -Wvla"
CFLAGS="-std=c11 -D_GNU_SOURCE -Iinclude -g -O1 -fno-omit-frame-pointer $WARN $(pkg-config --cflags $PKGS)"
# no-recover: a UBSan finding must stop the run, or libFuzzer would not see it.
SAN="address,undefined -fno-sanitize-recover=all"
LIBS="$(pkg-config --libs $PKGS) -lpthread -lm"

mkdir -p "$OUT/obj"

# --- library objects (rebuilt when their source or any header is newer) ---
lib_src=()
for f in src/*/*.c src/*/*/*.c; do
  [ -e "$f" ] || continue
  case "$f" in src/app/main.c|src/sim/sim_main.c) continue ;; esac
  lib_src+=("$f")
done

newest_header=$(ls -t include/*/*.h src/*/*.h src/*/*/*.h 2>/dev/null | head -n1 || true)
objs=()
pids=()
for f in "${lib_src[@]}"; do
  o="$OUT/obj/$(echo "${f%.c}" | tr / _).o"
  objs+=("$o")
  if [ ! -e "$o" ] || [ "$f" -nt "$o" ] || { [ -n "$newest_header" ] && [ "$newest_header" -nt "$o" ]; }; then
    # shellcheck disable=SC2086
    $CLANG $CFLAGS -fsanitize=fuzzer-no-link,$SAN -c "$f" -o "$o" &
    pids+=($!)
  fi
done
build_failed=0
for p in "${pids[@]+"${pids[@]}"}"; do
  wait "$p" || build_failed=1
done
if [ "$build_failed" -ne 0 ]; then
  echo "fuzz: compiling the library sources failed" >&2
  exit 1
fi
# An archive, as in the Makefile: each target pulls in only the objects it
# needs, so one module's unresolved symbols cannot break unrelated targets.
lib="$OUT/libtwigate-fuzz.a"
rm -f "$lib"
ar rcs "$lib" "${objs[@]}"

# --- targets ---
targets=()
for t in fuzz/fuzz_*.c; do
  [ -e "$t" ] || continue
  name=$(basename "$t" .c)
  name=${name#fuzz_}
  # shellcheck disable=SC2086
  if ! $CLANG $CFLAGS -fsanitize=fuzzer,$SAN "$t" "$lib" -o "$OUT/fuzz_$name" $LIBS; then
    echo "fuzz: building fuzz_$name failed" >&2
    exit 1
  fi
  targets+=("$name")
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz/fuzz_*.c targets found" >&2
  exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0
failed=0
log="$OUT/last-$mode.log"
for name in "${targets[@]}"; do
  corpus="fuzz/corpus/$name"
  seeds=()
  if [ -d "$corpus" ]; then
    while IFS= read -r -d '' f; do seeds+=("$f"); done < <(find "$corpus" -maxdepth 1 -type f -print0 | sort -z)
  fi
  if [ ${#seeds[@]} -eq 0 ]; then
    echo "FAIL $name: seed corpus $corpus/ is missing or empty"
    failed=$((failed + 1))
    continue
  fi
  if [ "$mode" = replay ]; then
    # Files as arguments: libFuzzer runs each once and exits.
    if "$OUT/fuzz_$name" -timeout=$INPUT_TIMEOUT_S "${seeds[@]}" >"$log" 2>&1; then
      echo "PASS $name (${#seeds[@]} inputs)"
      passed=$((passed + 1))
    else
      echo "FAIL $name"
      tail -n 40 "$log" | sed 's/^/    /'
      failed=$((failed + 1))
    fi
  else
    # The first directory receives new inputs; the committed seeds are read only.
    mkdir -p "$OUT/corpus-$name"
    echo "fuzzing $name for ${secs}s"
    if "$OUT/fuzz_$name" -max_total_time="$secs" -timeout=$INPUT_TIMEOUT_S \
         -print_final_stats=1 -artifact_prefix="$OUT/crash-$name-" \
         "$OUT/corpus-$name" "$corpus" >"$log" 2>&1; then
      echo "PASS $name ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?') runs)"
      passed=$((passed + 1))
    else
      echo "FAIL $name (crash input saved as $OUT/crash-$name-*)"
      tail -n 40 "$log" | sed 's/^/    /'
      failed=$((failed + 1))
    fi
  fi
done

echo "fuzz-$mode: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
