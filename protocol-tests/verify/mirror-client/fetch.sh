#!/usr/bin/env bash
# The classpath of the MM2 checkpoint reader (connect-mirror-client), fetched once: see ../fetch-jars.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/../fetch-jars.sh" mirror-client
