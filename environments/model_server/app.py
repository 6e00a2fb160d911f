"""Reference model server: an iris classifier or a diabetes regressor over HTTP (ASGI on uvicorn).

Endpoints: GET /health, GET /version, POST /predict, GET /metrics (Prometheus text), and
POST /feedback {"prediction_id": N, "actual": label or number}: the true outcome of a recorded
prediction, stored beside it for the post-release monitor.
Every prediction is recorded in the application database named by DATABASE_URL
(sqlite:////path/in/container or postgresql://…) before it is answered. A request carrying
``X-Bluegreen-Probe`` (bluegreen's own quality checks and replays) is answered but neither
recorded nor counted as user traffic in the latency and prediction histograms.

Environment:
  PORT, HOST               where to listen (default 0.0.0.0:8000)
  MODEL_VERSION            set at build time; reported by /version and on every prediction
  MODEL_IMAGE              the image reference, passed by the orchestrator; reported by /version
  MODEL_VARIANT            "model" (default) or "baseline": the fallback with no learned parameters
  MODEL_QUALITY            "good" (default) or "degraded": a deliberately worse model
  FAULT_ERROR_RATE         share of /predict calls answered 500, 0..1
  FAULT_LATENCY_MS         milliseconds added to each /predict call
  FAULT_PREDICTION_SHIFT   predictions moved off the model's: a classifier answers the next class
                           for this share of rows (0..1); a regressor adds this many target
                           standard deviations
  FAULT_SPARE_PROBES       "1"/"true": the error, latency and shift faults hit user traffic only, not
                           requests marked X-Bluegreen-Probe (a bug that only real traffic shows)
  FAULT_CRASH_ON_START     "1"/"true", or this server's version: exit with status 3 right after start
  FAULT_UNHEALTHY          "1"/"true": GET /health answers 503 (a server that never becomes healthy)
  STOP_GRACE_SECONDS       on SIGTERM, how long requests in flight may take to finish (default 8)
  ACCESS_LOG               "1": log every request

Speed: one event loop answers every connection; nothing in a request's path waits on another
request. Predictions take tens of microseconds (models.fast_predictor), and database writes are
group-committed by one writer thread (store.PredictionStore).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import jobs
from models import BaselineModel, Family, LearnedModel, Prediction, load
from store import PredictionStore

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
        # 1/true/yes: crash; a version (v2): crash only when this server is that version.
        "crash": _truthy(env.get("FAULT_CRASH_ON_START", ""))
        or env.get("FAULT_CRASH_ON_START", "") == env.get("MODEL_VERSION", "dev"),
        "unhealthy": _truthy(env.get("FAULT_UNHEALTHY", "")),
        "spare_probes": _truthy(env.get("FAULT_SPARE_PROBES", "")),
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
    cfg["shift"] = _number(env, "FAULT_PREDICTION_SHIFT", "0", "a number ≥ 0")
    if cfg["shift"] < 0:
        raise ConfigurationError(f"FAULT_PREDICTION_SHIFT={cfg['shift']} must be ≥ 0")
    cfg["grace"] = _number(env, "STOP_GRACE_SECONDS", "8", "a number of seconds")
    if cfg["variant"] not in ("model", "baseline"):
        raise ConfigurationError(f"MODEL_VARIANT={cfg['variant']!r} must be 'model' or 'baseline'")
    if cfg["quality"] not in ("good", "degraded"):
        raise ConfigurationError(f"MODEL_QUALITY={cfg['quality']!r} must be 'good' or 'degraded'")
    return cfg


def _line(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}" if inner else f"{name} {value}"


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def render(self, name: str, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += n
            out.append(_line(f"{name}_bucket", {"le": "+Inf" if bound == float("inf") else repr(bound)}, cumulative))
        return [*out, f"{name}_sum {self.total}", f"{name}_count {self.n}"]


# -- metrics -------------------------------------------------------------------------------------
class Metrics:
    """Counters and histograms; touched only from the event loop's thread.

    User traffic only in the latency and prediction histograms: bluegreen's probes are counted
    apart, so that they never move a step's analysis or its drift figure.
    """

    def __init__(self, family: Family) -> None:
        self.family = family
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency = Histogram(BUCKETS)
        self.classes: dict[str, int] = {}
        self.values = Histogram(family.buckets)
        self.probes = 0
        self.predicting = 0  # POST /predict requests being answered now

    def observe(self, method: str, path: str, status: int, seconds: float, probe: bool) -> None:
        key = (method, path, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if path == "/predict":
            if probe:
                self.probes += 1
            else:
                self.latency.observe(seconds)

    def count_predictions(self, predictions: list[Prediction]) -> None:
        for p in predictions:
            if p.label is not None:
                self.classes[p.label] = self.classes.get(p.label, 0) + 1
            else:
                self.values.observe(float(p.value))

    def render(self, info: dict[str, str], store: PredictionStore) -> str:
        out = ["# HELP model_info The model this server answers with.", "# TYPE model_info gauge",
               _line("model_info", dict(sorted(info.items())), 1),
               "# HELP http_requests_total Requests by method, path and status.",
               "# TYPE http_requests_total counter"]
        for (method, path, status), n in sorted(self.requests.items()):
            out.append(_line("http_requests_total", {"method": method, "path": path, "status": str(status)}, n))
        out += self.latency.render("predict_latency_seconds", "Latency of POST /predict (user traffic).")
        out += ["# HELP predict_requests_in_flight POST /predict requests being answered now.",
                "# TYPE predict_requests_in_flight gauge", f"predict_requests_in_flight {self.predicting}",
                "# HELP probe_requests_total POST /predict calls marked X-Bluegreen-Probe (not user traffic).",
                "# TYPE probe_requests_total counter", f"probe_requests_total {self.probes}"]
        if self.family.task == "classification":
            out += ["# HELP predictions_total Predictions by class (user traffic).",
                    "# TYPE predictions_total counter"]
            for label in self.family.classes:
                out.append(_line("predictions_total", {"class": label}, self.classes.get(label, 0)))
        else:
            out += self.values.render("prediction_value", "Predicted values (user traffic).")
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


def parse_rows(body: bytes, columns: tuple[str, ...]) -> tuple[list[list[float]], bool]:
    """Accept {"features": [numbers] | {name: number}} or {"instances": [...]}; return rows, batch."""
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
            missing = [f for f in columns if f not in item]
            if missing:
                raise BadRequest(f"missing features: {', '.join(missing)}")
            item = [item[f] for f in columns]
        if not isinstance(item, list) or len(item) != len(columns):
            raise BadRequest(f"features must be {len(columns)} numbers: {', '.join(columns)}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in item):
            raise BadRequest("features must be numbers")
        rows.append([float(v) for v in item])
    return rows, batch


def shifted(predictions: list[Prediction], shift: float, family: Family) -> list[Prediction]:
    """FAULT_PREDICTION_SHIFT: move predictions off the model's, as a drifting model would."""
    if family.task == "regression":
        return [Prediction(float(p.value) + shift * family.target_std) for p in predictions]
    out = []
    for p in predictions:
        if random.random() < shift:
            cls = (int(p.value) + 1) % len(family.classes)
            probabilities = None if p.probabilities is None else tuple(
                p.probabilities[(i - 1) % len(family.classes)] for i in range(len(family.classes)))
            out.append(Prediction(cls, family.classes[cls], probabilities))
        else:
            out.append(p)
    return out


Answer = tuple[int, str, bytes]
KNOWN_PATHS = ("/health", "/version", "/predict", "/metrics", "/feedback", "/jobs")
PROBE_HEADER = b"x-bluegreen-probe"


def _json(status: int, doc: dict[str, Any]) -> Answer:
    return status, "application/json", json.dumps(doc).encode()


class App:
    """The ASGI application: routes by method and path, times every request, records predictions."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.model: LearnedModel | BaselineModel
        self.model, self.family = load(MODELS_DIR, cfg["variant"], cfg["quality"])
        if cfg["shift"] > 1 and self.family.task == "classification":
            raise ConfigurationError(f"FAULT_PREDICTION_SHIFT={cfg['shift']} must be in 0..1 for a classifier")
        self.store = PredictionStore(cfg["database_url"])
        self.queue: jobs.Queue | None = None  # the job queue table, opened with the store
        self.metrics = Metrics(self.family)
        self.info = {
            "version": cfg["version"],
            "image": cfg["image"],
            "variant": cfg["variant"],
            "quality": cfg["quality"],
            "algorithm": self.model.name,
            "task": self.family.task,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        method, path = scope["method"], scope["path"]
        probe = any(name == PROBE_HEADER for name, _value in scope["headers"])
        body = await _read_body(receive) if method == "POST" else b""
        try:
            status, ctype, payload = await self.handle(method, path, body, probe)
        except Exception as exc:  # a bug must answer 500, not drop the connection
            print(f"unhandled error: {type(exc).__name__}: {exc}", file=sys.stderr)
            status, ctype, payload = _json(500, {"error": "internal error"})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        label = "/jobs" if path.startswith("/jobs") else path if path in KNOWN_PATHS else "other"
        self.metrics.observe(method, label, status, time.perf_counter() - start, probe)

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

    async def handle(self, method: str, path: str, body: bytes, probe: bool = False) -> Answer:
        if method == "GET" and path == "/health":
            if self.cfg["unhealthy"]:
                return _json(503, {"status": "unhealthy", "reason": "injected fault (FAULT_UNHEALTHY)"})
            healthy = (self.store.ping() if self.store.kind != "postgresql"
                       else await asyncio.get_running_loop().run_in_executor(None, self.store.ping))
            if not healthy:
                return _json(503, {"status": "unavailable", "reason": "database unreachable"})
            return _json(200, {"status": "ok", "version": self.cfg["version"]})
        if method == "GET" and path == "/version":
            return _json(200, self.info)
        if method == "GET" and path == "/metrics":
            return 200, "text/plain; version=0.0.4", self.metrics.render(self.info, self.store).encode()
        if path == "/jobs" or path.startswith("/jobs/"):
            return await self.jobs(method, path, body)
        if path == "/feedback":
            if method != "POST":
                return _json(405, {"error": "use POST"})
            return await self.feedback(body)
        if path == "/predict":
            if method != "POST":
                return _json(405, {"error": "use POST"})
            self.metrics.predicting += 1
            try:
                return await self.predict(body, probe)
            finally:
                self.metrics.predicting -= 1
        return _json(404, {"error": f"no route {method} {path}"})

    async def predict(self, body: bytes, probe: bool) -> Answer:
        faults = not (probe and self.cfg["spare_probes"])
        if faults and self.cfg["latency_ms"]:
            await asyncio.sleep(self.cfg["latency_ms"] / 1000)
        if faults and self.cfg["error_rate"] and random.random() < self.cfg["error_rate"]:
            return _json(500, {"error": "injected fault (FAULT_ERROR_RATE)"})
        try:
            rows, batch = parse_rows(body, self.family.columns)
        except BadRequest as exc:
            return _json(400, {"error": str(exc)})
        preds = self.model.predict(rows)
        if faults and self.cfg["shift"]:
            preds = shifted(preds, self.cfg["shift"], self.family)
        version, variant = self.cfg["version"], self.cfg["variant"]
        ids: list[int] = []
        if not probe:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            records = [(now, version, variant, json.dumps(row), p.label if p.label is not None else repr(p.value),
                        p.score if p.score is not None else float(p.value))
                       for row, p in zip(rows, preds, strict=True)]
            try:
                ids = await self.store.record(records)
            except Exception:
                return _json(503, {"error": "could not record the prediction: database unavailable"})
            self.metrics.count_predictions(preds)
        results = []
        for i, p in enumerate(preds):
            item: dict[str, Any]
            if p.label is not None:
                item = {"prediction": p.label, "class_id": p.value, "value": p.value,
                        "score": round(p.score or 0.0, 6),
                        "probabilities": [round(v, 6) for v in p.probabilities or ()]}
            else:
                item = {"prediction": p.value, "value": p.value}
            item["prediction_id"] = ids[i] if ids else None
            results.append(item)
        common = {"model_version": version, "variant": variant}
        if batch:
            return _json(200, {"predictions": results, **common})
        return _json(200, {**results[0], **common})


    async def jobs(self, method: str, path: str, body: bytes) -> Answer:
        """POST /jobs {"features": [...]} -> 202 {"id"}; GET /jobs/N -> its status, prediction, version."""
        if self.queue is None:
            return _json(503, {"error": "no application database to queue jobs in (DATABASE_URL)"})
        loop = asyncio.get_running_loop()
        if path == "/jobs":
            if method != "POST":
                return _json(405, {"error": "use POST"})
            try:
                doc = json.loads(body or b"null")
            except ValueError:
                return _json(400, {"error": "body must be JSON"})
            features = doc.get("features") if isinstance(doc, dict) else None
            if not isinstance(features, list) or len(features) != len(self.family.columns) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in features):
                return _json(400, {"error": f'body must be {{"features": [{len(self.family.columns)} numbers]}}'})
            try:
                job_id = await loop.run_in_executor(None, self.queue.enqueue, features)
            except Exception:
                return _json(503, {"error": "could not queue the job: database unavailable"})
            return _json(202, {"id": job_id, "status": "queued"})
        if method != "GET":
            return _json(405, {"error": "use GET"})
        try:
            job_id = int(path.rsplit("/", 1)[1])
        except ValueError:
            return _json(404, {"error": f"no job {path.rsplit('/', 1)[1]!r}"})
        try:
            job = await loop.run_in_executor(None, self.queue.get, job_id)
        except Exception:
            return _json(503, {"error": "could not read the job: database unavailable"})
        return _json(200, job) if job is not None else _json(404, {"error": f"no job {job_id}"})

    async def feedback(self, body: bytes) -> Answer:
        try:
            doc = json.loads(body or b"null")
        except ValueError:
            return _json(400, {"error": "body must be JSON"})
        if not isinstance(doc, dict) or not isinstance(doc.get("prediction_id"), int) or "actual" not in doc:
            return _json(400, {"error": 'body must be {"prediction_id": N, "actual": label or number}'})
        actual = doc["actual"]
        if self.family.task == "classification":
            if isinstance(actual, int) and not isinstance(actual, bool) and 0 <= actual < len(self.family.classes):
                actual = self.family.classes[actual]  # a class id, stored by name like the prediction
            if actual not in self.family.classes:
                return _json(400, {"error": f"actual must be one of {', '.join(self.family.classes)} or its id"})
        elif not isinstance(actual, int | float) or isinstance(actual, bool):
            return _json(400, {"error": "actual must be a number"})
        if self.store.kind == "none":
            return _json(503, {"error": "no application database to record feedback in (DATABASE_URL)"})
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            found = await self.store.feedback(doc["prediction_id"], str(actual) if isinstance(actual, str)
                                              else repr(float(actual)), now)
        except Exception:
            return _json(503, {"error": "could not record the feedback: database unavailable"})
        if not found:
            return _json(404, {"error": f"no prediction {doc['prediction_id']}"})
        return _json(200, {"prediction_id": doc["prediction_id"], "recorded": True})


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
    if sys.argv[1:] == ["--consumer-health"]:
        return int(jobs.healthy())
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
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("ROLE", "api") == "consumer":
        return int(jobs.consume(cfg, app.model))
    try:
        app.store.open()  # a database that cannot be reached stops the start
        if app.store.kind != "none":
            app.queue = jobs.Queue(cfg["database_url"]).connect(create=True)
    except Exception as exc:
        print(f"start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    config = uvicorn.Config(app, host=cfg["host"], port=cfg["port"], backlog=BACKLOG, lifespan="on",
                            timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=int(cfg["grace"]),
                            access_log=cfg["access_log"], log_level="info" if cfg["access_log"] else "warning",
                            server_header=False, date_header=False)
    print(f"model {cfg['version']} ({app.info['algorithm']}, {app.family.task}, variant={cfg['variant']}, "
          f"quality={cfg['quality']}) listening on {cfg['host']}:{cfg['port']}", file=sys.stderr)
    # uvicorn handles SIGTERM: no new connections, requests in flight finish, then lifespan shutdown.
    uvicorn.Server(config).run()
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
