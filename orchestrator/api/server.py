"""``bluegreen serve``: the API on uvicorn, and APScheduler running the timed work.

Jobs: scheduled rollback drills (``[drills] schedule``, cron), the post-release monitor
(``[monitor] interval``), and the watch (``[serve] watch_interval``): it settles what the proxy did
by itself (an automatic failover) and retires the warm colour when its window ends. Misfired runs
after downtime are coalesced into one, never run twice, and a job never overlaps itself. The
process refuses to start without a token, and binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.core.events import Event, EventLog, Progress
from bluegreen.orchestrator.errors import BluegreenError, ConfigError, LockHeld


def read_token(settings: Any) -> str:
    token = str(settings.serve.token.get_secret_value())
    if settings.serve.token_file:
        path = Path(settings.serve.token_file)
        path = path if path.is_absolute() else Path(settings.root) / path
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read serve.token_file {path}: {exc.strerror}",
                              "write the token into that file (one line), readable by this user only") from None
    if len(token) < 16:
        raise ConfigError("bluegreen serve needs a token of at least 16 characters: every endpoint but /metrics "
                          "and /healthz requires it",
                          "export BLUEGREEN_SERVE__TOKEN=$(openssl rand -hex 24), or set serve.token_file "
                          "(runbooks/automation.md)")
    return token


def scheduler() -> Any:
    from apscheduler.schedulers.background import BackgroundScheduler

    # Enough threads for every deployment of a fleet to run its watch at once.
    return BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                             "misfire_grace_time": 3600},
                               executors={"default": {"type": "threadpool", "max_workers": 20}})


def schedule(settings: Any, events: Progress, base: Any = None, into: Any = None, prefix: str = "",
             drill_slot: Any = None) -> Any:
    """The scheduler with one deployment's jobs, started (or those jobs added ``into`` another, their
    ids after ``prefix``); the jobs share ``base``'s adapters (one is made if not given)."""
    from apscheduler.triggers.cron import CronTrigger

    from bluegreen.orchestrator.deployment import Deployment

    base = base or Deployment(settings, actor="serve")
    jobs = into if into is not None else scheduler()

    def run_drill() -> None:
        from bluegreen.orchestrator.automation.drill import drill

        drill(base.acting_as("scheduler"), progress=events, slot=drill_slot)

    def run_monitor() -> None:
        from bluegreen.orchestrator.automation.monitor import check

        report = check(base.acting_as("monitor"), progress=events)
        events(Event("monitor", f"monitor: {report.verdict}" + (f"; {report.action}" if report.action else ""),
                     **report.to_dict()))

    def watch() -> None:
        from bluegreen.orchestrator.core.recovery import housekeeping

        dep = base.acting_as("serve")
        if dep.pitr is not None:
            try:
                said = dep.pitr.supervise()  # a dead replicator started again; a failing archiver said
                if said:
                    events(Event("progress", said))
            except BluegreenError as exc:
                events(Event("progress", f"the {dep.pitr.tool} archive: {exc.message}"))
        try:
            with dep.lock("watch"):
                for note in housekeeping(dep, events):
                    events(Event("failover" if "failover" in note else "progress", note))
        except LockHeld:
            pass  # a release or a rollback is running: it does this itself

    def run_backup() -> None:
        from bluegreen.orchestrator.core.snapshots import scheduled

        scheduled(base.acting_as("scheduler"), progress=events)

    if settings.backups.schedule:
        jobs.add_job(run_backup, CronTrigger.from_crontab(settings.backups.schedule, timezone="UTC"),
                     id=f"{prefix}backup")
    if settings.drills.schedule:
        jobs.add_job(run_drill, CronTrigger.from_crontab(settings.drills.schedule, timezone="UTC"),
                     id=f"{prefix}drill")
    if settings.monitor.interval > 0:
        jobs.add_job(run_monitor, "interval", seconds=settings.monitor.interval, id=f"{prefix}monitor")
    jobs.add_job(watch, "interval", seconds=settings.serve.watch_interval, id=f"{prefix}watch")
    if into is None:
        jobs.start()
    return jobs


def serve(settings: Any, host: str | None, port: int | None) -> None:
    """Run until interrupted (SIGINT or SIGTERM)."""
    import uvicorn

    from bluegreen.orchestrator.api.app import Service, create_app

    token = read_token(settings)
    host = host or settings.serve.host
    from bluegreen.orchestrator.deployment import Deployment

    events = EventLog(settings.serve.events)
    # One set of adapters (engine client, proxy, state) for every request and job: nothing is built
    # between a rollback request and the switch.
    base = Deployment(settings, actor="serve").warm()
    jobs = schedule(settings, events, base)
    from bluegreen.orchestrator.api.observer import Observer

    observer = Observer(base, settings.serve.dashboard_interval).start()
    app = create_app(Service(settings, token, events, base), observer)
    print(f"bluegreen serve on http://{host}:{port or settings.serve.port} (dashboard at /; scheduler: "
          f"{', '.join(job.id for job in jobs.get_jobs())})", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=port or settings.serve.port, log_level="warning", access_log=False)
    finally:
        observer.stop()
        jobs.shutdown(wait=False)


def serve_fleet(fleet: Any, host: str | None, port: int | None) -> None:
    """The fleet's serve: every deployment's API and jobs in one process, until interrupted."""
    import uvicorn

    from bluegreen.orchestrator.api.fleet import FleetService, create_fleet_app, read_fleet_token
    from bluegreen.orchestrator.api.overview import DeploymentPages, Overview, stop

    token = read_fleet_token(fleet)
    events = EventLog(2000 + 200 * len(fleet.members))
    jobs = scheduler()

    def scheduled(name: str, svc: Any) -> None:  # a deployment's jobs, when it is served (again)
        for job in jobs.get_jobs():
            if job.id.startswith(f"{name}:"):
                job.remove()
        schedule(svc.settings, svc.events, svc.base, into=jobs, prefix=f"{name}:", drill_slot=svc.drill_slot)

    service = FleetService(fleet, token, events, on_load=scheduled)
    jobs.add_job(service.retry_broken, "interval", seconds=5.0, id="fleet:settings")
    jobs.start()
    # The dashboard: the overview reads all the time (slowly while nobody watches); a deployment's page
    # reads only while it is open.
    reader = Overview(service).start()
    pages = DeploymentPages(service)
    app = create_fleet_app(service, reader, pages)
    host = host or fleet.serve.host
    served = ", ".join(service.members) or "none"
    broken = "".join(f"; NOT served: {n} ({why})" for n, why in service.broken.items())
    print(f"bluegreen fleet serve on http://{host}:{port or fleet.serve.port} (dashboard at /) for {served}{broken}",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=port or fleet.serve.port, log_level="warning", access_log=False)
    finally:
        stop(reader, pages)
        jobs.shutdown(wait=False)
