#!/usr/bin/env bash
# The demo: set up the machine, then `bluegreen demo`, which tells the whole story in a scratch
# deployment with its own ports (releases, a faulty one rolled back with its schema change, a killed
# colour, an alert through Alertmanager, a drill) and ends with a summary of figures measured in the
# run. Arguments go to `bluegreen demo` (--keep, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
PROVISION_FOR=demo scripts/provision.sh
exec bluegreen demo "$@"
