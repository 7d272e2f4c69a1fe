#!/usr/bin/env bash
# Apache Kafka's own kafka-configs tool at VERSION (the jars fetch.sh caches), for tests that
# set up what kferry must cope with, such as a client quota:
#
#   scripts/kafka/configs.sh 4.4.0 --bootstrap-server 127.0.0.1:19192 --alter \
#     --entity-type clients --entity-name kferry-x --add-config producer_byte_rate=1048576
#
# The tool's class moved from core (kafka.admin) to tools (org.apache.kafka.tools) in 4.0.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
(($# >= 1)) || { sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
version="$1"
shift
libs="$("$here/fetch.sh" "$version")"
case "$version" in
  3.*) class=kafka.admin.ConfigCommand ;;
  *) class=org.apache.kafka.tools.ConfigCommand ;;
esac
exec java -Xmx256m -Dlog4j2.level=warn -cp "$libs/*" "$class" "$@"
