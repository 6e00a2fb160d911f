"""Reference model server: an iris classifier over HTTP, with faults on demand.

Endpoints: GET /health, GET /version, POST /predict, GET /metrics (Prometheus text).
Every prediction is recorded in the application database named by DATABASE_URL
(sqlite:////path/in/container or postgresql://…).

Environment:
  PORT, HOST               where to listen (default 0.0.0.0:8000)
  MODEL_VERSION            set at build time; reported by /version and on every prediction
  MODEL_IMAGE              the image reference, passed by the orchestrator; reported by /version
  MODEL_VARIANT            "model" (default) or "baseline": a rules-based fallback, no ML
  MODEL_QUALITY            "good" (default) or "degraded": a deliberately worse model
  FAULT_ERROR_RATE         share of /predict calls answered 500, 0..1
  FAULT_LATENCY_MS         milliseconds added to each /predict call
  FAULT_CRASH_ON_START     "1"/"true": exit with status 3 right after start
  FAULT_UNHEALTHY          "1"/"true": GET /health answers 503 (a server that never becomes healthy)
Standard library only, besides scikit-learn (and psycopg for PostgreSQL).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import pickle
import random
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASSES = ("setosa", "versicolor", "virginica")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MODELS_DIR = Path(os.environ.get("MODELS_DIR", "/app/models"))


class ConfigurationError(Exception):
    pass


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def read_config(env: dict[str, str]) -> dict[str, Any]:
    """Validate the environment; every bad value is named with what is allowed."""
    cfg: dict[str, Any] = {
        "host": env.get("HOST", "0.0.0.0"),
        "version": env.get("MODEL_VERSION", "dev"),
        "image": env.get("MODEL_IMAGE", ""),
        "variant": env.get("MODEL_VARIANT", "model") or "model",
        "quality": env.get("MODEL_QUALITY", "good") or "good",
        "database_url": env.get("DATABASE_URL", ""),
        "crash": _truthy(env.get("FAULT_CRASH_ON_START", "")),
        "unhealthy": _truthy(env.get("FAULT_UNHEALTHY", "")),
    }
    try:
        cfg["port"] = int(env.get("PORT", "8000"))
    except ValueError:
        raise ConfigurationError(f"PORT={env.get('PORT')!r} must be an integer") from None
    try:
        cfg["error_rate"] = float(env.get("FAULT_ERROR_RATE", "0") or 0)
    except ValueError:
        raise ConfigurationError(f"FAULT_ERROR_RATE={env['FAULT_ERROR_RATE']!r} must be a number in 0..1") from None
    if not 0 <= cfg["error_rate"] <= 1:
        raise ConfigurationError(f"FAULT_ERROR_RATE={cfg['error_rate']} must be in 0..1")
    try:
        cfg["latency_ms"] = float(env.get("FAULT_LATENCY_MS", "0") or 0)
    except ValueError:
        raise ConfigurationError(f"FAULT_LATENCY_MS={env['FAULT_LATENCY_MS']!r} must be a number ≥ 0") from None
    if cfg["latency_ms"] < 0:
        raise ConfigurationError(f"FAULT_LATENCY_MS={cfg['latency_ms']} must be ≥ 0")
    if cfg["variant"] not in ("model", "baseline"):
        raise ConfigurationError(f"MODEL_VARIANT={cfg['variant']!r} must be 'model' or 'baseline'")
    if cfg["quality"] not in ("good", "degraded"):
        raise ConfigurationError(f"MODEL_QUALITY={cfg['quality']!r} must be 'good' or 'degraded'")
    return cfg


class BaselineModel:
    """The rules-based fallback: two thresholds on the petals, no learned parameters."""

    name = "rules"

    def predict(self, rows: list[list[float]]) -> list[tuple[int, float]]:
        out = []
        for _sl, _sw, petal_length, petal_width in rows:
            if petal_length < 2.45:
                out.append((0, 1.0))
            elif petal_width < 1.75:
                out.append((1, 0.9))
            else:
                out.append((2, 0.9))
        return out


class LearnedModel:
    def __init__(self, path: Path) -> None:
        with open(path, "rb") as fh:
            saved = pickle.load(fh)
        self.model = saved["model"]
        self.columns = saved["features"]
        self.name = type(self.model).__name__

    def predict(self, rows: list[list[float]]) -> list[tuple[int, float]]:
        x = [[row[i] for i in self.columns] for row in rows] if self.columns else rows
        probabilities = self.model.predict_proba(x)
        return [(int(p.argmax()), float(p.max())) for p in probabilities]


def load_model(cfg: dict[str, Any]) -> BaselineModel | LearnedModel:
    if cfg["variant"] == "baseline":
        return BaselineModel()
    return LearnedModel(MODELS_DIR / ("degraded.pkl" if cfg["quality"] == "degraded" else "good.pkl"))


class PredictionStore:
    """Records predictions; one connection behind a lock (writes serialise in SQLite anyway)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.conn: Any = None
        self.kind = "none" if not url else ("sqlite" if url.startswith("sqlite:///") else "postgresql")
        if self.kind != "none":
            self._connect()

    def _connect(self) -> None:
        if self.kind == "sqlite":
            path = self.url[len("sqlite:///") :]  # sqlite:////abs/path or sqlite:///relative/path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " created_at TEXT NOT NULL, model_version TEXT NOT NULL, variant TEXT NOT NULL,"
                " features TEXT NOT NULL, prediction TEXT NOT NULL, score REAL NOT NULL)"
            )
            self.conn = conn
        else:
            import psycopg

            pg = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            pg.execute(
                "CREATE TABLE IF NOT EXISTS predictions (id BIGSERIAL PRIMARY KEY,"
                " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), model_version TEXT NOT NULL,"
                " variant TEXT NOT NULL, features TEXT NOT NULL, prediction TEXT NOT NULL, score REAL NOT NULL)"
            )
            self.conn = pg

    def ping(self) -> bool:
        if self.kind == "none":
            return True
        with self.lock:
            try:
                self.conn.execute("SELECT 1")
                return True
            except Exception:
                self._reconnect_quietly()
                return False

    def _reconnect_quietly(self) -> None:
        # Health answers 503 until the database is back; the next ping tries again.
        with contextlib.suppress(Exception):
            self._connect()

    def record(self, version: str, variant: str, rows: list[list[float]], preds: list[tuple[int, float]]) -> list[int]:
        if self.kind == "none":
            return []
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ids = []
        with self.lock:
            for row, (cls, score) in zip(rows, preds, strict=True):
                params = (now, version, variant, json.dumps(row), CLASSES[cls], score)
                if self.kind == "sqlite":
                    cur = self.conn.execute(
                        "INSERT INTO predictions (created_at, model_version, variant, features, prediction, score)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        params,
                    )
                    ids.append(int(cur.lastrowid))
                else:
                    cur = self.conn.execute(
                        "INSERT INTO predictions (created_at, model_version, variant, features, prediction, score)"
                        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                        params,
                    )
                    ids.append(int(cur.fetchone()[0]))
        return ids


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.predictions: dict[str, int] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self.lock:
            key = (method, path, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            if path == "/predict":
                self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
                self.latency_sum += seconds
                self.latency_count += 1

    def count_prediction(self, label: str) -> None:
        with self.lock:
            self.predictions[label] = self.predictions.get(label, 0) + 1

    def render(self, info: dict[str, str]) -> str:
        with self.lock:
            out = ["# HELP model_info The model this server answers with.", "# TYPE model_info gauge"]
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(info.items()))
            out.append(f"model_info{{{labels}}} 1")
            out += ["# HELP http_requests_total Requests by method, path and status.",
                    "# TYPE http_requests_total counter"]
            for (method, path, status), n in sorted(self.requests.items()):
                out.append(f'http_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}')
            out += ["# HELP predict_latency_seconds Latency of POST /predict.",
                    "# TYPE predict_latency_seconds histogram"]
            cumulative = 0
            for bound, n in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'predict_latency_seconds_bucket{{le="{le}"}} {cumulative}')
            out.append(f"predict_latency_seconds_sum {self.latency_sum}")
            out.append(f"predict_latency_seconds_count {self.latency_count}")
            out += ["# HELP predictions_total Predictions by class.", "# TYPE predictions_total counter"]
            for label, n in sorted(self.predictions.items()):
                out.append(f'predictions_total{{class="{label}"}} {n}')
            return "\n".join(out) + "\n"


class BadRequest(Exception):
    pass


def parse_rows(body: bytes) -> tuple[list[list[float]], bool]:
    """Accept {"features": [4 numbers] | {name: number}} or {"instances": [...]}; return rows, batch."""
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise BadRequest("body must be JSON") from None
    if not isinstance(doc, dict) or ("features" not in doc and "instances" not in doc):
        raise BadRequest('body must be {"features": [...]} or {"instances": [[...], ...]}')
    batch = "instances" in doc
    items = doc["instances"] if batch else [doc["features"]]
    if not isinstance(items, list) or not items or len(items) > 1000:
        raise BadRequest("instances must be a list of 1 to 1000 feature rows")
    rows = []
    for item in items:
        if isinstance(item, dict):
            missing = [f for f in FEATURES if f not in item]
            if missing:
                raise BadRequest(f"missing features: {', '.join(missing)}")
            item = [item[f] for f in FEATURES]
        if not isinstance(item, list) or len(item) != len(FEATURES):
            raise BadRequest(f"features must be {len(FEATURES)} numbers: {', '.join(FEATURES)}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in item):
            raise BadRequest("features must be numbers")
        rows.append([float(v) for v in item])
    return rows, batch


class App:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.model = load_model(cfg)
        self.store = PredictionStore(cfg["database_url"])
        self.metrics = Metrics()
        self.started = time.time()
        self.info = {
            "version": cfg["version"],
            "image": cfg["image"],
            "variant": cfg["variant"],
            "quality": cfg["quality"],
            "algorithm": self.model.name,
        }

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if method == "GET" and path == "/health":
            if self.cfg["unhealthy"]:
                return _json(503, {"status": "unhealthy", "reason": "injected fault (FAULT_UNHEALTHY)"})
            if not self.store.ping():
                return _json(503, {"status": "unavailable", "reason": "database unreachable"})
            return _json(200, {"status": "ok", "version": self.cfg["version"]})
        if method == "GET" and path == "/version":
            return _json(200, self.info)
        if method == "GET" and path == "/metrics":
            return 200, "text/plain; version=0.0.4", self.metrics.render(self.info).encode()
        if path == "/predict":
            if method != "POST":
                return _json(405, {"error": "use POST"})
            return self.predict(body)
        return _json(404, {"error": f"no route {method} {path}"})

    def predict(self, body: bytes) -> tuple[int, str, bytes]:
        if self.cfg["latency_ms"]:
            time.sleep(self.cfg["latency_ms"] / 1000)
        if self.cfg["error_rate"] and random.random() < self.cfg["error_rate"]:
            return _json(500, {"error": "injected fault (FAULT_ERROR_RATE)"})
        try:
            rows, batch = parse_rows(body)
        except BadRequest as exc:
            return _json(400, {"error": str(exc)})
        preds = self.model.predict(rows)
        try:
            ids = self.store.record(self.cfg["version"], self.cfg["variant"], rows, preds)
        except Exception as exc:
            print(f"database write failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return _json(503, {"error": "could not record the prediction: database unavailable"})
        results = []
        for i, (cls, score) in enumerate(preds):
            self.metrics.count_prediction(CLASSES[cls])
            results.append({
                "prediction": CLASSES[cls],
                "class_id": cls,
                "score": round(score, 6),
                "prediction_id": ids[i] if ids else None,
            })
        common = {"model_version": self.cfg["version"], "variant": self.cfg["variant"]}
        if batch:
            return _json(200, {"predictions": results, **common})
        return _json(200, {**results[0], **common})


def _json(status: int, doc: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(doc).encode()


class InFlight:
    """Requests being answered now, so that a stop can wait for them instead of cutting them off."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def __enter__(self) -> None:
        with self.cond:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.count -= 1
            self.cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count == 0, timeout)


def make_handler(app: App, inflight: InFlight) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive with the proxy

        def _serve(self, method: str) -> None:
            with inflight:
                self._answer(method)

        def _answer(self, method: str) -> None:
            start = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            try:
                status, ctype, payload = app.handle(method, path, body)
            except Exception as exc:  # a bug must answer 500, not drop the connection
                print(f"unhandled error: {type(exc).__name__}: {exc}", file=sys.stderr)
                status, ctype, payload = _json(500, {"error": "internal error"})
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            label = path if path in ("/health", "/version", "/predict", "/metrics") else "other"
            app.metrics.observe(method, label, status, time.perf_counter() - start)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            if os.environ.get("ACCESS_LOG"):
                super().log_message(format, *args)

    return Handler


def main() -> int:
    try:
        cfg = read_config(dict(os.environ))
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if cfg["crash"]:
        print("FAULT_CRASH_ON_START is set: exiting with status 3", file=sys.stderr)
        return 3
    try:
        app = App(cfg)
    except Exception as exc:
        print(f"start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    inflight = InFlight()
    server = ThreadingHTTPServer((cfg["host"], cfg["port"]), make_handler(app, inflight))
    server.daemon_threads = True

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"model {cfg['version']} ({app.info['algorithm']}, variant={cfg['variant']}, quality={cfg['quality']})"
          f" listening on {cfg['host']}:{cfg['port']}", file=sys.stderr)
    server.serve_forever(poll_interval=0.2)
    server.server_close()  # no new connections; requests already being answered finish first
    drained = inflight.wait_idle(timeout=float(os.environ.get("STOP_GRACE_SECONDS", "8")))
    print("stopped" if drained else f"stopped with {inflight.count} requests unfinished", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
