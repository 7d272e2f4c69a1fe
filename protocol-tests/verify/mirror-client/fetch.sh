#!/usr/bin/env bash
# Fetches the jars of the independent MM2 checkpoint reader (Apache Kafka's
# connect-mirror-client and its dependencies) from Maven Central into a cache dir, and prints
# the classpath for TranslateOffsets.java on stdout:
#
#   java -cp "$(protocol-tests/verify/mirror-client/fetch.sh)" \
#       protocol-tests/verify/mirror-client/TranslateOffsets.java <bootstrap> <alias> <group>
#
# Cached like scripts/kafka/fetch.sh: a marker holding the pom's checksum is written once the
# jars are complete, so later calls are instant and a changed pom.xml triggers a fresh fetch.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"
cache="${KFERRY_CACHE:-$HOME/.cache/kferry}"
dest="$cache/mirror-client"
libs="$dest/libs"
marker="$dest/.complete"

log() { printf 'mirror-client/fetch.sh: %s\n' "$*" >&2; }

# Quiet, batch Maven with Debian's stray ANSI resets stripped; stdout carries only the classpath.
mvn_quiet() {
  mvn -q -B "$@" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2
}

stamp="$(sha256sum "$pom" | cut -d' ' -f1)"
if [[ -f "$marker" && "$(cat "$marker")" == "$stamp" && -d "$libs" ]]; then
  echo "$libs/*"
  exit 0
fi

command -v mvn >/dev/null || { log "mvn (Maven) is required"; exit 1; }

mkdir -p "$dest"
# Serialise concurrent fetches (e.g. two test binaries on a fresh machine).
exec 9>"$dest/.lock"
flock 9
if [[ -f "$marker" && "$(cat "$marker")" == "$stamp" && -d "$libs" ]]; then
  echo "$libs/*"
  exit 0
fi

log "fetching connect-mirror-client into $libs (Maven Central, cached in ~/.m2)"
tmp="$dest/libs.tmp"
rm -rf "$tmp"
mvn_quiet -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp"

# Swap in atomically so an interrupted fetch never leaves a half-filled libs dir behind.
rm -rf "$libs"
mv "$tmp" "$libs"
echo "$stamp" >"$marker"
echo "$libs/*"
