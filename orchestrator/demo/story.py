"""``bluegreen demo``: the whole story on this machine, every figure measured in the run.

In a scratch directory with its own ports: v1 live on blue with its database; steady traffic
through the proxy for the whole run; v2 released step by step and promoted; a faulty v3 that
carries a schema change, rolled back by the step analysis (schema reverted, rows counted before
and after); the live colour killed (the proxy fails over to the warm one); an alert delivered by
a real Alertmanager (when installed) to ``bluegreen serve``, which rolls back; a drill. Then a
summary: releases and rollbacks with their reasons, rollback and failover times, the drill's RTO,
failed requests, rows kept, backups verified.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.common.ports import free_ports
from bluegreen.orchestrator.demo import alertmanager
from bluegreen.orchestrator.errors import BluegreenError

PREDICT = {"features": [5.9, 3.0, 5.1, 1.8]}
V3_UP = "ALTER TABLE predictions ADD COLUMN explanation TEXT;\n"
V3_DOWN = "ALTER TABLE predictions DROP COLUMN explanation;\n"


class Traffic:
    """Steady requests through the proxy from a few threads; every answer that is not a 200 counts.

    Each failed request is kept (up to ``keep`` of them) with when it happened, the act of the
    demo it happened in (``phase()``), what came back, and what the proxy reported for each of its
    servers at that moment (``proxy()``): enough to say which switch lost it and why.
    """

    def __init__(self, url: str, phase: Callable[[], str], proxy: Callable[[], dict[str, str]],
                 began: float, threads: int = 2, pause: float = 0.01, keep: int = 50,
                 headers: dict[str, str] | None = None) -> None:
        self.url, self.pause, self.keep, self.headers = url, pause, keep, headers or {}
        self.versions: dict[str, int] = {}  # model_version -> answers
        self.phase, self.proxy, self.began = phase, proxy, began
        self.sent = self.failed = 0
        self.failures: list[dict[str, Any]] = []
        self.by_phase: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=10, headers=self.headers) as client:
            while not self._stop.wait(self.pause):
                sent_at, wall, phase = time.monotonic(), time.time(), self.phase()
                try:
                    r = client.post(f"{self.url}/predict", json=PREDICT)
                    problem = None if r.status_code == 200 else {"status": r.status_code,
                                                                 "body": " ".join(r.text.split())[:200]}
                    if problem is None:
                        version = str(r.json().get("model_version"))
                        with self._lock:
                            self.versions[version] = self.versions.get(version, 0) + 1
                except (httpx.HTTPError, ValueError) as exc:
                    problem = {"status": None, "body": f"{type(exc).__name__}: {exc}"[:200]}
                with self._lock:
                    self.sent += 1
                    if problem is None:
                        continue
                    self.failed += 1
                    self.by_phase[phase] = self.by_phase.get(phase, 0) + 1
                    record = len(self.failures) < self.keep
                if record:
                    self._record(sent_at, wall, phase, problem)

    def _record(self, sent_at: float, wall: float, phase: str, problem: dict[str, Any]) -> None:
        try:
            seen = self.proxy()
        except BluegreenError as exc:
            seen = {"error": exc.message}
        failure = {"at_s": round(sent_at - self.began, 3),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z",
                   "phase": phase, **problem, "proxy": seen}
        with self._lock:
            self.failures.append(failure)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


class Jobs:
    """Jobs submitted through the proxy (POST /jobs) for the consumers to work; every refusal counts."""

    def __init__(self, url: str, pause: float = 0.02) -> None:
        self.url, self.pause = url, pause
        self.ids: list[int] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(self.pause):
                try:
                    r = client.post(f"{self.url}/jobs", json=PREDICT)
                    if r.status_code == 202:
                        self.ids.append(int(r.json()["id"]))
                    else:
                        self.failed += 1
                except (httpx.HTTPError, ValueError, KeyError):
                    self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Watcher:
    """Which version answers through the proxy, every 5 ms: the clock for switch and failover times."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=2) as client:
            while not self._stop.wait(0.005):
                try:
                    version = str(client.get(f"{self.url}/version").json().get("version"))
                except (httpx.HTTPError, ValueError):
                    version = None
                self.samples.append((time.monotonic(), version))

    def settled_on(self, since: float, version: str, timeout: float = 60.0, hold: float = 0.5) -> float | None:
        """Seconds from ``since`` to the first answer from ``version`` after which every answer was from it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = [(t, v) for t, v in list(self.samples) if t >= since]
            last_other = max((t for t, v in after if v != version), default=since)
            firsts = [t for t, v in after if v == version and t > last_other]
            if firsts and time.monotonic() - firsts[0] >= hold:
                return firsts[0] - since
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Summary:
    directory: str
    project: str = ""
    dashboard: str | None = None
    seconds: float = 0.0
    requests: int = 0
    failed_requests: int = 0
    # Each failed request (the first 50): seconds into the demo and UTC time, the act it happened
    # in, the status and body it got, and what the proxy reported for each server at that moment.
    failures: list[dict[str, Any]] = field(default_factory=list)
    failed_by_phase: dict[str, int] = field(default_factory=dict)
    releases: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    rollback_ms: float | None = None  # the faulty release: from the failed verdict to every answer from v2
    alert_rollback_ms: float | None = None  # alert handed to Alertmanager -> every answer from the target
    alert_delivery: str = ""
    failover_ms: float | None = None  # live colour killed -> every answer from the standby
    drill_rto_ms: float | None = None
    drill_ok: bool | None = None
    rows_before: int = 0
    rows_kept: int = 0
    rows_lost: int = 0
    jobs: int = 0  # submitted to the queue through the proxy, worked by the live colour's consumer
    jobs_failed: int = 0  # submissions refused
    jobs_lost: int = 0  # never done
    jobs_done_twice: int = 0  # taken more than once (attempts > 1)
    schema_reverted: bool | None = None
    backups_verified: int = 0
    backups_total: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.judged()

    def judged(self) -> list[str]:
        """What the figures say went wrong: failed requests, rows or jobs lost."""
        out = []
        if self.failed_requests:
            where = ", ".join(f"{n} during {phase}" for phase, n in self.failed_by_phase.items())
            first = self.failures[0] if self.failures else None
            out.append(f"{self.failed_requests} of {self.requests:,} requests through the proxy failed"
                       + (f" ({where})" if where else "")
                       + (f"; the first at {first['at_s']:.1f} s: {first['status'] or 'no answer'} {first['body']}"
                          if first else ""))
        if self.rows_lost:
            out.append(f"{self.rows_lost} of the {self.rows_before:,} rows written before the faulty release were lost")
        if self.jobs_failed:
            out.append(f"{self.jobs_failed} jobs were refused")
        if self.jobs_lost:
            out.append(f"{self.jobs_lost} of {self.jobs:,} jobs were never done")
        if self.jobs_done_twice:
            out.append(f"{self.jobs_done_twice} jobs were taken twice")
        return out

    def judge(self) -> None:
        """Name in ``problems`` everything the figures say went wrong, once."""
        self.problems.extend(p for p in self.judged() if p not in self.problems)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "ok": self.ok}

    def table(self) -> str:
        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.0f} ms"

        rows = [("requests through the proxy", f"{self.requests:,}"),
                ("failed requests", f"{self.failed_requests}"),
                ("rows before the faulty release / kept / lost",
                 f"{self.rows_before:,} / {self.rows_kept:,} / {self.rows_lost}"),
                ("schema change reverted", {True: "yes", False: "NO", None: "n/a"}[self.schema_reverted]),
                ("jobs queued / failed to queue / lost / done twice (consumer switched with the traffic)",
                 f"{self.jobs:,} / {self.jobs_failed} / {self.jobs_lost} / {self.jobs_done_twice}"),
                ("automatic rollback (verdict -> all traffic on v2)", ms(self.rollback_ms)),
                ("failover (live colour killed -> all traffic on the standby)", ms(self.failover_ms)),
                (f"alert -> rollback ({self.alert_delivery})", ms(self.alert_rollback_ms)),
                ("drill RTO", ms(self.drill_rto_ms) + ("" if self.drill_ok is None else
                                                     " (passed)" if self.drill_ok else " (FAILED)")),
                ("backup sets verified by restoring into scratch", f"{self.backups_verified} of {self.backups_total}")]
        width = max(len(k) for k, _ in rows)
        lines = ["", "what happened".ljust(width) + "  result", "-" * (width + 24)]
        lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
        lines += ["", "releases and rollbacks:"]
        for r in self.releases + self.rollbacks:
            reason = f" - {r['reason']}" if r.get("reason") else ""
            lines.append(f"  #{r['id']} {r['kind']} {r['version']}: {r['status']}{reason}")
        for p in self.problems:
            lines.append(f"PROBLEM: {p}")
        for f in self.failures[:10]:
            lines.append(f"  failed request at {f['at_s']:.1f} s ({f['phase']}): {f['status'] or 'no answer'} "
                         f"{f['body'][:60]}; proxy: {', '.join(f'{k} {v}' for k, v in f['proxy'].items())}")
        lines.append(f"\n{'all good' if self.ok else 'NOT all good'}: {self.seconds:.0f} s in all")
        return "\n".join(lines)


class Demo:
    def __init__(self, keep: bool, say: Any) -> None:
        self.keep = keep
        self.say = say
        self.began = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
        self.name = f"bgdemo-{secrets.token_hex(3)}"
        self.proxy_port, self.blue_port, self.green_port, self.serve_port, self.am_port = free_ports(5)
        self.token_file = self.root / ".bluegreen-token"
        self.summary = Summary(directory=str(self.root), project=self.name)
        self.children: list[subprocess.Popen[bytes]] = []
        self.phase = "set-up"  # the act being played: where a failed request happened

    def act(self, phase: str) -> None:
        self.phase = phase

    # -- set-up ---------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.say(f"[demo {time.monotonic() - self.began:5.1f}s] {text}")

    def write_settings(self) -> None:
        from bluegreen.orchestrator.settings.core import CONFIG_FILENAME
        from bluegreen.orchestrator.settings.project import init_project, project_name

        init_project(self.root, example="compose")  # an api and a prediction-consumer per colour
        config = self.root / CONFIG_FILENAME
        text = config.read_text()
        for old, new in ((f'project = "{project_name(self.root)}"', f'project = "{self.name}"'),
                         ("port = 8080", f"port = {self.proxy_port}"), ("port = 8101", f"port = {self.blue_port}"),
                         ("port = 8102", f"port = {self.green_port}"), ("port = 9900", f"port = {self.serve_port}"),
                         ('bake = "30s"', 'bake = "3s"'), ("retry_candidate_failures = false",
                                                          "retry_candidate_failures = true"),
                         ('token_file = ""', f'token_file = "{self.token_file}"'),
                         ("\nrules = []\n", '\nrules = [{ name = "page", match = { severity = "critical" }, '
                                            'action = "rollback" }]\n')):
            if old not in text:
                raise BluegreenError(f"the settings template has no {old!r} to set")
            text = text.replace(old, new, 1)
        text = text.replace("check_interval_ms = 1000", "check_interval_ms = 300").replace('watch = "5s"',
                                                                                         'watch = "2s"', 1)
        config.write_text(text)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(24))
        migrations = self.root / "migrations-v3"
        migrations.mkdir()
        (migrations / "0001_explanation.up.sql").write_text(V3_UP)
        (migrations / "0001_explanation.down.sql").write_text(V3_DOWN)

    def deployment(self, actor: str = "demo") -> Any:
        from bluegreen.orchestrator.deployment import Deployment
        from bluegreen.orchestrator.settings.model import load_settings

        return Deployment(load_settings(self.root / "bluegreen.toml"), actor=actor)

    def progress(self, item: str) -> None:
        if not item:
            return  # events without text (a step's start, the analysis samples) are for the dashboard
        self.log(f"  {item}")

    # -- the story --------------------------------------------------------------------------------
    def run(self) -> Summary:
        from bluegreen.orchestrator.core.lifecycle import up
        from bluegreen.orchestrator.core.plan import ReleaseRequest
        from bluegreen.orchestrator.core.release import release

        s = self.summary
        self.log(f"scratch deployment {self.name} in {self.root}; proxy on 127.0.0.1:{self.proxy_port}")
        self.write_settings()
        dep = self.deployment()
        self.check_images(dep)
        self.act("up")
        self.log("bluegreen up: v1 on blue behind HAProxy, predictions recorded in data/app.db")
        up(dep, self.progress)
        proxy = self.deployment(actor="demo-traffic").proxy  # its own client: read from the traffic's threads
        traffic = Traffic(dep.proxy_url, lambda: self.phase,
                          lambda: {name: f"{st.status}, weight {st.weight}" for name, st in proxy.stats().items()},
                          self.began)
        watcher = Watcher(dep.proxy_url)
        jobs = Jobs(dep.proxy_url)
        try:
            self.act("steady traffic")
            self.wait_rows(dep, 50)
            self.log(f"steady traffic through the proxy ({self.rate(traffic):.0f} req/s)")
            self.act("release v2")
            self.log("release v2: snapshot, gate, then 10 -> 25 -> 50 -> 100 % with a 3 s bake per step")
            result = release(dep, ReleaseRequest(image="bluegreen-model:v2", steps=[10, 25, 50, 100], bake=3.0),
                             self.progress)
            self.log(f"v2 promoted on {result.to_color} in {result.seconds:.1f} s")

            s.rows_before, max_id = self.rows(dep)
            self.act("release v3 (faulty)")
            self.log(f"release v3 (faulty: 20 % of its answers to users fail; its health gate passes) with a "
                     f"schema change "
                     f"(predictions.explanation); {s.rows_before:,} rows in predictions")
            verdict_at: list[float] = []

            def watch_v3(item: str) -> None:
                if "returning all traffic" in str(item) and not verdict_at:
                    verdict_at.append(time.monotonic())
                self.progress(item)

            try:
                release(dep, ReleaseRequest(image="bluegreen-model:v2", version="v3",
                                            env={"MODEL_VERSION": "v3", "FAULT_ERROR_RATE": "0.2",
                                                 "FAULT_SPARE_PROBES": "1"}, steps=[10, 25, 50, 100], bake=3.0,
                                            migrations=str(self.root / "migrations-v3")), watch_v3)
                s.problems.append("the faulty v3 was promoted")
            except BluegreenError as exc:
                self.log(f"v3 stopped: {exc.message.splitlines()[0]}")
            if verdict_at:
                s.rollback_ms = self.ms(watcher.settled_on(verdict_at[0], "v2"))
            kept, column = self.rows_kept(dep, max_id)
            s.rows_kept, s.rows_lost = kept, s.rows_before - kept
            s.schema_reverted = not column
            self.log(f"after the rollback: {kept:,} of the {s.rows_before:,} rows are there; the column is "
                     f"{'gone' if not column else 'STILL THERE'}")

            self.act("bluegreen serve")
            serve = self.start_serve()
            self.act("failover (live colour killed)")
            self.failover(dep, watcher)
            self.act("alert rollback")
            self.alert(watcher)
            self.act("drill")
            self.drill()
            self.act("backups verified")
            self.verify_backups(dep)
        finally:
            traffic.stop()
            watcher.stop()
            jobs.stop()
            s.requests, s.failed_requests = traffic.sent, traffic.failed
            # In the order they were sent: each waited for the proxy's view before it was kept.
            s.failures = sorted(traffic.failures, key=lambda f: float(f["at_s"]))
            s.failed_by_phase = traffic.by_phase
        self.act("jobs counted")
        self.count_jobs(dep, jobs)
        s.releases, s.rollbacks = self.journal(dep)
        s.seconds = round(time.monotonic() - self.began, 1)
        if self.keep:
            s.dashboard = f"http://127.0.0.1:{self.serve_port}/"
            self.log(f"kept running: dashboard {s.dashboard} (token in {self.token_file}); stop with: "
                     f"cd {self.root} && bluegreen down; kill {serve.pid}")
        return s

    def count_jobs(self, dep: Any, jobs: Jobs) -> None:
        """Every job submitted, once the queue is worked through: done once, or lost, or done twice."""
        s = self.summary
        s.jobs, s.jobs_failed = len(jobs.ids), jobs.failed
        wanted = set(jobs.ids)
        rows: dict[int, tuple[str, int]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.db(dep) as conn:
                rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, status, attempts FROM jobs")}
            if all(rows.get(i, ("",))[0] == "done" for i in wanted):
                break
            time.sleep(0.2)
        s.jobs_lost = sum(1 for i in wanted if rows.get(i, ("",))[0] != "done")
        s.jobs_done_twice = sum(1 for i in wanted if rows.get(i, ("", 0))[1] > 1)
        self.log(f"jobs: {s.jobs:,} queued through the proxy, {s.jobs_lost} lost, {s.jobs_done_twice} taken twice")

    def check_images(self, dep: Any) -> None:
        for ref in ("bluegreen-model:v1", "bluegreen-model:v2"):
            if not dep.runtime.image_exists(ref):
                raise BluegreenError(f"the image {ref} is missing", "bluegreen images build")

    @staticmethod
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    @staticmethod
    def rate(traffic: Traffic) -> float:
        before, t0 = traffic.sent, time.monotonic()
        time.sleep(1.0)
        return (traffic.sent - before) / (time.monotonic() - t0)

    def db(self, dep: Any) -> sqlite3.Connection:
        conn = sqlite3.connect(dep.settings.sqlite_path, timeout=60)
        conn.execute("PRAGMA busy_timeout = 60000")
        return conn

    def wait_rows(self, dep: Any, n: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.rows(dep)[0] >= n:
                    return
            except sqlite3.Error:
                pass
            time.sleep(0.1)
        raise BluegreenError("no predictions were recorded in a minute", "bluegreen logs blue")

    def rows(self, dep: Any) -> tuple[int, int]:
        with self.db(dep) as conn:
            count, top = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM predictions").fetchone()
        return int(count), int(top)

    def rows_kept(self, dep: Any, max_id: int) -> tuple[int, bool]:
        with self.db(dep) as conn:
            kept = conn.execute("SELECT count(*) FROM predictions WHERE id <= ?", (max_id,)).fetchone()[0]
            columns = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
        return int(kept), "explanation" in columns

    def start_serve(self) -> subprocess.Popen[bytes]:
        import httpx

        log = open(self.root / "serve.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen([sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()",
                                 "serve"], cwd=self.root, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                env={**os.environ, "BLUEGREEN_ACTOR": "serve"}, start_new_session=True)
        log.close()
        self.children.append(proc)
        url = f"http://127.0.0.1:{self.serve_port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    self.log(f"bluegreen serve on {url} (API, Alertmanager webhook, dashboard, scheduler)")
                    return proc
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise BluegreenError(f"bluegreen serve did not start: {(self.root / 'serve.log').read_text()[-500:]}")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}
        try:
            r = httpx.request(method, f"http://127.0.0.1:{self.serve_port}{path}", headers=headers, timeout=120,
                              **kwargs)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise BluegreenError(f"bluegreen serve: {method} {path} failed: {exc}",
                                 f"see {self.root / 'serve.log'} (bluegreen demo --keep leaves it)") from None

    def live(self) -> tuple[str, str]:
        st = self.api("GET", "/api/status")
        return st["live"], st["environments"][st["live"]]["version"]

    def failover(self, dep: Any, watcher: Watcher) -> None:
        live, version = self.live()
        st = self.api("GET", "/api/status")
        standby = st.get("standby")
        if not standby:
            self.summary.problems.append("no colour stood by for failover")
            return
        target = st["environments"][standby]["version"]
        self.log(f"killing the live colour {live} ({version}); {standby} ({target}) stands by")
        t0 = time.monotonic()
        dep.runtime.kill(live)
        self.summary.failover_ms = self.ms(watcher.settled_on(t0, target))
        self.log(f"  all traffic on {standby} ({target}) after {self.summary.failover_ms} ms")
        deadline = time.monotonic() + 30  # serve's watcher makes the failover official
        while time.monotonic() < deadline and self.live()[0] != standby:
            time.sleep(0.2)

    def alert(self, watcher: Watcher) -> None:
        import httpx

        version = self.live()[1]
        before = self.api("GET", "/api/history")["releases"][0]["id"]
        binary = alertmanager.binary()
        labels = {"alertname": "ModelErrorRateHigh", "severity": "critical", "service": self.name}
        t0 = time.monotonic()
        if binary:
            self.summary.alert_delivery = "a real Alertmanager"
            self.children.append(alertmanager.start(binary, self.root, self.am_port, self.serve_port, self.token_file,
                                                    ["alertname"]))
            self.log(f"an alert to Alertmanager ({labels['alertname']}, severity critical); it delivers to serve")
            t0 = time.monotonic()
            httpx.post(f"http://127.0.0.1:{self.am_port}/api/v2/alerts", json=[{"labels": labels}],
                       timeout=10).raise_for_status()
        else:
            self.summary.alert_delivery = "webhook posted directly: no Alertmanager installed"
            self.log("an Alertmanager-format alert posted to the webhook (no Alertmanager binary here)")
            self.api("POST", "/api/alerts", json={
                "version": "4", "groupKey": "demo", "status": "firing", "receiver": "bluegreen",
                "alerts": [{"status": "firing", "labels": labels, "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "fingerprint": secrets.token_hex(8)}]})
        deadline = time.monotonic() + 120
        rec = None
        while time.monotonic() < deadline:
            newer = [r for r in self.api("GET", "/api/history")["releases"] if r["id"] > before
                     and r["kind"] == "rollback" and r["status"] != "running"]
            if newer:
                rec = newer[0]
                break
            time.sleep(0.2)
        if rec is None:
            self.summary.problems.append("the alert did not roll back within 2 minutes")
            return
        self.summary.alert_rollback_ms = self.ms(watcher.settled_on(t0, rec["version"]))
        self.summary.alert_delivery += "; " + ("warm" if rec.get("steps") and len(rec["steps"]) == 1 else
                                               "cold: the killed colour is started and gated first")
        self.log(f"  rolled back from {version} to {rec['version']} ({rec['reason'][:80]}) after "
                 f"{self.summary.alert_rollback_ms} ms")

    def drill(self) -> None:
        self.log("a rollback drill through the API: the warm previous version takes all traffic and gives it back")
        report = self.api("POST", "/api/drills")
        self.summary.drill_ok = bool(report.get("ok"))
        self.summary.drill_rto_ms = self.ms(report.get("rto_s"))
        self.log(f"  {report.get('kind')} drill {'passed' if report.get('ok') else 'FAILED'}: RTO "
                 f"{self.summary.drill_rto_ms} ms, {report.get('failed_requests')} failed requests"
                 + (f"; {'; '.join(report.get('reasons') or [])}" if report.get("reasons") else ""))
        if not report.get("ok"):
            self.summary.problems.append(f"the drill failed: {'; '.join(report.get('reasons') or [])}")

    def verify_backups(self, dep: Any) -> None:
        sets = dep.backups.all_sets()
        self.summary.backups_total = len(sets)
        for backup in sets:
            report = dep.backups.verify(backup.id)
            self.summary.backups_verified += bool(report.ok)
            if not report.ok:
                self.summary.problems.append(f"backup {backup.id}: {'; '.join(report.problems)}")
        self.log(f"backup sets restored into scratch and checked: {self.summary.backups_verified} of {len(sets)}")

    def journal(self, dep: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from bluegreen.orchestrator.state.journal import Journal

        recent = list(reversed(Journal(dep.state).recent(50)))
        pick = ("id", "kind", "version", "status", "reason", "actor", "duration_s")
        releases = [{k: getattr(r, k) for k in pick} for r in recent if r.kind == "release"]
        rollbacks = [{k: getattr(r, k) for k in pick} for r in recent if r.kind in ("rollback", "failover")]
        return releases, rollbacks

    # -- tear-down --------------------------------------------------------------------------------
    def cleanup(self) -> None:
        if self.keep:
            return
        from bluegreen.orchestrator.core.lifecycle import down

        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if (self.root / "bluegreen.toml").exists():  # else nothing was started
            try:
                down(self.deployment())
            except BluegreenError as exc:
                self.log(f"down: {exc.message}")
        shutil.rmtree(self.root, ignore_errors=True)


def demo(keep: bool, say: Any) -> Summary:
    """Play the whole story; the summary, whatever happened: a demo stopped part-way says where and
    why in ``problems`` (and keeps the figures measured until then), and every figure that went
    wrong is named there too, so ``ok`` is false exactly when ``problems`` is not empty."""
    from bluegreen.environments import compose

    compose.require()  # the demo's colours are a compose example: say so before anything starts
    d = Demo(keep, say)
    try:
        d.run()
    except BluegreenError as exc:
        d.summary.problems.append(f"the demo stopped during {d.phase}: {exc.message}")
        d.log(f"stopped during {d.phase}: {exc.message} (try: {exc.hint})")
    except Exception as exc:  # a defect: still one summary, naming it and where it was raised
        where = traceback.extract_tb(exc.__traceback__)[-1]
        d.summary.problems.append(f"the demo stopped during {d.phase}: {type(exc).__name__}: {exc} "
                                  f"({Path(where.filename).name}:{where.lineno})")
        d.log(f"stopped during {d.phase}:\n{traceback.format_exc()}")
    finally:
        d.cleanup()
    s = d.summary
    s.seconds = round(time.monotonic() - d.began, 1)
    s.judge()
    return s
