#!/bin/sh
# check-docker.sh — checks the container and systemd packaging as far as a
# machine without a Docker engine allows (docs/operations.md, "What is not
# tested here"). Run from anywhere; uses the binaries in $TWIGATE_BUILD
# (default build/, relative to the repository root).
#
#   1. Dockerfile: the files it COPYs exist, the entrypoint is executable,
#      USER/VOLUME/EXPOSE/ENV/HEALTHCHECK agree with the rest of the repo;
#   2. every package its stages apt-get install resolves with apt-cache;
#   3. the build stage's -dev packages provide every pkg-config module the
#      Makefile asks for, and the runtime stage's packages (with what they
#      depend on) provide every shared library the binaries load (ldd), each
#      library mapped to its package with dpkg -S;
#   4. make install lays out what the runtime stage and the entrypoint expect;
#   5. the entrypoint runs: it must exec /usr/sbin/twigate --config <file>
#      (same PID, so SIGTERM reaches twigate), fall back to the sample, and a
#      daemon started through it with the image's environment passes the
#      image's HEALTHCHECK command and stops with exit 0 on SIGTERM;
#   6. conf/twigate.service: systemd-analyze verify (else a key sanity check),
#      and its ExecStart arguments parse.
#
# Private mount namespaces (root + unshare) let the entrypoint and the unit be
# checked unmodified; CHECK_DOCKER_NO_NS=1 forces the fallbacks used without.
#
# Exit status: 0 when nothing failed. Lines start with "ok", "FAIL", "skip"
# or "note"; the last lines list what could not be checked on this machine.
set -u

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
BUILD=${TWIGATE_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
DOCKERFILE=$ROOT/Dockerfile
UNIT=$ROOT/conf/twigate.service
ENTRY=$ROOT/scripts/docker-entrypoint.sh

failures=0
notchecked=""
hc_tool=""
TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-docker.XXXXXX")
DAEMON_PID=""    # the background job running the entrypoint
TWIG_PID=""      # twigate's own PID, as the stub saw it
cleanup() {
    [ -n "$TWIG_PID" ] && kill "$TWIG_PID" 2>/dev/null
    if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
skip() { echo "skip $*"; notchecked="$notchecked
  - $*"; }
note() { echo "note $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

[ -f "$DOCKERFILE" ] || { echo "FAIL no Dockerfile at $DOCKERFILE"; exit 1; }
for b in twigate kaphila-sim; do
    [ -x "$BUILD/$b" ] || { echo "FAIL $BUILD/$b is missing: build first (make)"; exit 1; }
done

# The Dockerfile with continuation lines joined: one instruction per line.
sed -e ':a' -e '/\\$/{N;s/\\\n/ /;ba' -e '}' "$DOCKERFILE" | grep -v '^[[:space:]]*#' >"$TMP/df"

# "stage<TAB>package" for every apt-get install of every stage.
awk '
    toupper($1) == "FROM" { stage = $2; for (i = 3; i <= NF; i++) if (toupper($i) == "AS") stage = $(i + 1) }
    toupper($1) == "RUN" {
        n = split($0, seg, /&&|;|\|\|/)
        for (s = 1; s <= n; s++) {
            m = split(seg[s], w, /[ \t]+/)
            inst = 0
            for (i = 1; i <= m; i++) {
                if (w[i] == "") continue
                if (!inst) { if (w[i] == "install" && seg[s] ~ /apt(-get)? /) inst = 1; continue }
                if (w[i] ~ /^-/) continue
                gsub(/["\047]/, "", w[i])
                print stage "\t" w[i]
            }
        }
    }' "$TMP/df" >"$TMP/pkgs"
stages=$(awk 'toupper($1) == "FROM" { s = $2; for (i = 3; i <= NF; i++) if (toupper($i) == "AS") s = $(i + 1); print s }' "$TMP/df")
last_stage=$(echo "$stages" | tail -n 1)
runtime_pkgs=$(awk -F '\t' -v s="$last_stage" '$1 == s { print $2 }' "$TMP/pkgs")
build_pkgs=$(awk -F '\t' -v s="$last_stage" '$1 != s { print $2 }' "$TMP/pkgs")

# ---------------------------------------------------------------- 1. Dockerfile
echo "== Dockerfile"
froms=$(awk 'toupper($1) == "FROM" { print $2 }' "$TMP/df" | tr '\n' ' ')
case $froms in
    *debian:bookworm*) ok "stages are based on Debian bookworm ($froms)" ;;
    *) fail "stages are not Debian bookworm: $froms" ;;
esac
[ "$(echo "$stages" | wc -l)" -ge 2 ] && ok "multi-stage ($(echo "$stages" | tr '\n' ' '))" \
    || fail "expected a build stage and a runtime stage"
awk 'toupper($1) == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$TMP/df" |
while read -r src; do
    if [ -e "$ROOT/$src" ]; then echo "ok   COPY source $src exists"; else echo "FAIL COPY source $src is missing"; fi
done >"$TMP/copies"
cat "$TMP/copies"
failures=$((failures + $(grep -c '^FAIL' "$TMP/copies")))
if [ -x "$ENTRY" ]; then ok "scripts/docker-entrypoint.sh is executable (COPY keeps the mode)"
else fail "scripts/docker-entrypoint.sh is not executable: ENTRYPOINT would fail"; fi
if have git && git -C "$ROOT" ls-files -s scripts/docker-entrypoint.sh 2>/dev/null | grep -q '^100755'; then
    ok "git records the entrypoint as 100755 (a fresh clone keeps it executable)"
elif have git && git -C "$ROOT" rev-parse >/dev/null 2>&1; then
    fail "git does not record scripts/docker-entrypoint.sh as executable (100755)"
fi
entry_path=$(awk 'toupper($1) == "ENTRYPOINT"' "$TMP/df" | sed -n 's/.*\["\([^"]*\)".*/\1/p')
if awk 'toupper($1) == "COPY"' "$TMP/df" | grep -q "docker-entrypoint.sh $entry_path\$"; then
    ok "ENTRYPOINT $entry_path is where the entrypoint is copied"
else fail "ENTRYPOINT '$entry_path' is not the COPY destination of docker-entrypoint.sh"; fi
user=$(awk 'toupper($1) == "USER" { u = $2 } END { print u }' "$TMP/df")
case $user in
    ""|root|0|0:*) fail "the runtime stage runs as root (USER '$user')" ;;
    *) ok "runtime stage runs as non-root user '$user'" ;;
esac
volume=$(awk 'toupper($1) == "VOLUME"' "$TMP/df" | sed -n 's/.*\["\([^"]*\)".*/\1/p')
dbenv=$(sed -n 's/.*TWIGATE_DB_PATH=\([^ ]*\).*/\1/p' "$TMP/df" | tail -n 1)
case $dbenv in
    "$volume"/*) ok "database $dbenv is on the volume $volume" ;;
    *) fail "TWIGATE_DB_PATH '$dbenv' is not under VOLUME '$volume'" ;;
esac
expose=$(awk 'toupper($1) == "EXPOSE" { print $2 }' "$TMP/df")
defport=$("$BUILD/twigate" --help | awk '$1 == "listen.port" { print $4 }')
[ "$expose" = "$defport" ] && ok "EXPOSE $expose is the default listen.port" \
    || fail "EXPOSE '$expose' differs from the default listen.port '$defport'"
# Every TWIGATE_ variable the image sets must be a key twigate accepts.
envs=$(awk 'toupper($1) == "ENV" { for (i = 2; i <= NF; i++) if ($i ~ /^TWIGATE_[A-Z0-9_]*=/) print $i }' "$TMP/df")
if [ -n "$envs" ] && env $envs "$BUILD/twigate" --config "$ROOT/conf/twigate.conf" --print-config >"$TMP/envcfg" 2>"$TMP/envcfg.err"; then
    ok "image ENV is accepted by twigate: $(echo $envs | tr '\n' ' ')"
else fail "image ENV refused by twigate: $(cat "$TMP/envcfg.err")"; fi
hc=$(awk 'toupper($1) == "HEALTHCHECK"' "$TMP/df" | sed -n 's/.* CMD \(.*\)$/\1/p')
if [ -n "$hc" ]; then
    ok "HEALTHCHECK: $hc"
    hc_tool=$(echo "$hc" | awk '{ print $1 }')
    echo "$runtime_pkgs" | grep -qx "$hc_tool" && ok "the HEALTHCHECK tool '$hc_tool' is installed in the runtime stage" \
        || fail "the HEALTHCHECK uses '$hc_tool', which the runtime stage does not install"
else fail "no HEALTHCHECK ... CMD"; fi
[ -f "$ROOT/.dockerignore" ] || note "no .dockerignore: build*/ and .git are sent as build context (harmless, slower)"

# ------------------------------------------------------------- 2. apt packages
echo "== apt packages"
codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-unknown}")
if ! have apt-cache; then
    skip "package names (no apt-cache on this machine)"
elif [ "$(apt-cache stats 2>/dev/null | awk -F: '/^Total package names/ { gsub(/[^0-9]/, "", $2); print $2 }')" = "0" ]; then
    skip "package names (apt lists are empty: run apt-get update)"
else
    [ "$codename" = bookworm ] || note "apt answers come from '$codename', not bookworm"
    # One apt-cache call for all names (each call costs most of a second).
    # shellcheck disable=SC2046
    apt-cache show --no-all-versions $(cut -f2 "$TMP/pkgs" | sort -u) 2>/dev/null |
        sed -n 's/^Package: //p' | sort -u >"$TMP/resolved"
    while IFS="$(printf '\t')" read -r stage pkg; do
        if grep -qx "$pkg" "$TMP/resolved"; then ok "$stage: $pkg resolves"
        else fail "$stage: package '$pkg' does not resolve with apt-cache show (unknown or purely virtual)"; fi
    done <"$TMP/pkgs"
fi

# ------------------------------------------------------ 3. libraries -> packages
echo "== libraries"
# Owning packages of files, with one dpkg -S call: "path package" lines in
# $TMP/owners for each path on stdin (usr-merged paths tried both ways).
owners() {
    while read -r f; do
        r=$(readlink -f "$f")
        case $r in /usr/*) alt=${r#/usr} ;; *) alt=/usr$r ;; esac
        echo "$f $r"; echo "$f $alt"
    done | sort -u >"$TMP/owners.try"
    # shellcheck disable=SC2046
    dpkg -S $(cut -d' ' -f2 "$TMP/owners.try" | sort -u) 2>/dev/null |
        sed -n 's/^\([^:,]*\)\(:[^:]*\)\{0,1\}: \(.*\)$/\3 \1/p' >"$TMP/owners.found"
    awk 'NR == FNR { own[$1] = $2; next } ($2 in own) && !seen[$1]++ { print $1, own[$2] }' \
        "$TMP/owners.found" "$TMP/owners.try" >"$TMP/owners"
}
pkg_of() { awk -v f="$1" '$1 == f { print $2; exit }' "$TMP/owners"; }
if ! have dpkg || ! have apt-cache; then
    skip "library to package mapping (needs dpkg and apt-cache)"
else
    # pkg-config modules of the Makefile -> the build stage's -dev packages.
    mods=$(sed -n 's/^PKGS[[:space:]]*:*=[[:space:]]*//p' "$ROOT/Makefile")
    {
        for m in $mods; do echo "$(pkg-config --variable=pcfiledir "$m" 2>/dev/null)/$m.pc"; done
        for b in twigate kaphila-sim; do
            ldd "$BUILD/$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
        done
    } | owners
    for m in $mods; do
        pc=$(pkg-config --variable=pcfiledir "$m" 2>/dev/null)/$m.pc
        p=$(pkg_of "$pc")
        if [ -z "$p" ]; then fail "pkg-config module $m: no installed package owns $pc"
        elif echo "$build_pkgs" | grep -qx "$p"; then ok "pkg-config $m comes from $p (build stage)"
        else fail "pkg-config $m comes from $p, which the build stage does not install"; fi
    done
    # What the runtime packages bring with them (Depends/Pre-Depends, recursively).
    # shellcheck disable=SC2086
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances $runtime_pkgs 2>/dev/null |
        awk '/^[^ <]/ { print $1 } /Depends: [^<]/ { print $2 }' | sed 's/:.*//' | sort -u >"$TMP/closure"
    for b in twigate kaphila-sim; do
        if ldd "$BUILD/$b" | grep -q 'not found'; then
            fail "$b: ldd finds unresolved libraries: $(ldd "$BUILD/$b" | grep 'not found' | tr '\n' ' ')"
            continue
        fi
        # Directly linked libraries must come from a package the Dockerfile names
        # (or libc6): relying on another package's dependency is fragile.
        for so in $(readelf -d "$BUILD/$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            path=$(ldd "$BUILD/$b" | awk -v so="$so" '$1 == so { print $3 }')
            case $so in libasan*|libubsan*|liblsan*|libtsan*) note "$b: $so is a sanitizer runtime (not in a release image)"; continue ;; esac
            p=$(pkg_of "$path")
            if [ "$p" = libc6 ] || echo "$runtime_pkgs" | grep -qx "$p"; then ok "$b needs $so from $p (named in the runtime stage)"
            else fail "$b needs $so ($path) from '$p', which the runtime stage does not name"; fi
        done
        # Everything ldd loads must be in the runtime packages' dependency closure.
        ldd "$BUILD/$b" | awk '$2 == "=>" && $3 ~ /^\// { print $1 " " $3 } $1 ~ /^\// { print $1 " " $1 }' |
        while read -r so path; do
            case $so in libasan*|libubsan*|liblsan*|libtsan*) continue ;; esac
            p=$(pkg_of "$path")
            if [ -n "$p" ] && grep -qx "$p" "$TMP/closure"; then echo "ok   $b loads $so from $p"
            else echo "FAIL $b loads $so from '${p:-no package}', outside what the runtime packages pull in"; fi
        done >"$TMP/ldd.$b"
        n=$(grep -c '^ok' "$TMP/ldd.$b"); bad=$(grep -c '^FAIL' "$TMP/ldd.$b")
        grep '^FAIL' "$TMP/ldd.$b"
        failures=$((failures + bad))
        [ "$bad" -eq 0 ] && ok "$b: all $n libraries ldd loads come with the runtime packages"
    done
fi

# ------------------------------------------------------------- 4. make install
echo "== make install (as the build stage runs it)"
DEST=$TMP/out
if make -s -C "$ROOT" -o all install BUILD="$BUILD" PREFIX=/usr DESTDIR="$DEST" >"$TMP/install.log" 2>&1; then
    ok "make install PREFIX=/usr DESTDIR=... succeeds"
    for f in usr/sbin/twigate usr/bin/kaphila-sim etc/twigate/twigate.conf.sample usr/share/man/man8/twigate.8; do
        [ -e "$DEST/$f" ] && ok "installs /$f" || fail "make install does not install /$f"
    done
    for f in $(grep -o '/[a-z/]*twigate[a-z.]*' "$ENTRY" | sort -u); do
        case $f in /etc/twigate/twigate.conf) continue ;; esac   # mounted by the operator
        [ -e "$DEST$f" ] && ok "the entrypoint's $f is in the image" || fail "the entrypoint uses $f, which the image lacks"
    done
else
    fail "make install failed: $(tail -n 5 "$TMP/install.log")"
fi

# -------------------------------------------------------------- 5. entrypoint
echo "== entrypoint"
STUBDIR=$TMP/sbin
mkdir -p "$STUBDIR"
# Stands in for /usr/sbin/twigate: records its PID and argv, then runs the
# real binary when the config it was given exists.
cat >"$STUBDIR/twigate" <<EOF
#!/bin/sh
echo "\$\$ \$*" >>"$TMP/stub.argv"
for a in "\$@"; do
    if [ "\$prev" = "--config" ] && [ ! -r "\$a" ]; then exit 0; fi
    prev=\$a
done
exec "$BUILD/twigate" "\$@"
EOF
chmod 755 "$STUBDIR/twigate"
# run-entry.sh records its PID, then becomes the entrypoint: the stub seeing
# the same PID proves the chain of execs reaches twigate.
use_ns=0
if [ -z "${CHECK_DOCKER_NO_NS:-}" ] && [ "$(id -u)" = 0 ] && have unshare && unshare -m true 2>/dev/null; then
    # A private mount namespace shows the stub at /usr/sbin/twigate, so the
    # entrypoint runs unmodified; nothing changes outside this process tree.
    use_ns=1
    target=$ENTRY
    note "the entrypoint runs unmodified, with the stub bind-mounted on /usr/sbin in a private mount namespace"
else
    sed "s|/usr/sbin/twigate|$STUBDIR/twigate|g" "$ENTRY" >"$TMP/entry.sh"
    chmod 755 "$TMP/entry.sh"
    target=$TMP/entry.sh
    note "no private mount namespace (needs root and unshare): running a copy of the entrypoint with /usr/sbin/twigate rewritten to the stub"
    notchecked="$notchecked
  - the entrypoint file unmodified (a copy with the binary path rewritten ran)"
fi
printf '#!/bin/sh\necho $$ >"%s"\nexec "%s" "$@"\n' "$TMP/shell.pid" "$target" >"$TMP/run-entry.sh"
chmod 755 "$TMP/run-entry.sh"
run_entry() {   # run_entry ARGS... (environment from the caller)
    : >"$TMP/stub.argv"
    if [ $use_ns = 1 ]; then
        unshare -m sh -c 'mount --bind "$0" /usr/sbin && exec "$@"' "$STUBDIR" "$TMP/run-entry.sh" "$@"
    else
        "$TMP/run-entry.sh" "$@"
    fi
}

cp "$ROOT/conf/twigate.conf" "$TMP/mounted.conf"
if TWIGATE_CONFIG=$TMP/mounted.conf run_entry --print-config >"$TMP/pc.out" 2>"$TMP/pc.err"; then
    read -r stub_pid stub_args <"$TMP/stub.argv"
    [ "$stub_args" = "--config $TMP/mounted.conf --print-config" ] \
        && ok "with TWIGATE_CONFIG set it runs twigate --config \$TWIGATE_CONFIG and passes its arguments" \
        || fail "entrypoint ran twigate with '$stub_args'"
    [ "$stub_pid" = "$(cat "$TMP/shell.pid")" ] \
        && ok "it execs twigate (same PID $stub_pid: SIGTERM from docker stop reaches twigate)" \
        || fail "twigate ran as PID $stub_pid, not the entrypoint's PID $(cat "$TMP/shell.pid"): not exec'd"
    grep -q '^\[listen\]' "$TMP/pc.out" && ok "the real binary loaded the file through the entrypoint" \
        || fail "twigate --print-config through the entrypoint printed no configuration"
else
    fail "entrypoint with TWIGATE_CONFIG failed: $(cat "$TMP/pc.err")"
fi
if [ -e /etc/twigate/twigate.conf ]; then
    note "/etc/twigate/twigate.conf exists on this machine: the no-TWIGATE_CONFIG fallback is not checked"
else
    (unset TWIGATE_CONFIG; run_entry >/dev/null 2>&1)
    read -r _ stub_args <"$TMP/stub.argv"
    [ "$stub_args" = "--config /etc/twigate/twigate.conf.sample" ] \
        && ok "without a mounted config it falls back to the sample shipped in the image" \
        || fail "without a config the entrypoint ran twigate with '$stub_args'"
fi
TWIGATE_CONFIG=$TMP/does-not-exist run_entry >/dev/null 2>&1
read -r _ stub_args <"$TMP/stub.argv"
case $stub_args in
    *twigate.conf.sample*) note "an unreadable TWIGATE_CONFIG also falls back to the sample (demo account) instead of failing" ;;
    *) ok "an unreadable TWIGATE_CONFIG is not silently replaced ($stub_args)" ;;
esac

# A daemon started through the entrypoint with the image's environment, probed
# with the image's HEALTHCHECK command. Loopback instead of the image's
# 0.0.0.0, so the check exposes nothing.
if [ -n "$hc" ] && have "$hc_tool"; then
    : >"$TMP/shell.pid"
    (
        cd "$TMP" || exit 1
        # shellcheck disable=SC2086
        export $envs
        export TWIGATE_LISTEN_ADDRESS=127.0.0.1 TWIGATE_LISTEN_PORT=0 TWIGATE_SIM_PORT=0 \
            TWIGATE_DB_PATH="$TMP/image.db" TWIGATE_CONFIG="$TMP/mounted.conf"
        run_entry >"$TMP/daemon.out" 2>"$TMP/daemon.err"
    ) &
    DAEMON_PID=$!
    port=""
    i=0
    while [ $i -lt 100 ] && [ -z "$port" ]; do
        port=$(sed -n 's|^twigate .* listening on http://[^:]*:\([0-9]*\).*|\1|p' "$TMP/daemon.out" 2>/dev/null)
        [ -n "$port" ] || sleep 0.1
        i=$((i + 1))
    done
    TWIG_PID=$(cut -d' ' -f1 "$TMP/stub.argv" 2>/dev/null)
    if [ -z "$port" ]; then
        fail "twigate started through the entrypoint did not come up: $(tail -n 3 "$TMP/daemon.err")"
    else
        hc_run=$(echo "$hc" | sed 's/ || exit 1$//')
        if TWIGATE_LISTEN_PORT=$port sh -c "$hc_run" >/dev/null 2>&1; then
            ok "the HEALTHCHECK command passes against twigate started by the entrypoint (port $port)"
        else fail "the HEALTHCHECK command fails against a running twigate"; fi
        tpid=$(cat "$TMP/shell.pid")
        kill -TERM "$tpid" 2>/dev/null
        i=0
        while [ $i -lt 150 ] && kill -0 "$tpid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
        wait "$DAEMON_PID"; rc=$?
        DAEMON_PID=""
        if [ -n "$TWIG_PID" ] && kill -0 "$TWIG_PID" 2>/dev/null; then
            fail "twigate (PID $TWIG_PID) still runs after SIGTERM to the entrypoint's PID"
            kill "$TWIG_PID"
        fi
        TWIG_PID=""
        if [ $rc -eq 0 ]; then ok "SIGTERM to the container's main process stops twigate with exit 0"
        else fail "twigate exited with $rc after SIGTERM (log: $(tail -n 3 "$TMP/daemon.err"))"; fi
        if TWIGATE_LISTEN_PORT=$port sh -c "$hc_run" >/dev/null 2>&1; then
            fail "the HEALTHCHECK command still passes after twigate stopped"
        else ok "the HEALTHCHECK command fails once twigate is gone"; fi
    fi
else
    skip "HEALTHCHECK run ('${hc_tool:-none}' not installed here)"
fi

# ------------------------------------------------------------ 6. systemd unit
echo "== systemd unit"
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
exe=${exec_start%% *}
[ "$exe" = /usr/sbin/twigate ] && ok "ExecStart runs /usr/sbin/twigate (make install PREFIX=/usr)" \
    || note "ExecStart runs '$exe'; make install PREFIX=/usr puts twigate in /usr/sbin"
args=${exec_start#"$exe"}
# shellcheck disable=SC2086
if eval "set -- $args"; then
    conf=""; prev=""; newargs=""
    for a in "$@"; do
        if [ "$prev" = --config ]; then conf=$a; a=$ROOT/conf/twigate.conf; fi
        newargs="$newargs '$a'"
        prev=$a
    done
    if eval "\"$BUILD/twigate\" $newargs --print-config" >"$TMP/unit.cfg" 2>"$TMP/unit.err"; then
        ok "ExecStart's arguments parse (with the sample config in place of $conf)"
        unit_db=$(awk -F' = ' '/^\[db\]/ { d = 1; next } /^\[/ { d = 0 } d && $1 == "path" { gsub(/"/, "", $2); print $2 }' "$TMP/unit.cfg")
        state=$(sed -n 's/^StateDirectory=//p' "$UNIT")
        case $unit_db in
            /var/lib/"$state"/*) ok "the database $unit_db is in StateDirectory=$state" ;;
            *) fail "the database '$unit_db' is not in StateDirectory '$state'" ;;
        esac
    else fail "ExecStart's arguments are refused: $(cat "$TMP/unit.err")"; fi
fi
stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s*$/\1/p' "$UNIT")
grace=$(awk -F' = ' '$1 == "grace_ms" { print $2 }' "$ROOT/conf/twigate.conf")
if [ -n "$stop_s" ] && [ -n "$grace" ] && [ $((stop_s * 1000)) -gt "$grace" ]; then
    ok "TimeoutStopSec=${stop_s}s leaves room for shutdown.grace_ms=$grace"
else fail "TimeoutStopSec '${stop_s:-unset}' does not exceed shutdown.grace_ms '$grace'"; fi
for kv in NoNewPrivileges=yes ProtectSystem=strict PrivateTmp=yes; do
    grep -qx "$kv" "$UNIT" && ok "hardening $kv" || fail "the unit lacks $kv"
done
grep -qE '^(DynamicUser=yes|User=[a-z_][a-z0-9_-]*)$' "$UNIT" && ok "runs as $(grep -E '^(DynamicUser|User)=' "$UNIT" | tr '\n' ' ')" \
    || fail "the unit sets neither DynamicUser=yes nor User="
grep -q '^StateDirectory=' "$UNIT" && ok "StateDirectory=$(sed -n 's/^StateDirectory=//p' "$UNIT")" || fail "no StateDirectory="
if grep -q '^DynamicUser=yes' "$UNIT"; then
    note "DynamicUser=yes: /etc/twigate/twigate.conf must be readable by a transient UID (world-readable) to be loaded, and again on every SIGHUP"
fi
if have systemd-analyze; then
    if [ -z "${CHECK_DOCKER_NO_NS:-}" ] && [ "$(id -u)" = 0 ] && have unshare && unshare -m true 2>/dev/null &&
        [ -x "$DEST/usr/sbin/twigate" ]; then
        # verify checks that ExecStart's binary exists and that man:twigate(8)
        # resolves: show it the installed tree, in a private mount namespace.
        if MANPATH=$DEST/usr/share/man unshare -m sh -c 'mount --bind "$0" /usr/sbin && exec systemd-analyze verify "$1"' \
                "$DEST/usr/sbin" "$UNIT" >"$TMP/verify.out" 2>&1; then
            ok "systemd-analyze verify conf/twigate.service (with the installed binary and man page)"
        else fail "systemd-analyze verify: $(cat "$TMP/verify.out")"; fi
        if MANPATH=$DEST/usr/share/man unshare -m sh -c 'mount --bind "$0" /usr/sbin && exec systemd-analyze security --offline=yes "$1"' \
                "$DEST/usr/sbin" "$UNIT" >"$TMP/security.out" 2>&1; then
            note "systemd-analyze security: $(grep -o 'Overall exposure level.*' "$TMP/security.out")"
        fi
    else
        systemd-analyze verify "$UNIT" >"$TMP/verify.out" 2>&1
        grep -v -e 'Command /usr/sbin/twigate is not executable' -e "man twigate(8)" "$TMP/verify.out" |
            grep . >"$TMP/verify.rest"
        if [ -s "$TMP/verify.rest" ]; then fail "systemd-analyze verify: $(cat "$TMP/verify.rest")"
        else ok "systemd-analyze verify (ignoring the not-installed /usr/sbin/twigate and man page)"; fi
        notchecked="$notchecked
  - that systemd finds ExecStart's binary and man:twigate(8) at their installed paths"
    fi
else
    # No systemd-analyze: every line is a comment, a [Section] or Key=value
    # with a key systemd knows in that section.
    awk '
        /^[[:space:]]*([#;]|$)/ { next }
        /^\[(Unit|Service|Install)\]$/ { sec = $0; next }
        /^\[/ { print "unknown section " $0; next }
        !/^[A-Za-z]+=/ { print "not Key=value: " $0; next }
        {
            k = substr($0, 1, index($0, "=") - 1)
            if (sec == "[Unit]" && k !~ /^(Description|Documentation|After|Wants|Requires|Before)$/) print "unexpected [Unit] key " k
            if (sec == "[Install]" && k !~ /^(WantedBy|Alias|RequiredBy)$/) print "unexpected [Install] key " k
            if (sec == "") print "key before any section: " k
        }' "$UNIT" >"$TMP/unit.bad"
    if [ -s "$TMP/unit.bad" ]; then fail "unit syntax: $(cat "$TMP/unit.bad")"; else ok "unit syntax sanity check"; fi
    skip "systemd-analyze verify (systemd-analyze not installed)"
fi

# ------------------------------------------------------------------ summary
echo "== not checked on this machine"
echo "  - docker build (no Docker engine): the build stage compiling in a clean bookworm"
echo "  - docker run: the image's user, volume ownership and HEALTHCHECK timing in a real container"
echo "  - systemd actually starting the unit (DynamicUser, StateDirectory, sandboxing at run time)$notchecked"
if [ "$failures" -gt 0 ]; then
    echo "check-docker: $failures check(s) FAILED"
    exit 1
fi
echo "check-docker: all checks passed"
