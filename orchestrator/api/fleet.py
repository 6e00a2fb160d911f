"""``bluegreen fleet serve``: one API, Alertmanager receiver, ``/metrics`` and scheduler for every
deployment of a fleet.

Each deployment's endpoints are those of its own serve, under ``/api/deployments/{name}``;
``POST /api/models/rollback`` takes ``{"model": name}``; an alert reaches the deployment its
``deployment`` label names (``[alerts] label`` in the fleet file) and that deployment's own
``[alerts] rules`` decide; an alert naming no known deployment is recorded and acts on nothing.
Deployments are independent: each has its own lock, rollback queue and adapters, so rollbacks of
different deployments run at once, and a deployment whose settings do not validate is reported
(503 on its paths, its error in ``/api/deployments``) while the others are served — and taken in
again once its settings are fixed. Drills take turns on the host (``[drills] concurrent``).

Given an ``Overview``, the app also serves the dashboard (overview.py): the overview at ``/`` and
each deployment's page at ``/d/{name}/``, signed in with the fleet's token.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import Field

from bluegreen.orchestrator.api import dashboard, overview
from bluegreen.orchestrator.api.app import (
    AlertmanagerPayload,
    RollbackBody,
    Service,
    base_app,
    bearer,
    deployment_router,
    events_endpoint,
    rollback_through,
)
from bluegreen.orchestrator.api.guard import Gate, Guard, Refusal
from bluegreen.orchestrator.core.events import Event, EventLog
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError, ConfigError, InvalidRequest
from bluegreen.orchestrator.settings.fleet import Fleet, Member

PUBLIC = frozenset({"/healthz", "/metrics"})
MAX_BODY = 1024 * 1024  # Alertmanager's payloads for a whole fleet fit in this many bytes


class UnknownDeployment(InvalidRequest):
    """An API call for a deployment the fleet file does not list (404)."""


class BrokenDeployment(ConfigError):
    """A deployment of the fleet whose settings do not validate now (503); the others are served."""


class ModelRollbackBody(RollbackBody):
    model: str = Field(min_length=1, description="The deployment to roll back (its name in the fleet).")


def fleet_token() -> str:
    """The fleet serve's token: $BLUEGREEN_FLEET_TOKEN, else the fleet file's [serve] token_file."""
    return os.environ.get("BLUEGREEN_FLEET_TOKEN", "")


def read_fleet_token(fleet: Fleet) -> str:
    token = fleet_token()
    if fleet.serve.token_file:
        path = Path(fleet.serve.token_file)
        path = path if path.is_absolute() else fleet.root / path
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the fleet's serve.token_file {path}: {exc.strerror}",
                              "write the token into that file (one line), readable by this user only") from None
    if len(token) < 16:
        raise ConfigError("bluegreen fleet serve needs a token of at least 16 characters: every endpoint but "
                          "/metrics and /healthz requires it", "export BLUEGREEN_FLEET_TOKEN=$(openssl rand -hex 24), "
                                                               "or set [serve] token_file in the fleet file")
    return token


class FleetService:
    """What the fleet's API keeps: one ``Service`` per deployment, the broken ones' errors, the drill slot."""

    def __init__(self, fleet: Fleet, token: str, events: EventLog,
                 on_load: Callable[[str, Service], None] | None = None) -> None:
        self.fleet = fleet
        self.on_load = on_load  # serve schedules a deployment's jobs when it is served
        self.token = token
        self.events = events
        self.started = time.time()
        self.drill_slot = threading.BoundedSemaphore(fleet.drills_concurrent)
        self.members: dict[str, Service] = {}
        self.broken: dict[str, str] = {}
        self._loading = threading.Lock()
        for member in fleet.members:
            self.load(member)

    def load(self, member: Member) -> bool:
        """Build a deployment's service from its settings (validated afresh); False: they do not validate."""
        from bluegreen.orchestrator.core.fleet import member_settings

        try:
            settings = member_settings(self.fleet, member, validate=True)
            base = Deployment(settings, "serve", (self.fleet, member)).warm()
        except BluegreenError as exc:
            with self._loading:
                self.members.pop(member.name, None)
                self.broken[member.name] = exc.message
            return False
        service = Service(settings, self.token, self.events, base, self.drill_slot, member.name)
        with self._loading:
            self.members[member.name] = service
            self.broken.pop(member.name, None)
        if self.on_load is not None:
            self.on_load(member.name, service)
        return True

    def retry_broken(self) -> list[str]:
        """Load again each deployment whose settings did not validate; the names now served."""
        back = []
        for name in list(self.broken):
            if self.load(self.fleet.member(name)):
                back.append(name)
                self.events.add(Event("progress", f"{name}: its settings validate again; served", deployment=name))
        return back

    def service(self, name: str) -> Service:
        found = self.members.get(name)
        if found is not None:
            return found
        if name in self.broken:
            raise BrokenDeployment(f"the deployment {name} is not served: {self.broken[name]}",
                                   f"fix {self.fleet.directory(self.fleet.member(name))}/bluegreen.toml; serve takes "
                                   "it in again by itself   (runbooks/fleet.md)")
        known = ", ".join(m.name for m in self.fleet.members) or "none"
        raise UnknownDeployment(f"no deployment {name!r} in the fleet (it has: {known})",
                                "GET /api/deployments lists them")

    def deployments(self) -> list[dict[str, Any]]:
        out = []
        for m in self.fleet.members:
            svc = self.members.get(m.name)
            out.append({"name": m.name, "route": m.describe(), "url": svc.base.proxy_url if svc else None,
                        "served": svc is not None, "error": self.broken.get(m.name)})
        return out

    def alerts(self, request: Request, payload: AlertmanagerPayload) -> dict[str, Any]:
        """Each alert to the deployment its label names, all deployments at once; the rest recorded."""
        from bluegreen.orchestrator.automation.alerts import Alert, handle

        label = self.fleet.alert_label
        groups: dict[str, list[Alert]] = defaultdict(list)
        unrouted: list[dict[str, Any]] = []
        for a in payload.alerts:
            alert = Alert(a.status, a.labels, a.fingerprint, a.startsAt)
            name = a.labels.get(label)
            if name is not None and name in self.members:
                groups[name].append(alert)
            else:
                why = ("names no deployment" if name is None else
                       f"names {name}, " + ("whose settings do not validate" if name in self.broken
                                            else "which is not in the fleet"))
                unrouted.append({"alert": alert.name, "fingerprint": a.fingerprint, "label": label, "value": name,
                                 "why": why})
        for u in unrouted:
            self.events.add(Event("alert", f"alert {u['alert']} {u['why']} (label {label}): recorded, nothing done",
                                  **u))
        outcomes: dict[str, dict[str, Any]] = {}

        def act(name: str, alerts: list[Alert]) -> None:
            svc = self.members[name]
            try:
                outcomes[name] = handle(svc.deployment(request, "alertmanager"), alerts, svc.events).to_dict()
            except BluegreenError as exc:
                outcomes[name] = {"error": exc.message}

        threads = [threading.Thread(target=act, args=(name, alerts), name=f"alerts-{name}")
                   for name, alerts in groups.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"deployments": outcomes, "unrouted": unrouted}


def create_fleet_app(fleet_service: FleetService, reader: overview.Overview | None = None,
                     pages: overview.DeploymentPages | None = None) -> FastAPI:
    """The fleet's API; with ``reader`` (and ``pages``, made if not given), its dashboard too."""
    app = base_app(fleet_service.started)

    def refused(request: Request, exc: BluegreenError, status: int) -> Response:
        if request.url.path.startswith(overview.PAGES):  # a page: said in a page
            return overview.unserved_page(exc.message, exc.hint, status)
        return JSONResponse(exc.to_dict(), status_code=status)

    @app.exception_handler(UnknownDeployment)
    def _unknown(request: Request, exc: UnknownDeployment) -> Response:
        return refused(request, exc, 404)

    @app.exception_handler(BrokenDeployment)
    def _broken(request: Request, exc: BrokenDeployment) -> Response:
        return refused(request, exc, 503)

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    def metrics() -> PlainTextResponse:
        from bluegreen.orchestrator.api.metrics import render

        # A deployment whose settings do not validate is reported down (bluegreen_deployment_up 0).
        deps = [svc.base for svc in fleet_service.members.values()]
        return PlainTextResponse(render(deps, unreadable=sorted(fleet_service.broken)),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/api/deployments")
    def api_deployments() -> list[dict[str, Any]]:
        """Every deployment of the fleet: its route, where users reach it, and whether it is served."""
        return fleet_service.deployments()

    def resolve(request: Request) -> Service:
        return fleet_service.service(str(request.path_params["name"]))

    app.include_router(deployment_router(resolve), prefix="/api/deployments/{name}")

    @app.post("/api/models/rollback")
    def api_models_rollback(request: Request, body: ModelRollbackBody) -> dict[str, Any]:
        """Roll back the deployment ``model`` names: the same as /api/deployments/{model}/rollback."""
        return {"model": body.model, **rollback_through(fleet_service.service(body.model), request, body)}

    for path in ("/api/rollback", "/api/abort", "/api/promote", "/api/approve", "/api/status", "/api/history",
                 "/api/drills", "/api/backups"):
        def ask_for_a_name(path: str = path) -> JSONResponse:
            names = ", ".join(m.name for m in fleet_service.fleet.members)
            where = path.replace("/api/", "/api/deployments/NAME/")
            return JSONResponse(InvalidRequest(f"this serve answers for a fleet: name the deployment, {where} (the "
                                               f"fleet has: {names})", "GET /api/deployments").to_dict(),
                                status_code=400)

        app.add_api_route(path, ask_for_a_name, methods=["GET", "POST"], include_in_schema=False)

    events_endpoint(app, fleet_service.events)

    @app.post("/api/alerts")
    def api_alerts(request: Request, payload: AlertmanagerPayload) -> dict[str, Any]:
        """Alertmanager's webhook for the whole fleet: each alert acts on the deployment its label names."""
        return fleet_service.alerts(request, payload)

    page_gate: Gate | None = None
    if reader is not None:
        overview.install(app, fleet_service, reader, pages or overview.DeploymentPages(fleet_service))
        page_gate = dashboard.gate(fleet_service.token)
    api = bearer(fleet_service.token)

    def gate(conn: Any) -> Refusal | None:
        path = conn.scope["path"]
        if path in PUBLIC:
            return None
        if page_gate is not None and dashboard.owns(path, (overview.PAGES,)):
            return page_gate(conn)
        refused = api(conn)
        if refused is None or not path.startswith("/api/deployments/"):
            return refused
        # A deployment's own serve token (its serve.token_file), accepted on its own paths only.
        name = path.split("/")[3]
        svc = fleet_service.members.get(name)
        own = _own_token(svc) if svc is not None else ""
        return refused if not own or bearer(own)(conn) is not None else None

    app.add_middleware(Guard, gate=gate, max_body=MAX_BODY)
    return app


def _own_token(svc: Service) -> str:
    s = svc.settings.serve
    if not s.token_file:
        return ""
    path = Path(s.token_file)
    path = path if path.is_absolute() else Path(svc.settings.root) / path
    try:
        token = path.read_text().strip()
    except OSError:
        return ""
    return token if len(token) >= 16 else ""

