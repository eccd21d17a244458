#!/usr/bin/env bash
# Proves and keeps the source tree's layering (docs/architecture.md, "The tree"):
#
#   base  <  twiml, net  <  sim  <  conf  <  store  <  engine  <  http  <  console  <  app
#
# A file in src/<L>/ or include/<L>/ may include a header of its own folder or
# of a strictly lower layer; never a higher one, never a sibling of the same
# rank (twiml and net know nothing of each other), and never another folder's
# private header (*_int.h: "the engine is reachable only through its header").
# With those rules no include cycle can span two folders; the script checks
# that too, directly, on the folder graph. A source file (.c .h .py .js .sh,
# tracked, in src/ include/ tests/ bench/ scripts/) over MAX_LINES fails,
# and so does a call-row write (store_call_insert/update/delete) outside
# src/engine/: only the engine writes calls; and a call's row read as
# c->row outside engine.c (engine_int.h has the accessors).
#
# The only way past a rule is a line in scripts/layers-allow.txt, with a
# reason: "include FILE HEADER reason..." or "lines FILE reason...". A listed
# exception that no longer occurs fails as well, so the list only shrinks.
#
# usage: scripts/check-layers.sh  (from the repository root; run by make check)
set -u
cd "$(dirname "$0")/.." || exit 2

MAX_LINES=800
ALLOW=scripts/layers-allow.txt

rank_of() {
  case "$1" in
    base) echo 0 ;; twiml|net) echo 1 ;; sim) echo 2 ;; conf) echo 3 ;;
    store) echo 4 ;; engine) echo 5 ;; http) echo 6 ;; console) echo 7 ;; app) echo 8 ;;
    *) echo -1 ;;
  esac
}

fail=0
used=$(mktemp "${TMPDIR:-/tmp}/check-layers.XXXXXX")
edges=$(mktemp "${TMPDIR:-/tmp}/check-layers.XXXXXX")
trap 'rm -f "$used" "$edges"' EXIT

# allowed KIND FILE [HEADER]: true when the allow list names it (and records the use).
allowed() {
  local line
  if [ "$1" = include ]; then
    line=$(awk -v f="$2" -v h="$3" '$1=="include" && $2==f && $3==h && NF>3 {print NR; exit}' "$ALLOW")
  else
    line=$(awk -v f="$2" '$1=="lines" && $2==f && NF>2 {print NR; exit}' "$ALLOW")
  fi
  [ -n "$line" ] && echo "$line" >>"$used"
  [ -n "$line" ]
}

# --- every file sits in a known layer folder ---
for f in src/* include/*; do
  [ -d "$f" ] || { echo "layers: $f is not inside a layer folder"; fail=1; continue; }
  if [ "$(rank_of "$(basename "$f")")" -lt 0 ]; then
    echo "layers: $f is not a known layer (scripts/check-layers.sh rank_of)"; fail=1
  fi
done

# --- includes ---
# A layer's sub-folder (src/store/sqlite/) belongs to the layer: the layer of a
# file is its path's second component.
layer_of() { echo "$1" | cut -d/ -f2; }
for f in src/*/*.c src/*/*.h src/*/*/*.c src/*/*/*.h include/*/*.h; do
  [ -e "$f" ] || continue
  from=$(layer_of "$f")
  from_rank=$(rank_of "$from")
  while IFS= read -r inc; do
    case "$inc" in
      */*)
        # "layer/name.h" (public, via -Iinclude) or a relative "../layer/x_int.h".
        if [ -e "include/$inc" ]; then
          to=${inc%%/*}
        elif [ -e "$(dirname "$f")/$inc" ]; then
          to=$(layer_of "$(realpath -m --relative-to=. "$(dirname "$f")/$inc")")
        else
          echo "layers: $f includes \"$inc\", which is neither include/$inc nor beside it"; fail=1
          continue
        fi ;;
      *)
        if [ -e "$(dirname "$f")/$inc" ]; then
          to=$from
        else
          echo "layers: $f includes \"$inc\": public headers are spelled \"<layer>/$inc\""; fail=1
          continue
        fi ;;
    esac
    [ "$to" = "$from" ] && continue
    echo "$from $to" >>"$edges"
    why=""
    case "$inc" in *_int.h) why="another folder's private header" ;; esac
    to_rank=$(rank_of "$to")
    if [ -z "$why" ] && [ "$to_rank" -ge "$from_rank" ]; then
      why="layer $to is not below layer $from"
    fi
    if [ -n "$why" ]; then
      if allowed include "$f" "$inc"; then
        sed -i '$d' "$edges"    # a listed exception is known debt, not a new arrow
      else
        echo "layers: $f includes \"$inc\": $why"; fail=1
      fi
    fi
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done

# --- no cycle between folders (on the arrows left after the listed exceptions) ---
cycle=$(sort -u "$edges" | tsort 2>&1 >/dev/null)
if [ -n "$cycle" ]; then
  echo "layers: include cycle between folders:"; echo "$cycle" | sed 's/^/  /'; fail=1
fi

# --- only the engine writes calls (docs/architecture.md, threads) ---
for f in src/*/*.c src/*/*/*.c; do
  [ -e "$f" ] || continue
  case "$f" in src/engine/*|src/store/*) continue ;; esac
  grep -Hn 'store_call_\(insert\|update\|delete\)[[:space:]]*(' "$f" | while IFS= read -r hit; do
    echo "layers: ${hit%%:*}: writes calls outside the engine (${hit#*:}); go through engine.h"
  done | grep . && fail=1
done

# --- a call's row is read through engine_int.h's accessors outside engine.c ---
for f in src/*/*.c src/*/*/*.c; do
  [ -e "$f" ] || continue
  case "$f" in src/engine/engine.c|src/engine/engine_*.c) continue ;; esac
  if grep -Hn -e '->row\.' "$f" | grep . ; then
    echo "layers: $f reads a call's row directly; use call_row_* (src/engine/engine_int.h)"; fail=1
  fi
done

# --- file length: every source file we write, tests and bench too ---
# Git's list (tracked, plus new files not ignored), so build output and
# node_modules never count; vendored or generated trees are skipped by path.
long_files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files --cached --others --exclude-standard -- src include tests bench scripts
  else
    find src include tests bench scripts -type f
  fi | grep -E '\.(c|h|py|js|sh)$' \
     | grep -Ev '(^|/)(node_modules|vendor|vendored|third_party|gen|generated)/'
}
while IFS= read -r f; do
  [ -f "$f" ] || continue
  n=$(wc -l <"$f")
  if [ "$n" -gt "$MAX_LINES" ] && ! allowed lines "$f"; then
    echo "layers: $f has $n lines (over $MAX_LINES): split it, or list it in $ALLOW with a reason"; fail=1
  fi
done < <(long_files)

# --- stale exceptions ---
awk '$1=="include" || $1=="lines" {print NR}' "$ALLOW" | while IFS= read -r nr; do
  if ! grep -qx "$nr" "$used"; then
    echo "layers: $ALLOW line $nr no longer applies; delete it: $(sed -n "${nr}p" "$ALLOW")"
    echo stale >>"$edges.stale"
  fi
done
if [ -e "$edges.stale" ]; then rm -f "$edges.stale"; fail=1; fi

if [ "$fail" -ne 0 ]; then
  echo "layers: FAILED"
  exit 1
fi
echo "layers: ok ($(grep -c '^include' "$ALLOW") listed include exceptions, $(grep -c '^lines' "$ALLOW") listed long files)"
