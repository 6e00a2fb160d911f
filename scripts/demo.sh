#!/usr/bin/env bash
# The demo: set up the machine, create a deployment in ./demo, bring blue up behind HAProxy,
# send a prediction through the proxy (and read it back from the database), release v2 step by
# step, watch a bad release get stopped by the quality gate, roll back, and show the history.
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

step "bluegreen release bluegreen-model:v2   (health gate, then 10 -> 25 -> 50 -> 100 %, 3 s bake per step)"
# Some traffic while the weights move, so each step's analysis has requests to judge.
( for _ in $(seq 1 300); do
    curl -s -o /dev/null -X POST http://127.0.0.1:8080/predict -d '{"features": [5.9, 3.0, 5.1, 1.8]}'
    sleep 0.05
  done ) &
traffic=$!
bluegreen release bluegreen-model:v2 --bake 3s
kill "$traffic" 2>/dev/null || true

step "bluegreen rollback   (v1 is still warm, so this is a weight change)"
bluegreen rollback --reason "demo"

step "a bad release: v2 with a deliberately worse model is stopped by the quality gate"
code=0
bluegreen release bluegreen-model:v2 --env MODEL_QUALITY=degraded --bake 1s || code=$?
if [ "$code" -eq 0 ]; then
  echo "unexpected: the degraded model was promoted" >&2; exit 1
fi
echo "(exit code $code: a check failed, as it should; traffic stayed on v1)"

step "bluegreen status"
bluegreen status

step "bluegreen history"
bluegreen history --limit 4

step "done"
echo "The deployment keeps running. Stop it with: (cd demo && bluegreen down)"
