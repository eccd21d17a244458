#!/usr/bin/env bash
# Installs every Debian package (and the npm Twilio SDK for tests) that twigate
# needs and that is missing. Idempotent: when everything is present it only
# runs dpkg-query and returns in well under a second.
#
# usage: scripts/install-deps.sh [build|test|bench]...   (default: build)
set -euo pipefail

want=()
node_wanted=0
for set in "${@:-build}"; do
  case "$set" in
    build) want+=(build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev
                  libjansson-dev libxml2-dev libsqlite3-dev libssl-dev libmp3lame-dev
                  libpq-dev) ;;  # the PostgreSQL backend (issue 21) links libpq
    test)  want+=(libcmocka-dev python3 python3-twilio python3-pytest python3-jsonschema
                  python3-requests python3-pytest-xdist   # make integration -n 3
                  curl sqlite3 clang libclang-rt-14-dev
                  chromium    # the console's browser test (puppeteer-core drives it)
                  postgresql haproxy python3-psycopg2)  # pg: the scale-out harness (issue 21)
           node_wanted=1 ;;
    bench) want+=(wrk hyperfine nginx-light curl sqlite3
                  postgresql) ; node_wanted=1 ;;  # pg: the cluster section (issue 21)
    *) echo "install-deps: unknown set '$set' (build|test|bench)" >&2; exit 2 ;;
  esac
done

# Node may come from outside Debian (as on these machines, where Debian's npm
# would conflict with the newer node); only ask apt for it when it is absent.
if [ "$node_wanted" = 1 ]; then
  command -v node >/dev/null || want+=(nodejs)
  command -v npm  >/dev/null || want+=(npm)
fi

missing=()
for p in "${want[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # An update is only needed when a package is missing; it is what makes a
  # fresh machine (empty apt lists) work.
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The official node SDK comes from npm, pinned in tests/node/package.json.
for set in "$@"; do
  if [ "$set" = test ] || [ "$set" = bench ]; then
    here=$(cd "$(dirname "$0")/.." && pwd)
    if [ -f "$here/tests/node/package.json" ] && { [ ! -d "$here/tests/node/node_modules/twilio" ] ||
         [ ! -d "$here/tests/node/node_modules/puppeteer-core" ]; }; then
      echo "install-deps: npm install in tests/node"
      (cd "$here/tests/node" && PUPPETEER_SKIP_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error)
    fi
  fi
  # The Prism mock server, the benchmarks' baseline, pinned in bench/package-lock.json.
  if [ "$set" = bench ]; then
    here=$(cd "$(dirname "$0")/.." && pwd)
    if [ -f "$here/bench/package.json" ] && [ ! -x "$here/bench/node_modules/.bin/prism" ]; then
      echo "install-deps: npm ci in bench"
      (cd "$here/bench" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  fi
done
exit 0
