"""The API: rollback, abort, promote, approve, status, history, backups, drills, events, the
Alertmanager webhook, Prometheus metrics.

Every endpoint but ``/metrics`` and ``/healthz`` needs ``Authorization: Bearer <token>``, compared
in constant time; a token in the URL is refused (URLs end up in logs). Both are checked from the
headers before any of the body is read (guard.py), and no body larger than ``serve.max_body`` is
read at all. A refusal changes nothing: 401 without a valid token (the same few words whatever was
sent), 413 for a body over the limit, 422 naming the field of a malformed body once the token is
good, 409 with the lock's holder while another change runs. Each request works on its own
``Deployment`` built from settings loaded once, so no start-up cost stands between a rollback
request and the switch.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from bluegreen.orchestrator.api import dashboard
from bluegreen.orchestrator.api.guard import Gate, Guard, Refusal
from bluegreen.orchestrator.core.events import EventLog, Progress, tagged
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError, InvalidRequest, LockHeld

if TYPE_CHECKING:
    from bluegreen.orchestrator.automation.drill import DrillReport

STATUS = {LockHeld: 409, InvalidRequest: 409}
PUBLIC = frozenset({"/healthz", "/metrics"})
_BEARER = (("WWW-Authenticate", "Bearer"),)
TOKEN_IN_URL = Refusal.detail(401, "a token in the URL is refused (URLs are logged): send Authorization: Bearer",
                              _BEARER)
NO_TOKEN = Refusal.detail(401, "missing or wrong bearer token", _BEARER)


def bearer(token: str) -> Gate:
    """The API's gate: ``Authorization: Bearer <token>`` compared in constant time, and no token in the URL."""
    expected = token.encode()

    def gate(conn: HTTPConnection) -> Refusal | None:
        if any(name in conn.query_params for name in ("token", "access_token", "api_key")):
            return TOKEN_IN_URL
        scheme, _, given = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return NO_TOKEN
        return None

    return gate


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RollbackBody(Body):
    reason: str = Field("", max_length=1000)
    to: str | None = Field(None, description='A version from history, "baseline", or null for the previous one.')
    away_from: str | None = Field(None, alias="from", description="The version to roll back from; without it, a "
                                  "request within serve.rollback_dedupe of the last rollback counts as a repeat.")


class AlertItem(BaseModel):
    """One alert; the field names are Alertmanager's own (camelCase)."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: str
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1)


class AlertmanagerPayload(BaseModel):
    """Alertmanager's webhook body, version 4."""

    version: Literal["4"]
    groupKey: str
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""
    truncatedAlerts: int = 0
    alerts: list[AlertItem] = Field(min_length=1)


class Service:
    """What the API keeps between requests: the settings, the token, the events, the notifier."""

    def __init__(self, settings: Any, token: str, events: EventLog, base: Deployment | None = None,
                 drill_slot: Any = None, name: str | None = None) -> None:
        self.settings = settings
        self.drill_slot = drill_slot  # a fleet's semaphore: drills of the host's deployments take turns
        self.log = events
        # In a fleet every event says which deployment it is about (GET /api/events?deployment=).
        self.events: Progress = events if name is None else tagged(events, name)
        self.base = base or Deployment(settings, actor="serve")
        self.token = token
        self.started = time.time()
        # Rollback requests are taken one at a time; one that comes within serve.rollback_dedupe of the
        # last one asked for the same thing (a storm of pagers and dashboards) and is answered "already done".
        self.rollback_mutex = threading.Lock()
        self.last_rollback_done = -1e9

    def drill(self, dep: Deployment) -> DrillReport:
        """A drill now; in a fleet, queued behind the host's other drills (fleet [drills] concurrent)."""
        from bluegreen.orchestrator.automation.drill import drill

        return drill(dep, progress=self.events, slot=self.drill_slot)

    def deployment(self, request: Request, face: str = "api") -> Deployment:
        client = request.client.host if request.client else "unknown"
        return self.base.acting_as(f"{face}@{client}")

    def rollback(self, request: Request, to: str | None, reason: str, away_from: str | None,
                 face: str = "api") -> Any:
        """One rollback at a time; a repeat within serve.rollback_dedupe (without "from") is answered, not done."""
        from bluegreen.orchestrator.core.rollback import RollbackResult, rollback

        dep = self.deployment(request, face)
        with self.rollback_mutex:
            arrived = getattr(request.state, "arrived", time.monotonic())
            since_last = arrived - self.last_rollback_done
            if to is None and away_from is None and since_last < self.settings.serve.rollback_dedupe:
                live = dep.state.live_color() or ""
                record = dep.state.environment(live)
                note = (f"already done: a rollback {since_last:.1f}s before this request "
                        f"left {live} serving {record.version if record else '?'} (send \"from\" to roll back "
                        "again at once)")
                return RollbackResult(None, live, record.image if record else "", record.version if record else "",
                                      "model", True, 0.0, [note])
            result = rollback(dep, to, reason, progress=self.events, away_from=away_from)
            self.last_rollback_done = time.monotonic()
            return result


def base_app(started: float) -> FastAPI:
    """The FastAPI app both serves share: errors as JSON with their status, arrival time, the schema, health."""
    # The schema and its pages need the token like the rest: they are served under /api.
    app = FastAPI(title="bluegreen", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Blue/green releases of ML model servers: rollback, alerts, drills, status.")

    @app.middleware("http")
    async def arrival(request: Request, call_next: Any) -> Any:
        request.state.arrived = time.monotonic()  # in the event loop, when the request came in
        return await call_next(request)

    @app.exception_handler(BluegreenError)
    def _error(request: Request, exc: BluegreenError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=next((code for cls, code in STATUS.items()
                                                             if isinstance(exc, cls)), 500))

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1)}

    return app


def rollback_through(service: Service, request: Request, body: RollbackBody) -> dict[str, Any]:
    result = service.rollback(request, body.to, body.reason or "requested through the API", body.away_from)
    return dict(result.to_dict())


def deployment_router(resolve: Callable[[Request], Service]) -> APIRouter:
    """The endpoints of one deployment: at /api in a deployment's serve, at /api/deployments/{name} in a fleet's."""
    router = APIRouter()
    # (A default, not an Annotated alias: with postponed annotations FastAPI cannot see a local alias.)
    dep = Depends(resolve)

    @router.post("/rollback")
    def api_rollback(request: Request, body: RollbackBody, service: Service = dep) -> dict[str, Any]:
        """All traffic back to the previous version (or ``to``): a weight switch while it is warm."""
        return rollback_through(service, request, body)

    @router.post("/abort")
    def api_abort(request: Request, service: Service = dep) -> dict[str, Any]:
        from bluegreen.orchestrator.core.rollback import request as ask

        return ask(service.deployment(request), "abort", progress=service.events).to_dict()

    @router.post("/promote")
    def api_promote(request: Request, service: Service = dep) -> dict[str, Any]:
        """Skip the release's remaining steps; while it waits for an approval check, approve that instead."""
        from bluegreen.orchestrator.core.rollback import request as ask

        return ask(service.deployment(request), "promote", progress=service.events).to_dict()

    @router.post("/approve")
    def api_approve(request: Request, service: Service = dep) -> dict[str, Any]:
        """Approve the approval check the release waits on (409 when none waits: nothing is skipped)."""
        from bluegreen.orchestrator.core.rollback import approve

        return approve(service.deployment(request), progress=service.events).to_dict()

    @router.get("/status")
    def api_status(request: Request, service: Service = dep) -> dict[str, Any]:
        from bluegreen.orchestrator.core.status import status

        return status(service.deployment(request)).to_dict()

    @router.get("/history")
    def api_history(request: Request, limit: int = 20, service: Service = dep) -> dict[str, Any]:
        from bluegreen.orchestrator.state.journal import Journal

        dep = service.deployment(request)
        limit = max(1, min(limit, 500))
        return {"releases": [r.to_dict() for r in Journal(dep.state).recent(limit)],
                "audit": [e.to_dict() for e in dep.state.history(limit)]}

    @router.get("/backups")
    def api_backups(request: Request, service: Service = dep) -> list[dict[str, Any]]:
        return [s.to_dict() for s in service.deployment(request).backups.all_sets()]

    @router.post("/drills")
    def api_drill(request: Request, service: Service = dep) -> dict[str, Any]:
        """Run a rollback drill now (skipped, and said so, while a release holds the lock)."""
        return service.drill(service.deployment(request)).to_dict()

    @router.get("/drills")
    def api_drills(request: Request, limit: int = 20, service: Service = dep) -> list[dict[str, Any]]:
        from bluegreen.orchestrator.state.journal import Journal

        journal = Journal(service.deployment(request).state)
        return [r.to_dict() for r in journal.recent(500) if r.kind == "drill"][: max(1, min(limit, 500))]

    return router


def events_endpoint(app: FastAPI, events: EventLog) -> None:
    @app.get("/api/events")
    def api_events(after: int = 0, wait: float = 0.0, deployment: str | None = None) -> list[dict[str, Any]]:
        """Events after ``after`` (their ids count up); ``wait`` seconds for the first new one; in a fleet,
        ``deployment`` keeps only one deployment's."""
        found = events.wait(after, min(wait, 30.0)) if wait > 0 else events.since(after)
        return [e for e in found if deployment is None or e.get("deployment") == deployment]


def create_app(service: Service, observer: Any = None) -> FastAPI:
    app = base_app(service.started)

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    def metrics() -> PlainTextResponse:
        from bluegreen.orchestrator.api.metrics import render

        # The serve's own deployment, whose adapters (proxy, backups, archive) are kept between scrapes.
        return PlainTextResponse(render([service.base]), media_type="text/plain; version=0.0.4")

    def the_service(request: Request) -> Service:  # annotated: FastAPI reads a resolver's signature
        return service

    app.include_router(deployment_router(the_service), prefix="/api")

    @app.post("/api/models/rollback")
    def api_models_rollback(request: Request, body: RollbackBody) -> dict[str, Any]:
        """The same as /api/rollback, under the path the service's runbooks name."""
        return rollback_through(service, request, body)

    events_endpoint(app, service.log)

    @app.post("/api/alerts")
    def api_alerts(request: Request, payload: AlertmanagerPayload) -> dict[str, Any]:
        """Alertmanager's webhook: rules decide; the same alert acts once however often it arrives."""
        from bluegreen.orchestrator.automation.alerts import Alert, handle

        alerts = [Alert(a.status, a.labels, a.fingerprint, a.startsAt) for a in payload.alerts]
        return handle(service.deployment(request), alerts, service.events).to_dict()

    pages: Gate | None = None
    if observer is not None:
        dashboard.install(app, service, observer)
        pages = dashboard.gate(service.token)
    api = bearer(service.token)

    def gate(conn: HTTPConnection) -> Refusal | None:
        """Who may ask, by path: anything not public and not a page needs the bearer token (even a 404)."""
        path = conn.scope["path"]
        if path in PUBLIC:
            return None
        if pages is not None and dashboard.owns(path):
            return pages(conn)
        return api(conn)

    # Added last, so it is the outermost of the app's own middleware: nothing reads a body before it.
    app.add_middleware(Guard, gate=gate, max_body=service.settings.serve.max_body)
    return app
