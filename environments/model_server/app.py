"""Reference model server: an iris classifier over HTTP (ASGI on uvicorn), with faults on demand.

Endpoints: GET /health, GET /version, POST /predict, GET /metrics (Prometheus text).
Every prediction is recorded in the application database named by DATABASE_URL
(sqlite:////path/in/container or postgresql://…) before it is answered.

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
  STOP_GRACE_SECONDS       on SIGTERM, how long requests in flight may take to finish (default 8)
  ACCESS_LOG               "1": log every request

Speed: one event loop answers every connection; nothing in a request's path waits on another
request. Predictions take tens of microseconds (see ``fast_predictor``),
and database writes are group-committed by one writer thread: rows that arrive while a commit
runs go into the next one, so the database costs one transaction per batch, not per request.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import pickle
import queue
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASSES = ("setosa", "versicolor", "virginica")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MODELS_DIR = Path(os.environ.get("MODELS_DIR", "/app/models"))
BACKLOG = 2048  # a burst of new connections (a proxy opening its pool) must never see a dropped SYN
KEEP_ALIVE_SECONDS = 75  # longer than any proxy keeps an idle server connection, so the proxy closes first

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ConfigurationError(Exception):
    pass


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _number(env: dict[str, str], key: str, default: str, rule: str) -> float:
    try:
        return float(env.get(key, default) or default)
    except ValueError:
        raise ConfigurationError(f"{key}={env[key]!r} must be {rule}") from None


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
        "access_log": _truthy(env.get("ACCESS_LOG", "")),
    }
    try:
        cfg["port"] = int(env.get("PORT", "8000"))
    except ValueError:
        raise ConfigurationError(f"PORT={env.get('PORT')!r} must be an integer") from None
    cfg["error_rate"] = _number(env, "FAULT_ERROR_RATE", "0", "a number in 0..1")
    if not 0 <= cfg["error_rate"] <= 1:
        raise ConfigurationError(f"FAULT_ERROR_RATE={cfg['error_rate']} must be in 0..1")
    cfg["latency_ms"] = _number(env, "FAULT_LATENCY_MS", "0", "a number ≥ 0")
    if cfg["latency_ms"] < 0:
        raise ConfigurationError(f"FAULT_LATENCY_MS={cfg['latency_ms']} must be ≥ 0")
    cfg["grace"] = _number(env, "STOP_GRACE_SECONDS", "8", "a number of seconds")
    if cfg["variant"] not in ("model", "baseline"):
        raise ConfigurationError(f"MODEL_VARIANT={cfg['variant']!r} must be 'model' or 'baseline'")
    if cfg["quality"] not in ("good", "degraded"):
        raise ConfigurationError(f"MODEL_QUALITY={cfg['quality']!r} must be 'good' or 'degraded'")
    return cfg


# -- models ------------------------------------------------------------------------------------
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


def fast_predictor(model: Any) -> Callable[[list[list[float]]], Any] | None:
    """predict_proba without scikit-learn's per-call overhead, for small batches of the models served here.

    scikit-learn validates its input and, for a forest, dispatches every tree through joblib on
    each call: about 5 ms for a 50-tree forest and one row, whatever the batch size. A server that
    answers one row per request does the same arithmetic directly: the forest's trees walked in
    plain Python (about 30 µs a row), a linear model's softmax in numpy. ``LearnedModel`` checks
    the result against ``predict_proba`` at load, so a model this does not understand, or
    understands wrongly, is served by scikit-learn unchanged.
    """
    import numpy as np

    n_classes = len(getattr(model, "classes_", ()))
    if hasattr(model, "estimators_") and all(hasattr(t, "tree_") for t in model.estimators_):
        trees = []
        for estimator in model.estimators_:
            tree = estimator.tree_
            value = tree.value[:, 0, :n_classes].astype(float)
            total = value.sum(axis=1, keepdims=True)
            total[total == 0] = 1.0
            trees.append((tree.children_left.tolist(), tree.children_right.tolist(), tree.feature.tolist(),
                          tree.threshold.tolist(), (value / total).tolist()))
        share = 1.0 / len(trees)

        def forest(rows: list[list[float]]) -> list[list[float]]:
            out = []
            for raw in rows:
                row = np.asarray(raw, dtype=np.float32).tolist()  # the trees compare float32 features
                acc = [0.0] * n_classes
                for left, right, feature, threshold, value in trees:
                    node = 0
                    while left[node] != -1:
                        node = left[node] if row[feature[node]] <= threshold[node] else right[node]
                    for c, v in enumerate(value[node]):
                        acc[c] += v
                out.append([a * share for a in acc])
            return out

        return forest
    if hasattr(model, "coef_") and hasattr(model, "intercept_") and n_classes > 2:
        coef, intercept = np.asarray(model.coef_).T, np.asarray(model.intercept_)

        def softmax(rows: list[list[float]]) -> Any:
            z = np.asarray(rows, dtype=np.float64) @ coef + intercept
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)

        return softmax
    return None


# Rows across the classes' boundaries, scored both ways when a model loads.
PROBE = ((5.1, 3.5, 1.4, 0.2), (6.3, 2.5, 5.0, 1.9), (5.9, 3.0, 4.2, 1.5), (7.7, 3.8, 6.7, 2.2),
         (4.9, 2.4, 3.3, 1.0), (6.0, 2.2, 5.0, 1.5), (5.7, 2.8, 4.1, 1.3), (6.5, 3.0, 5.2, 2.0))


class LearnedModel:
    FAST_UP_TO = 64  # rows; a bigger batch is faster through scikit-learn's vectorised path

    def __init__(self, path: Path) -> None:
        import numpy as np

        with open(path, "rb") as fh:
            saved = pickle.load(fh)
        self.model = saved["model"]
        self.columns = saved["features"]
        self.name = type(self.model).__name__
        self.fast = fast_predictor(self.model)
        probe = self._columns([list(row) for row in PROBE])
        if self.fast is not None and not np.allclose(self.fast(probe), self.model.predict_proba(probe), atol=1e-9):
            self.fast = None

    def _columns(self, rows: list[list[float]]) -> list[list[float]]:
        return [[row[i] for i in self.columns] for row in rows] if self.columns else rows

    def predict(self, rows: list[list[float]]) -> list[tuple[int, float]]:
        x = self._columns(rows)
        if self.fast is not None and len(x) <= self.FAST_UP_TO:
            probabilities = self.fast(x)
        else:
            probabilities = self.model.predict_proba(x)
        out = []
        for p in probabilities:
            best = max(range(len(p)), key=p.__getitem__)
            out.append((best, float(p[best])))
        return out


def load_model(cfg: dict[str, Any]) -> BaselineModel | LearnedModel:
    if cfg["variant"] == "baseline":
        return BaselineModel()
    return LearnedModel(MODELS_DIR / ("degraded.pkl" if cfg["quality"] == "degraded" else "good.pkl"))


# -- the application database -------------------------------------------------------------------
Row = tuple[str, str, str, str, str, float]  # created_at, version, variant, features, prediction, score


class PredictionStore:
    """Records predictions; one writer thread group-commits what every request hands it.

    A request waits until its rows are committed (its answer carries their ids), but it never
    queues behind other requests' transactions one by one: rows that arrive while a commit runs
    all go into the next transaction. ``ping`` uses its own connection, so a health check never
    waits for a write.
    """

    MAX_BATCH = 1000

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = "none" if not url else ("sqlite" if url.startswith("sqlite:///") else "postgresql")
        self._queue: queue.SimpleQueue[tuple[list[Row], asyncio.AbstractEventLoop, asyncio.Future[list[int]]]
                                       | None] = queue.SimpleQueue()
        self._writer_conn: Any = None
        self._ping_conn: Any = None
        self._ping_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self.batches = 0
        self.rows = 0

    # connections
    def _connect(self) -> Any:
        if self.kind == "sqlite":
            path = self.url[len("sqlite:///") :]  # sqlite:////abs/path or sqlite:///relative/path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " created_at TEXT NOT NULL, model_version TEXT NOT NULL, variant TEXT NOT NULL,"
                " features TEXT NOT NULL, prediction TEXT NOT NULL, score REAL NOT NULL)"
            )
            return conn
        import psycopg

        pg = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        pg.execute(
            "CREATE TABLE IF NOT EXISTS predictions (id BIGSERIAL PRIMARY KEY,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), model_version TEXT NOT NULL,"
            " variant TEXT NOT NULL, features TEXT NOT NULL, prediction TEXT NOT NULL, score REAL NOT NULL)"
        )
        return pg

    def open(self) -> None:
        """Connect (a database that cannot be reached stops the start) and start the writer."""
        if self.kind != "none":
            self._writer_conn = self._connect()
            self._ping_conn = self._connect()
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout)

    def ping(self) -> bool:
        if self.kind == "none":
            return True
        with self._ping_lock:
            try:
                if self._ping_conn is None:
                    self._ping_conn = self._connect()
                self._ping_conn.execute("SELECT 1")
                return True
            except Exception:
                # Health answers 503 until the database is back; the next ping reconnects.
                with contextlib.suppress(Exception):
                    self._ping_conn.close()
                self._ping_conn = None
                return False

    # writes
    async def record(self, rows: list[Row]) -> list[int]:
        if self.kind == "none":
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._queue.put((rows, loop, future))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            try:
                ids = self._write([rows for rows, _loop, _future in batch])
            except Exception as exc:
                print(f"database write failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                with contextlib.suppress(Exception):
                    self._writer_conn.close()
                self._writer_conn = None  # reconnect for the next batch
                for _rows, loop, future in batch:
                    loop.call_soon_threadsafe(_fail, future, exc)
                continue
            self.batches += 1
            self.rows += sum(len(r) for r in ids)
            for (_rows, loop, future), row_ids in zip(batch, ids, strict=True):
                loop.call_soon_threadsafe(_resolve, future, row_ids)

    def _write(self, requests: list[list[Row]]) -> list[list[int]]:
        if self._writer_conn is None:
            self._writer_conn = self._connect()
        conn = self._writer_conn
        out: list[list[int]] = []
        if self.kind == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                for rows in requests:
                    ids = []
                    for row in rows:
                        cur = conn.execute(
                            "INSERT INTO predictions (created_at, model_version, variant, features, prediction,"
                            " score) VALUES (?, ?, ?, ?, ?, ?)", row)
                        ids.append(int(cur.lastrowid))
                    out.append(ids)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
            return out
        with conn.transaction(), conn.cursor() as cur:
            for rows in requests:
                ids = []
                for row in rows:
                    cur.execute(
                        "INSERT INTO predictions (created_at, model_version, variant, features, prediction, score)"
                        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id", row)
                    ids.append(int(cur.fetchone()[0]))
                out.append(ids)
        return out


def _resolve(future: asyncio.Future[list[int]], ids: list[int]) -> None:
    if not future.done():
        future.set_result(ids)


def _fail(future: asyncio.Future[list[int]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


# -- metrics -------------------------------------------------------------------------------------
class Metrics:
    """Counters and the /predict latency histogram; touched only from the event loop's thread."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.predictions: dict[str, int] = {}
        self.predicting = 0  # POST /predict requests being answered now

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if path == "/predict":
            self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def count_prediction(self, label: str) -> None:
        self.predictions[label] = self.predictions.get(label, 0) + 1

    def render(self, info: dict[str, str], store: PredictionStore) -> str:
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
        out += ["# HELP predict_requests_in_flight POST /predict requests being answered now.",
                "# TYPE predict_requests_in_flight gauge", f"predict_requests_in_flight {self.predicting}"]
        out += ["# HELP predictions_total Predictions by class.", "# TYPE predictions_total counter"]
        for label, n in sorted(self.predictions.items()):
            out.append(f'predictions_total{{class="{label}"}} {n}')
        out += ["# HELP prediction_write_batches_total Transactions that recorded predictions.",
                "# TYPE prediction_write_batches_total counter",
                f"prediction_write_batches_total {store.batches}",
                "# HELP prediction_rows_written_total Predictions recorded in the database.",
                "# TYPE prediction_rows_written_total counter",
                f"prediction_rows_written_total {store.rows}"]
        return "\n".join(out) + "\n"


# -- requests ------------------------------------------------------------------------------------
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


Answer = tuple[int, str, bytes]
KNOWN_PATHS = ("/health", "/version", "/predict", "/metrics")


def _json(status: int, doc: dict[str, Any]) -> Answer:
    return status, "application/json", json.dumps(doc).encode()


class App:
    """The ASGI application: routes by method and path, times every request, records predictions."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.model = load_model(cfg)
        self.store = PredictionStore(cfg["database_url"])
        self.metrics = Metrics()
        self.info = {
            "version": cfg["version"],
            "image": cfg["image"],
            "variant": cfg["variant"],
            "quality": cfg["quality"],
            "algorithm": self.model.name,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        method, path = scope["method"], scope["path"]
        body = await _read_body(receive) if method == "POST" else b""
        try:
            status, ctype, payload = await self.handle(method, path, body)
        except Exception as exc:  # a bug must answer 500, not drop the connection
            print(f"unhandled error: {type(exc).__name__}: {exc}", file=sys.stderr)
            status, ctype, payload = _json(500, {"error": "internal error"})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        self.metrics.observe(method, path if path in KNOWN_PATHS else "other", status, time.perf_counter() - start)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Requests in flight have finished (uvicorn waits for them): commit what they queued.
                await asyncio.get_running_loop().run_in_executor(None, self.store.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, method: str, path: str, body: bytes) -> Answer:
        if method == "GET" and path == "/health":
            if self.cfg["unhealthy"]:
                return _json(503, {"status": "unhealthy", "reason": "injected fault (FAULT_UNHEALTHY)"})
            healthy = (self.store.ping() if self.store.kind == "sqlite"
                       else await asyncio.get_running_loop().run_in_executor(None, self.store.ping))
            if not healthy:
                return _json(503, {"status": "unavailable", "reason": "database unreachable"})
            return _json(200, {"status": "ok", "version": self.cfg["version"]})
        if method == "GET" and path == "/version":
            return _json(200, self.info)
        if method == "GET" and path == "/metrics":
            return 200, "text/plain; version=0.0.4", self.metrics.render(self.info, self.store).encode()
        if path == "/predict":
            if method != "POST":
                return _json(405, {"error": "use POST"})
            self.metrics.predicting += 1
            try:
                return await self.predict(body)
            finally:
                self.metrics.predicting -= 1
        return _json(404, {"error": f"no route {method} {path}"})

    async def predict(self, body: bytes) -> Answer:
        if self.cfg["latency_ms"]:
            await asyncio.sleep(self.cfg["latency_ms"] / 1000)
        if self.cfg["error_rate"] and random.random() < self.cfg["error_rate"]:
            return _json(500, {"error": "injected fault (FAULT_ERROR_RATE)"})
        try:
            rows, batch = parse_rows(body)
        except BadRequest as exc:
            return _json(400, {"error": str(exc)})
        preds = self.model.predict(rows)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        version, variant = self.cfg["version"], self.cfg["variant"]
        records = [(now, version, variant, json.dumps(row), CLASSES[cls], score)
                   for row, (cls, score) in zip(rows, preds, strict=True)]
        try:
            ids = await self.store.record(records)
        except Exception:
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
        common = {"model_version": version, "variant": variant}
        if batch:
            return _json(200, {"predictions": results, **common})
        return _json(200, {**results[0], **common})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


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
        app.store.open()
    except Exception as exc:
        print(f"start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    config = uvicorn.Config(app, host=cfg["host"], port=cfg["port"], backlog=BACKLOG, lifespan="on",
                            timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=int(cfg["grace"]),
                            access_log=cfg["access_log"], log_level="info" if cfg["access_log"] else "warning",
                            server_header=False, date_header=False)
    print(f"model {cfg['version']} ({app.info['algorithm']}, variant={cfg['variant']}, quality={cfg['quality']})"
          f" listening on {cfg['host']}:{cfg['port']}", file=sys.stderr)
    # uvicorn handles SIGTERM: no new connections, requests in flight finish, then lifespan shutdown.
    uvicorn.Server(config).run()
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
