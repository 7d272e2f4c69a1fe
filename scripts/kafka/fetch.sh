#!/usr/bin/env bash
# Fetches the Apache Kafka jars (broker, KRaft controller, storage tool) of one version from
# Maven Central into a cache dir and prints that libs dir on stdout.
#
#   scripts/kafka/fetch.sh [VERSION]      (default 4.4.0; 3.9.2 is the compatibility version)
#
# Cached: a marker holding the pom's checksum is written once the jars are complete, so later
# calls are instant and a changed pom.xml triggers a fresh fetch.
set -euo pipefail

version="${1:-4.4.0}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"
cache="${KFERRY_CACHE:-$HOME/.cache/kferry}"
dest="$cache/kafka-$version"
libs="$dest/libs"
marker="$dest/.complete"

log() { printf 'fetch.sh: %s\n' "$*" >&2; }

# Quiet, batch Maven; Debian's Maven still emits bare ANSI resets with -q, so strip them and
# the empty lines they leave. Output goes to stderr: stdout carries only the libs dir.
mvn_quiet() {
  mvn -q -B "$@" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2
}

# The marker records which pom the jars came from; any other pom means refetch.
stamp="$(sha256sum "$pom" | cut -d' ' -f1) kafka-$version"
if [[ -f "$marker" && "$(cat "$marker")" == "$stamp" && -d "$libs" ]]; then
  echo "$libs"
  exit 0
fi

command -v mvn >/dev/null || { log "mvn (Maven) is required"; exit 1; }
command -v java >/dev/null || { log "java is required"; exit 1; }

mkdir -p "$dest"
# Serialise concurrent fetches of the same version (e.g. two terminals).
exec 9>"$dest/.lock"
flock 9
if [[ -f "$marker" && "$(cat "$marker")" == "$stamp" && -d "$libs" ]]; then
  echo "$libs"
  exit 0
fi

log "fetching Apache Kafka $version into $libs (Maven Central, cached in ~/.m2)"
tmp="$dest/libs.tmp"
rm -rf "$tmp"
mvn_quiet -f "$pom" -Dkafka.version="$version" \
  dependency:copy-dependencies -DoutputDirectory="$tmp"

# Kafka 4.x logs through SLF4J 1.7 and ships log4j2 in its distribution, but the Maven poms
# do not declare the SLF4J->log4j2 binding, so without it the broker logs nothing at all
# ("NOP logger"). 3.9 declares slf4j-reload4j itself. Add the binding matching log4j-core.
shopt -s nullglob
bindings=("$tmp"/slf4j-reload4j-*.jar "$tmp"/log4j-slf4j*-impl-*.jar)
cores=("$tmp"/log4j-core-*.jar)
if (( ${#bindings[@]} == 0 && ${#cores[@]} == 1 )); then
  log4j_version="$(basename "${cores[0]}" .jar)"
  log4j_version="${log4j_version#log4j-core-}"
  binding=log4j-slf4j-impl            # for slf4j-api 1.7.x
  if compgen -G "$tmp/slf4j-api-2.*.jar" >/dev/null; then
    binding=log4j-slf4j2-impl
  fi
  log "adding $binding $log4j_version (SLF4J binding missing from the Kafka poms)"
  mvn_quiet -f "$pom" dependency:copy \
    -Dartifact="org.apache.logging.log4j:$binding:$log4j_version" \
    -DoutputDirectory="$tmp"
fi

# Swap in atomically so an interrupted fetch never leaves a half-filled libs dir behind.
rm -rf "$libs"
mv "$tmp" "$libs"
echo "$stamp" >"$marker"
echo "$libs"
