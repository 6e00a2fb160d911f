#!/usr/bin/env bash
# The test command: sets up what the tests need (Docker engine, HAProxy, images), then runs
# the linters and the whole suite against the real components. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/provision.sh
python3 -m ruff check bluegreen orchestrator environments backups tests bench
python3 -m mypy
python3 -m deptry .   # every third-party import declared (in its extra), none unused
lint-imports         # the layers of docs/architecture.md, and no import circles
python3 -m pytest "$@"
