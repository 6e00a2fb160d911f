"""Automatic failover, made official: what the proxy did by itself, recorded and settled.

The proxy fails over on its own (the warm previous colour stands by as a backup server; see the
drivers). bluegreen learns of it at the next command that holds the lock (and ``serve``, on its
timer) and does two things:

- The live colour's container is gone or has exited for good, and the standby is healthy: the
  standby becomes live (weights, state, journal entry of kind ``failover``), and the dead
  colour's logs are kept in ``<state>/logs/`` for the operator.
- The standby answered requests since it was last looked at, but the live colour is back (its
  process was restarted by Docker): the episode is recorded, nothing else changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from bluegreen.orchestrator.common.private import private_dir
from bluegreen.orchestrator.core.switch import move_traffic, proxy_sees_up
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError
from bluegreen.orchestrator.proxy.base import STANDBY
from bluegreen.orchestrator.state.journal import Journal

Progress = Callable[[str], None]
SEEN = "standby_seen"  # state doc: {color, sessions} the standby had answered when last looked at


def _quiet(_msg: str) -> None:
    pass


def notice(dep: Deployment, progress: Progress = _quiet) -> list[str]:
    """Settle an automatic failover the proxy made; notes for the audit log (empty: nothing happened)."""
    live = dep.state.live_color()
    if live is None or not dep.proxy.running():
        return []
    try:
        standby = dep.proxy.standby()
        stats = dep.proxy.stats()
    except BluegreenError:
        return []
    if standby is None:
        dep.state.set_doc(SEEN, None)
        return []
    # HAProxy counts the standby line apart; nginx counts requests to the colour's address.
    served = stats.get(standby + STANDBY) or stats.get(standby)
    sessions = served.total_sessions if served is not None else 0
    seen = dep.state.get_doc(SEEN) or {}
    before = int(seen.get("sessions", 0)) if seen.get("color") == standby else 0
    new = sessions - before if sessions >= before else sessions  # a restarted proxy counts from zero
    dep.state.set_doc(SEEN, {"color": standby, "sessions": sessions})
    info = dep.runtime.inspect(live)
    dead = info is None or info.state in ("exited", "dead", "created")
    if dead:
        return [_make_official(dep, live, standby, info.exit_code if info else None, new, progress)]
    if new > 0:
        journal = Journal(dep.state)
        record, standby_record = dep.state.environment(live), dep.state.environment(standby)
        rid = journal.begin("failover", "proxy", standby_record.image if standby_record else "",
                            standby_record.version if standby_record else "", {}, live, standby,
                            record.image if record else None, record.version if record else None, {},
                            {"steps": []})
        text = (f"the proxy sent {new} requests to the standby {standby} while {live} did not answer; "
                f"{live} is back and serves again")
        journal.finish(rid, "transient", text)
        return [text]
    return []


def _make_official(dep: Deployment, dead: str, standby: str, exit_code: int | None, served: int,
                   progress: Progress) -> str:
    began = time.monotonic()
    if not proxy_sees_up(dep, standby, dep.settings.environments.health_timeout, progress):
        # Its standby line serves only while its main line could too (one address, one check):
        # moving weights to a colour the proxy holds down would leave no server at all.
        return (f"{dead} died, but {dep.proxy.name} does not take the standby {standby} as up either: nothing "
                "was changed (bluegreen status; runbooks/failover.md)")
    journal = Journal(dep.state)
    dead_record, standby_record = dep.state.environment(dead), dep.state.environment(standby)
    assert standby_record is not None
    rid = journal.begin("failover", "proxy", standby_record.image, standby_record.version, standby_record.env,
                        dead, standby, dead_record.image if dead_record else None,
                        dead_record.version if dead_record else None, dead_record.env if dead_record else {},
                        {"steps": [{"name": "switch"}]})
    journal.step_started(rid, 0, "switch")
    logs = keep_logs(dep, dead)
    weights = {standby: 100, dead: 0}
    progress(f"{dead} died ({'absent' if exit_code is None else f'exit code {exit_code}'}): {standby} took its "
             "traffic; making it live")
    move_traffic(dep, weights, progress)
    dep.proxy.set_standby(None)
    previous = ({"color": dead, "image": dead_record.image, "version": dead_record.version, "env": dead_record.env}
                if dead_record else None)
    dep.state.switch_live(standby, weights, previous=previous, warm=None)
    moved = ""
    if dep.workers:  # the workers follow the traffic to the standby, at its version
        from bluegreen.orchestrator.core.workers import follow

        moved = follow(dep, standby, standby_record.image, standby_record.env, progress, prove=False)
    journal.step_finished(rid, 0, "done", {"weights": weights, "logs": str(logs) if logs else None,
                                           **({"workers": moved} if moved else {})})
    how = "its container is gone" if exit_code is None else f"its container exited with code {exit_code}"
    text = (f"automatic failover: {dead} ({dead_record.version if dead_record else '?'}) died ({how}); the proxy "
            f"sent its traffic to the standby {standby} ({standby_record.version}), {served} requests so far; "
            f"{standby} is live now" + (f"; {dead}'s logs are in {logs}" if logs else ""))
    journal.finish(rid, "failed_over", text, round(time.monotonic() - began, 3))
    dep.notify("failover", text, dead=dead, live=standby)
    return text


def keep_logs(dep: Deployment, color: str) -> Path | None:
    """The colour's container output, kept in the state directory before anything replaces it."""
    text = dep.runtime.log_tail(color, lines=2000)
    if not text:
        return None
    folder = private_dir(dep.settings.state_dir / "logs")
    path = folder / f"{dep.runtime.name(color)}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    return path
