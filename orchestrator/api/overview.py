"""The fleet's dashboard: an overview of every deployment at ``/``, each deployment's page at ``/d/{name}/``.

The overview is cheap to keep fresh, whatever the fleet's size: one reading takes one ``show stat``
and one dump of the timings ring from the shared proxy (every deployment's counters and request
times at once), and each deployment's state from its own database. It reads every second while
someone watches and every ``UNWATCHED`` seconds otherwise, so a page is always served from a
reading already taken. A deployment's own page is today's page of a deployment's serve (dashboard.py),
with its own observer, which reads only while someone has that page open (observer.py).

Per deployment the overview shows what its users get: requests per second and the share answered
5xx (the proxy's counters of the deployment's backend), and the p95 of the proxy's timings of its
requests, over the interval between two readings.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from bluegreen.orchestrator.api import dashboard
from bluegreen.orchestrator.api.dashboard import HEADERS, e
from bluegreen.orchestrator.api.observer import Observer, Reader
from bluegreen.orchestrator.settings.core import COLORS

UNWATCHED = 10.0  # seconds between two readings of the overview while nobody watches it
SLOW = 5.0  # seconds between two readings of the journals' drills and the backup sets
PAGES = "/d/"  # a deployment's page is at /d/NAME/


class Overview(Reader):
    """Readings of every deployment of a fleet (see the module's docstring)."""

    name = "fleet-overview"

    def __init__(self, fleet_service: Any, interval: float = 1.0, unwatched: float = UNWATCHED) -> None:
        from bluegreen.orchestrator.proxy.timings import RingReader

        super().__init__(interval, unwatched)
        self.fleet_service = fleet_service
        self._rings: dict[int, RingReader] = {}  # one per proxy process: each has a ring of its own
        self._counters: dict[str, tuple[float, int, int]] = {}  # name -> (when, responses, 5xx)
        # The traffic figures of the last window, kept by readings that come sooner than a window after it
        # (a viewer arriving wakes the reader): a window of a few ms would say 0 req/s.
        self._traffic: dict[str, dict[str, float | None]] = {}
        self._window_at = -math.inf
        self._p95: dict[str, float | None] = {}
        self._slow: dict[str, tuple[str | None, str | None]] = {}  # name -> (last drill, newest verified backup)
        self._slow_at = -math.inf

    def read(self, now: float) -> dict[str, Any]:
        from bluegreen.orchestrator.core.fleet import backend_rows, member_status, proxy_rows
        from bluegreen.orchestrator.proxy.base import ServerStats

        began = time.monotonic()
        fleet = self.fleet_service.fleet
        errors: list[str] = []
        try:
            running, rows = proxy_rows(fleet)
        except Exception as exc:  # the overview says what it could not read, and reads the rest
            running, rows = False, {}
            errors.append(f"proxy: {getattr(exc, 'message', exc)}")
        window = now - self._window_at >= 0.8 * self.interval
        if window:
            self._p95 = self._latency(fleet, errors) if running else {}
            self._window_at = now
        slow = now - self._slow_at >= SLOW
        out = []
        for m in fleet.members:
            svc = self.fleet_service.members.get(m.name)
            if svc is None:
                out.append({"name": m.name, "route": m.describe(), "error": self.fleet_service.broken.get(
                    m.name, "not served"), "served": False})
                continue
            dep = svc.base
            try:
                s = member_status(m, dep, rows, journal=slow)
                warm = dep.state.get_doc("warm")
            except Exception as exc:
                out.append({"name": m.name, "route": m.describe(), "error": f"{type(exc).__name__}: "
                            f"{getattr(exc, 'message', exc)}", "served": True})
                continue
            if slow and s.error is None:
                self._slow[m.name] = (s.last_drill, s.newest_verified_backup)
            s.last_drill, s.newest_verified_backup = self._slow.get(m.name, (None, None))
            row: dict[str, Any] = {**s.to_dict(), "served": True, "rps": None, "error_rate": None,
                                   "p95_ms": self._p95.get(m.name)}
            if warm and warm.get("color") != s.live:
                row["warm"] = {"color": warm.get("color"), "left_s": max(0, int(float(warm.get("until") or 0) - now))}
            backend = backend_rows(rows, m.name).get("BACKEND")
            if backend is not None and window:
                stats = ServerStats.from_haproxy(backend)
                before = self._counters.get(m.name)
                self._counters[m.name] = (now, stats.responses_total, stats.responses_5xx)
                if before is not None and now - before[0] <= 3 * max(self.interval, self.unwatched):
                    answered = max(0, stats.responses_total - before[1])
                    row["rps"] = round(answered / max(1e-6, now - before[0]), 1)
                    failed = max(0, stats.responses_5xx - before[2])
                    row["error_rate"] = round(failed / answered, 4) if answered else 0.0
                self._traffic[m.name] = {"rps": row["rps"], "error_rate": row["error_rate"]}
            elif backend is not None:
                row.update(self._traffic.get(m.name, {}))
            out.append(row)
        if slow:
            self._slow_at = now
        return {"at": now, "proxy": f"haproxy on {fleet.proxy.host}:{fleet.proxy.port}", "proxy_running": running,
                "deployments": out, "errors": errors, "seconds": round(time.monotonic() - began, 4)}

    def _latency(self, fleet: Any, errors: list[str]) -> dict[str, float | None]:
        """Each deployment's p95 (ms) of the requests the proxy timed since the last reading."""
        from bluegreen.orchestrator.analysis.steps import quantile
        from bluegreen.orchestrator.core.fleet import timings_dumps
        from bluegreen.orchestrator.proxy.timings import Histogram, RingReader, haproxy_timings

        try:
            dumps = timings_dumps(fleet)
        except Exception as exc:
            errors.append(f"timings: {getattr(exc, 'message', exc)}")
            return {}
        lines = [line for number, dump in sorted(dumps.items())
                 for line in self._rings.setdefault(number, RingReader()).new_lines(dump)]
        histograms: dict[str, Histogram] = {}
        for (server, seconds), n in haproxy_timings(lines).items():
            backend = server.split("/", 1)[0]
            if backend.startswith("be_"):
                histograms.setdefault(backend[3:], Histogram()).observe(seconds, n)
        out: dict[str, float | None] = {}
        for name, h in histograms.items():
            q = quantile(0.95, (), h.cumulative())
            out[name] = None if q is None else round(q * 1000, 1)
        return out


class DeploymentPages:
    """Each deployment's page: its ``Pages``, with an observer started when the page is first opened."""

    def __init__(self, fleet_service: Any) -> None:
        self.fleet_service = fleet_service
        self._lock = threading.Lock()
        self._observers: dict[str, tuple[Any, Observer]] = {}  # name -> (the Service it reads, its observer)

    def __call__(self, request: Request) -> dashboard.Pages:
        name = str(request.path_params["name"])
        service = self.fleet_service.service(name)  # 404 or 503 for a name it does not serve
        with self._lock:
            known = self._observers.get(name)
            if known is None or known[0] is not service:  # new, or its settings were loaded again
                if known is not None:
                    known[1].stop()
                # Reads only while someone views the page (or streams it): math.inf between viewers.
                known = (service, Observer(service.base, service.settings.serve.dashboard_interval,
                                           unwatched=math.inf))
                self._observers[name] = known
        return dashboard.Pages(service, known[1], f"{PAGES.rstrip('/')}/{name}", home="/")

    def observers(self) -> dict[str, Observer]:
        with self._lock:
            return {name: obs for name, (_svc, obs) in self._observers.items()}

    def stop(self) -> None:
        for obs in self.observers().values():
            obs.stop()


# -- rendering --------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _health(status: str) -> str:
    cls = "ok" if status.startswith("UP") else "muted" if status in ("MAINT", "no check", "") else "bad"
    return f'<span class="{cls}">{e(status or "—")}</span>'


def _deployment_row(d: dict[str, Any]) -> str:
    name = d["name"]
    link = f'<a href="{PAGES}{e(name)}/" id="link-{e(name)}"><b>{e(name)}</b></a>'
    if d.get("error"):
        page = link if d.get("served") else f'<b>{e(name)}</b>'
        return (f'<tr id="dep-{e(name)}" class="broken"><td>{page}<div class="muted">{e(d.get("route"))}</div></td>'
                f'<td colspan="9" class="bad" id="error-{e(name)}">{e(d["error"])}</td></tr>')
    live = d.get("live")
    weights = d.get("weights")
    health = d.get("health") or {}
    colours = "<br>".join(
        f'<span class="{c}">{c}</span> {e(weights.get(c, 0)) if weights else "?"} % {_health(health.get(c, ""))}'
        for c in COLORS)
    standby = []
    warm = d.get("warm")
    if warm:
        standby.append(f'<span class="{e(warm["color"])}">{e(warm["color"])}</span> warm, {e(warm["left_s"])} s left')
    if d.get("standby"):
        standby.append(f'standby <span class="{e(d["standby"])}">{e(d["standby"])}</span>')
    rps = d.get("rps")
    return (f'<tr id="dep-{e(name)}"><td>{link}<div class="muted">{e(d.get("route"))}</div></td>'
            f'<td>' + (f'<span class="{e(live)}">{e(live)}</span> <b id="version-{e(name)}">{e(d.get("version"))}</b>'
                       if live else f'<span class="bad" id="version-{e(name)}">nothing live</span>') + '</td>'
            f'<td>{colours}</td>'
            f'<td class="num">{"—" if rps is None else f"{rps:.0f}"}</td>'
            f'<td class="num" id="errors-{e(name)}">{_pct(d.get("error_rate"))}</td>'
            f'<td class="num">{_ms(d.get("p95_ms"))}</td>'
            f'<td id="release-{e(name)}">' + (f'<b>{e(d["release"])}</b>' if d.get("release") else
                                              '<span class="muted">none</span>') + '</td>'
            f'<td>{"<br>".join(standby) or "<span class=muted>none</span>"}</td>'
            f'<td>{e(d.get("last_drill") or "—")}</td><td>{e(d.get("newest_verified_backup") or "—")}</td></tr>')


def render_sections(snap: dict[str, Any]) -> dict[str, str]:
    """The overview's sections by element id (the page and each server-sent event carry these)."""
    deps = snap.get("deployments") or []
    broken = [d for d in deps if d.get("error")]
    summary = (f'<h2>Fleet</h2><p>{len(deps)} deployments, <span id="fleet-served">{len(deps) - len(broken)} '
               f'served</span>' + (f', <span class="bad">{len(broken)} with an error</span>' if broken else "")
               + f'. Proxy {e(snap.get("proxy"))}: '
               + ('<span class="ok">running</span>' if snap.get("proxy_running") else
                  '<span class="bad">not running</span>')
               + f'. <span class="muted">Read in {1000 * float(snap.get("seconds") or 0):.0f} ms.</span></p>'
               + "".join(f'<p class="bad">{e(n)}</p>' for n in snap.get("errors") or []))
    table = ('<h2>Deployments</h2><table><tr><th>deployment</th><th>live</th><th>weights and health</th>'
             '<th>req/s</th><th>5xx</th><th>p95</th><th>release</th><th>warm / standby</th><th>last drill</th>'
             '<th>verified backup</th></tr>' + "".join(_deployment_row(d) for d in deps) + "</table>"
             + ('' if deps else '<p class="muted">The fleet has no deployments: bluegreen fleet add DIR.</p>'))
    return {"fleet": summary, "deployments": table}


def overview_page(snap: dict[str, Any], csrf: str, fleet_name: str, flash: str = "") -> str:
    """The overview: a row per deployment, linking to its page."""
    sections = render_sections(snap)
    body = (dashboard.header(f"fleet {fleet_name}", csrf, None, snap.get("at"))
            + dashboard.streamed(sections, ("fleet", "deployments"), "/ui/stream", flash)
            .replace('<main>', '<main style="grid-template-columns: 1fr">', 1))
    return dashboard.page(f"bluegreen: fleet {fleet_name}", body, refresh=True)


def unserved_page(message: str, hint: str, status: int) -> HTMLResponse:
    """A deployment's page that cannot be shown: the reason, and the way back."""
    body = (f'<header><h1>bluegreen</h1><a href="/" id="overview-link" style="color:#93c5fd">All deployments</a>'
            f'</header><main><section><h2>Not served</h2><p class="bad" id="unserved">{e(message)}</p>'
            f'<p class="muted">{e(hint)}</p></section></main>')
    return HTMLResponse(dashboard.page("bluegreen: not served", body), status_code=status, headers=HEADERS)


# -- routes -----------------------------------------------------------------------------------------
def install(app: FastAPI, fleet_service: Any, overview: Overview, deployment_pages: DeploymentPages) -> None:
    """The fleet serve's dashboard: sign-in, the overview at ``/``, each deployment's page under /d/NAME/."""
    token: str = fleet_service.token
    dashboard.sessions(app, token)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Response:
        session = dashboard.session_of(token, request)
        if session is None:
            return dashboard.html_response(dashboard.login_page())
        # Served from the reading already taken (never older than a quiet interval and one more);
        # asking wakes the reader to its fast interval.
        snap = overview.current(max_age=overview.unwatched + 2 * overview.interval + 1)
        return dashboard.with_flash(request, lambda flash: overview_page(
            snap, dashboard.csrf_for(token, session), str(fleet_service.fleet.path), flash), "/")

    @app.get("/ui/stream", include_in_schema=False)
    async def stream(request: Request) -> Response:
        session = dashboard.session_of(token, request)
        if session is None:
            return PlainTextResponse("sign in first", status_code=401, headers=HEADERS)
        return dashboard.event_stream(token, session, request, overview, render_sections)

    app.include_router(dashboard.pages(token, deployment_pages), prefix=PAGES + "{name}")


def stop(overview: Overview, deployment_pages: DeploymentPages) -> None:
    with contextlib.suppress(Exception):
        overview.stop()
    deployment_pages.stop()
