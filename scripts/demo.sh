#!/usr/bin/env bash
# The demo: set up the machine, create a deployment in ./demo, bring blue up behind HAProxy,
# and send a prediction through the proxy; the prediction is then read back from the database.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/provision.sh
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

[ -f demo/bluegreen.toml ] || bluegreen init demo
cd demo

step "bluegreen up"
bluegreen up

step "a prediction through the proxy"
curl -sS --fail-with-body -X POST http://127.0.0.1:8080/predict \
  -H 'Content-Type: application/json' -d '{"features": [6.3, 2.5, 5.0, 1.9]}'
echo

step "the prediction, recorded in the application database (data/app.db)"
python3 - <<'PY'
import sqlite3
row = sqlite3.connect("data/app.db").execute(
    "SELECT id, created_at, model_version, prediction, score FROM predictions ORDER BY id DESC LIMIT 1").fetchone()
print(dict(zip(("id", "created_at", "model_version", "prediction", "score"), row)))
PY

step "bluegreen status"
bluegreen status

step "done"
echo "The deployment keeps running. Stop it with: (cd demo && bluegreen down)"
