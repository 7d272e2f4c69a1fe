#!/usr/bin/env bash
# Fetches the jars a Java verifier names in its pom.xml (mirror-client: Apache Kafka's
# connect-mirror-client; connect: a Kafka Connect worker with the file connectors) from
# Maven Central into a cache dir, and prints the classpath on stdout:
#
#   protocol-tests/verify/fetch-jars.sh mirror-client   # or: connect
#   java -cp "$(protocol-tests/verify/mirror-client/fetch.sh)" \
#       protocol-tests/verify/mirror-client/TranslateOffsets.java <bootstrap> <alias> <group>
#
# Cached like scripts/kafka/fetch.sh: a marker holding the pom's checksum is written once the
# jars are complete, so later calls are instant and a changed pom.xml triggers a fresh fetch.
set -euo pipefail

name="${1:?usage: fetch-jars.sh mirror-client|connect}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/$name/pom.xml"
[[ -f "$pom" ]] || { printf 'fetch-jars.sh: no verifier %s (no %s)\n' "$name" "$pom" >&2; exit 2; }
cache="${KFERRY_CACHE:-$HOME/.cache/kferry}"
dest="$cache/$name"
libs="$dest/libs"
marker="$dest/.complete"

log() { printf 'fetch-jars.sh %s: %s\n' "$name" "$*" >&2; }

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

log "fetching the jars of $pom into $libs (Maven Central, cached in ~/.m2)"
tmp="$dest/libs.tmp"
rm -rf "$tmp"
mvn_quiet -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp"

# Swap in atomically so an interrupted fetch never leaves a half-filled libs dir behind.
rm -rf "$libs"
mv "$tmp" "$libs"
echo "$stamp" >"$marker"
echo "$libs/*"
