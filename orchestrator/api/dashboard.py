"""The dashboard: what is live, what is moving, and one-click rollback.

Server-rendered HTML; a small script (``/ui/dashboard.js``) replaces the page's sections in place
from server-sent events (``/ui/stream``), one reading of the deployment per second shared by every
viewer (observer.py). With JavaScript off the page still reads, and refreshes itself.

A deployment's page and its actions are a router (``pages``) mounted where the serve wants them:
at ``/`` in a deployment's serve, at ``/d/{name}/`` in a fleet's (overview.py has the fleet's own
page), every link and form of the page under that prefix; sign-in and sign-out (``sessions``) are
the app's, once.

Sign-in takes the API token once, in a form; the browser then keeps a session cookie (HttpOnly,
SameSite=Strict) holding an HMAC of the token and its issue time, never the token, and never in a
URL. Every page but the sign-in form and the script needs the session, checked from the cookie
before any of a form's body is read (``gate``, used by guard.py). Every form that changes something
carries a CSRF token derived from the session. While a release waits for an approval check, Approve
answers it (nothing else: a late click never skips steps). A rollback is confirmed on a page that names the
version it goes back to, and the form names the version it goes away from, so a stale page or a
second click cannot roll back twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.requests import HTTPConnection

from bluegreen.orchestrator.api.guard import Gate, Refusal
from bluegreen.orchestrator.errors import BluegreenError

SESSION_COOKIE = "bluegreen_session"
FLASH_COOKIE = "bluegreen_flash"
SESSION_SECONDS = 12 * 3600
SCRIPT = Path(__file__).with_name("dashboard.js")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
COLOURS = {"blue": "#2563eb", "green": "#16a34a"}


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    issued = str(int(now if now is not None else time.time()))
    return f"{issued}.{_mac(token, 'session:' + issued)}"


def session_ok(token: str, value: str | None, now: float | None = None) -> bool:
    if not value or "." not in value:
        return False
    issued, _, mac = value.partition(".")
    if not issued.isdigit() or not hmac.compare_digest(mac, _mac(token, "session:" + issued)):
        return False
    age = (now if now is not None else time.time()) - int(issued)
    return -60 <= age <= SESSION_SECONDS


def csrf_for(token: str, session: str) -> str:
    return _mac(token, "csrf:" + session)[:32]


# The sign-in page (or the dashboard, with a session), the sign-in form and the page's script.
OPEN_PATHS = frozenset({"/", "/login", "/ui/dashboard.js"})


def owns(path: str, prefixes: tuple[str, ...] = ()) -> bool:
    """Whether ``path`` is one of the dashboard's (the rest of the app is the API's); a fleet's pages
    are also under ``prefixes``."""
    return (path in OPEN_PATHS or path == "/logout" or path.startswith("/ui/")
            or any(path.startswith(prefix) for prefix in prefixes))


def gate(token: str) -> Gate:
    """The pages' gate: a valid session cookie, else the sign-in page with 401; the open paths pass."""
    def check(conn: HTTPConnection) -> Refusal | None:
        if conn.scope["path"] in OPEN_PATHS or session_ok(token, conn.cookies.get(SESSION_COOKIE)):
            return None
        return Refusal(401, login_page("Sign in first.").encode(), "text/html; charset=utf-8",
                       tuple(HEADERS.items()))

    return check


# -- rendering --------------------------------------------------------------------------------------
def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, refresh: bool = False) -> str:
    noscript = '<noscript><meta http-equiv="refresh" content="5"></noscript>' if refresh else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>{noscript}
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #111; background: #f6f7f9; }}
header {{ background: #111827; color: #fff; padding: 10px 20px; display: flex; gap: 16px; align-items: baseline; }}
header h1 {{ font-size: 18px; margin: 0; }}
main {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 14px; padding: 14px 20px; }}
section {{ background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 14px; }}
h2 {{ font-size: 15px; margin: 0 0 8px; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ text-align: left; padding: 3px 6px;
  border-bottom: 1px solid #f0f0f0; vertical-align: top; }}
.blue {{ color: {COLOURS['blue']}; font-weight: 600; }} .green {{ color: {COLOURS['green']}; font-weight: 600; }}
.ok {{ color: #15803d; }} .bad {{ color: #b91c1c; font-weight: 600; }} .muted {{ color: #6b7280; }}
.live {{ font-size: 22px; }} .flash {{ background: #fef3c7; border: 1px solid #f59e0b; padding: 8px 12px;
  margin: 14px 20px 0; border-radius: 6px; }}
button, .button {{ font: inherit; padding: 6px 12px; border-radius: 6px; border: 1px solid #9ca3af;
  background: #fff; cursor: pointer; text-decoration: none; color: #111; display: inline-block; }}
button.danger, .button.danger {{ background: #b91c1c; color: #fff; border-color: #991b1b; }}
form.inline {{ display: inline; }} .actions > * {{ margin-right: 6px; }}
svg {{ background: #fafafa; border: 1px solid #eee; }}
#actions {{ grid-column: 1 / -1; }} #colours {{ grid-column: span 2; }}
td.num {{ white-space: nowrap; text-align: right; }} #checks td {{ overflow-wrap: anywhere; }}
@media (max-width: 900px) {{ #colours {{ grid-column: auto; }} }}
</style></head><body>{body}</body></html>"""


def login_page(message: str = "") -> str:
    note = f'<p class="bad" id="login-error">{e(message)}</p>' if message else ""
    return page("bluegreen: sign in", f"""<header><h1>bluegreen</h1></header>
<main><section><h2>Sign in</h2>{note}
<form method="post" action="/login" id="login">
<label>API token <input type="password" name="token" id="token" autocomplete="current-password" required></label>
<button type="submit" id="sign-in">Sign in</button></form>
<p class="muted">The token is <code>BLUEGREEN_SERVE__TOKEN</code> or the file named by
<code>serve.token_file</code>; the browser keeps a session cookie, not the token.</p></section></main>""")


def _weight(status: dict[str, Any], color: str) -> str:
    weights = status.get("weights")
    return "?" if weights is None else f"{weights.get(color, 0)} %"


def render_sections(snap: dict[str, Any], csrf: str, base: str = "") -> dict[str, str]:
    """The page's sections by element id: the page and each server-sent event carry these; ``base``
    is the URL prefix of the page's links and forms."""
    st = snap.get("status") or {}
    live = st.get("live")
    envs = st.get("environments") or {}
    live_env = envs.get(live or "", {})
    release = snap.get("release")
    sections: dict[str, str] = {}

    # The live colour and the buttons.
    rb = snap.get("rollback_to") or {}
    if rb.get("version") and not (release and release.get("kind") == "release"):
        rollback = (f'<a class="button danger" id="rollback" href="{e(base)}/ui/rollback">Roll back to '
                    f'{e(rb["version"])}{" (warm)" if rb.get("warm") else ""}</a>')
    elif release and release.get("kind") == "release":
        rollback = ('<span class="muted">A release is in progress: Abort sends traffic back.</span>')
    else:
        why = rb.get("error", "nothing to go back to")
        rollback = f'<span class="muted" id="no-rollback">No rollback: {e(why)}</span>'
    buttons = [rollback]
    if release and release.get("kind") == "release":
        waiting = release.get("awaiting_approval")
        choices = [("approve", f"Approve {waiting['check']}")] if waiting else []
        choices += [("abort", "Reject (abort)" if waiting else "Abort")]
        choices += [] if waiting else [("promote", "Promote")]
        for what, label in choices:
            buttons.append(f'<form class="inline" method="post" action="{e(base)}/ui/{what}"><input type="hidden" '
                           f'name="csrf" value="{e(csrf)}"><button id="{what}"'
                           f'{" class=danger" if what == "abort" else ""}>{e(label)}</button></form>')
    buttons.append(f'<form class="inline" method="post" action="{e(base)}/ui/drill"><input type="hidden" name="csrf" '
                   f'value="{e(csrf)}"><button id="drill">Run drill</button></form>')
    warm = st.get("warm")
    warm_text = "none"
    if warm and warm.get("color") != live:
        until = warm.get("until")
        left = f", {max(0, int(until - snap.get('at', time.time())))} s left" if until else ""
        warm_text = f'<span class="{e(warm["color"])}">{e(warm["color"])}</span>{left}'
    sections["live"] = (
        '<h2>Live</h2><div class="live">'
        + (f'<span class="{e(live)}" id="live-color">{e(live)}</span> serves '
           f'<b id="live-version">{e(live_env.get("version"))}</b>' if live else '<span id="live-color">nothing</span>')
        + f'</div><p>Proxy {e(st.get("proxy_driver"))} at {e(st.get("proxy_url"))}: '
        + ('<span class="ok">running</span>' if st.get("proxy_running") else '<span class="bad">not running</span>')
        + f'. Warm for rollback: {warm_text}. Standby: {e(st.get("standby") or "none")}.'
        + (f' Lock: {e(st.get("lock"))}.' if st.get("lock") else "")
        + "</p>" + "".join(f'<p class="bad">{e(n)}</p>' for n in st.get("notes") or [])
        + "".join(f'<p class="bad">{e(n)}</p>' for n in snap.get("errors") or []))
    # The buttons have their own section, replaced only when they change (not with every countdown tick),
    # so that a click never lands on a button being replaced.
    sections["actions"] = f'<div class="actions">{"".join(buttons)}</div>'


    # The colours.
    latest = {}
    for point in snap.get("points") or []:
        latest[point["color"]] = point
    rows = []
    for color in ("blue", "green"):
        env = envs.get(color) or {}
        p = latest.get(color) or {}
        rows.append(
            f'<tr id="row-{color}"><td class="{color}">{color}{" ●" if color == live else ""}</td>'
            f'<td>{e(env.get("version") or "—")}</td><td>{e(env.get("container", "absent"))}</td>'
            f'<td class="{"ok" if env.get("healthy") else "bad" if env.get("container") == "running" else "muted"}">'
            f'{e(env.get("health", "not checked"))}</td><td id="weight-{color}">{_weight(st, color)}</td>'
            f'<td class="num">{p.get("rps", 0):.0f}</td><td class="num">{100 * p.get("error_rate", 0.0):.2f} %</td>'
            f'<td class="num">{_p95(p)}</td></tr>')
    sections["colours"] = ('<h2>Colours</h2><table><tr><th>colour</th><th>version</th><th>container</th>'
                           '<th>health</th><th>weight</th><th>req/s</th><th>errors</th><th>p95</th></tr>'
                           + "".join(rows) + "</table>")

    # The release in progress.
    if release:
        current: dict[str, Any] = release.get("current") or {}
        bake_left = current.get("bake_left_s")
        steps = " → ".join(
            f'<span class="{"ok" if s["outcome"] == "done" else "bad" if s["outcome"] == "failed" else ""}'
            f'{" muted" if s["outcome"] == "pending" else ""}">{e(s["name"])}'
            f'{"…" if s["outcome"] == "started" else ""}</span>' for s in release.get("steps") or [])
        sections["release"] = (
            f'<h2>{e(release["kind"]).capitalize()} {e(release["id"])} in progress</h2>'
            f'<p><b id="release-version">{e(release["version"])}</b> into <span class="{e(release["to"])}">'
            f'{e(release["to"])}</span> (from {e(release.get("from_version"))} in {e(release["from"])}), '
            f'by {e(release["actor"])} since {e(release["started_at"])}</p>'
            f'<p>Step <b id="release-step">{e(release["step"] or "starting")}</b>'
            + (f', bake <b id="bake-left">{bake_left:.0f} s</b> left' if bake_left is not None else "") + "</p>"
            f'<p class="muted">{steps}</p>' + _awaiting(release.get("awaiting_approval"))
            + _candidate_figures(latest.get(release["to"])) + _checks(release.get("checks") or []))
    else:
        sections["release"] = '<h2>Release</h2><p class="muted" id="release-none">No release in progress.</p>'

    sections["chart"] = "<h2>Traffic, last minutes</h2>" + chart(snap.get("points") or [])

    drills = snap.get("drills") or []
    sections["drills"] = "<h2>Drills</h2>" + (_table(
        ("when", "result", "RTO", "failed requests", "backup"),
        [(d["started_at"], _outcome(d["status"]), _rto(d), _drill_detail(d).get("failed_requests", "—"),
          _backup_ok(_drill_detail(d))) for d in drills]) if drills else '<p class="muted">No drills yet.</p>')

    backups = snap.get("backups") or []
    sections["backups"] = "<h2>Backups</h2>" + (_table(
        ("set", "reason", "verified"),
        [(e(b["id"]), e(b.get("reason", "")), '<span class="ok">' + e(b["verified_at"]) + "</span>"
          if b.get("verified_at") else '<span class="muted">not verified</span>') for b in backups])
        if backups else '<p class="muted">No backup sets yet.</p>')

    history = snap.get("history") or []
    sections["history"] = "<h2>History</h2>" + (_table(
        ("id", "when", "what", "version", "outcome", "reason"),
        [(e(r["id"]), e(r["started_at"]), e(r["kind"]), e(r["version"]), _outcome(r["status"]),
          e((r.get("reason") or "")[:160])) for r in history]) if history else '<p class="muted">Nothing yet.</p>')
    return sections


def _awaiting(waiting: dict[str, Any] | None) -> str:
    if not waiting:
        return ""
    return (f'<p class="bad" id="awaiting-approval">Waiting for approval <b>{e(waiting["check"])}</b> at '
            f'{e(waiting["step"])}: {waiting.get("left_s", 0):.0f} s left, then {e(waiting["on_timeout"])}. '
            'Approve lets the release go on; Reject (abort) sends traffic back.</p>')


def _checks(results: list[dict[str, Any]]) -> str:
    """The team's checks of this release so far: where, which, the verdict, how long, what was seen."""
    if not results:
        return ""
    rows = [(e(c["step"]), e(c["name"]), e(c["kind"]), '<span class="ok">passed</span>' if c["ok"] else
             '<span class="bad">failed</span>', f'{c["seconds"]:.2f} s', e(str(c["detail"])[:200])) for c in results]
    return '<div id="checks">' + _table(("step", "check", "kind", "result", "took", "detail"), rows) + "</div>"


def _candidate_figures(point: dict[str, Any] | None) -> str:
    if not point:
        return ""
    return (f'<p id="candidate-figures">Candidate now: {point.get("rps", 0):.0f} req/s, errors '
            f'{100 * point.get("error_rate", 0.0):.2f} %, p95 {_p95(point)} (weight {point.get("weight", 0)})</p>')


def _p95(point: dict[str, Any]) -> str:
    """``12.3 ms`` and where it came from (the server's histogram or the proxy's timings)."""
    p95 = point.get("p95_ms")
    if p95 is None:
        return "—"
    source = point.get("p95_source")
    return f'{p95:.1f} ms' + (f' <span class="muted">{e(source)}</span>' if source else "")


def _drill_detail(rec: dict[str, Any]) -> dict[str, Any]:
    steps = rec.get("steps") or []
    return steps[0].get("detail", {}) if steps else {}


def _rto(rec: dict[str, Any]) -> str:
    rto = _drill_detail(rec).get("rto_s")
    return "—" if rto is None else f"{rto * 1000:.0f} ms"


def _backup_ok(detail: dict[str, Any]) -> str:
    backup = detail.get("backup") or {}
    if not backup:
        return "—"
    return '<span class="ok">restored</span>' if backup.get("ok") else '<span class="bad">failed</span>'


def _outcome(status: str) -> str:
    good = {"promoted", "passed", "switched", "done"}
    bad = {"failed", "rolled_back", "aborted", "interrupted"}
    cls = "ok" if status in good else "bad" if status in bad else "muted"
    return f'<span class="{cls}">{e(status)}</span>'


def _table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def chart(points: list[dict[str, Any]], width: int = 420, height: int = 90) -> str:
    """Two small line charts (error rate, p95) with a line per colour, as inline SVG."""
    if not points:
        return '<p class="muted">No traffic read yet.</p>'
    t1 = max(p["t"] for p in points)
    t0 = min(min(p["t"] for p in points), t1 - 60)
    out = []
    for key, label, unit, scale in (("error_rate", "error rate", "%", 100.0), ("p95_ms", "p95", "ms", 1.0)):
        values = [p[key] * scale for p in points if p.get(key) is not None]
        top = max([*values, 1.0 if key == "error_rate" else 10.0])
        lines = []
        for color in ("blue", "green"):
            pts = [(p["t"], p[key] * scale) for p in points if p["color"] == color and p.get(key) is not None]
            if not pts:
                continue
            xy = " ".join(f"{(t - t0) / max(1e-6, t1 - t0) * (width - 40) + 36:.1f},"
                          f"{height - 14 - v / top * (height - 24):.1f}" for t, v in pts)
            lines.append(f'<polyline fill="none" stroke="{COLOURS[color]}" stroke-width="1.5" points="{xy}"/>')
        out.append(f'<div>{e(label)} (max {top:.1f} {unit}, last {int(t1 - t0)} s)</div>'
                   f'<svg width="{width}" height="{height}" role="img" aria-label="{e(label)} per colour">'
                   f'<text x="2" y="12" font-size="10">{top:.1f}</text><text x="2" y="{height - 4}" font-size="10">0'
                   f'</text>{"".join(lines)}</svg>')
    return "".join(out)


def header(title: str, csrf: str, home: str | None = None, read_at: float | None = None) -> str:
    """The bar at the top of a signed-in page: its title, a link to the fleet's overview, sign-out."""
    up = f'<a href="{e(home)}" id="overview-link" style="color:#93c5fd">All deployments</a>' if home else ""
    when = time.strftime("%H:%M:%S", time.gmtime(read_at if read_at is not None else time.time()))
    return (f'<header><h1>bluegreen</h1>{up}<span>{e(title)}</span><span class="muted" id="updated">read {when} UTC'
            f'</span><form class="inline" method="post" action="/logout" style="margin-left:auto"><input '
            f'type="hidden" name="csrf" value="{e(csrf)}"><button id="sign-out">Sign out</button></form></header>')


def streamed(sections: dict[str, str], order: tuple[str, ...], stream: str, flash: str = "") -> str:
    """The page's body: the flash, its sections, and the script that replaces them from ``stream``."""
    return ((f'<div class="flash" id="flash">{e(flash)}</div>' if flash else "")
            + "<main>" + "".join(f'<section id="{name}">{sections[name]}</section>' for name in order) + "</main>"
            + f'<script src="/ui/dashboard.js" data-stream="{e(stream)}" defer></script>')


def dashboard_page(snap: dict[str, Any], csrf: str, project: str, flash: str = "", base: str = "",
                   home: str | None = None) -> str:
    sections = render_sections(snap, csrf, base)
    order = ("actions", "live", "colours", "release", "chart", "drills", "backups", "history")
    body = header(project, csrf, home, snap.get("at")) + streamed(sections, order, f"{base}/ui/stream", flash)
    return page(f"bluegreen: {project}", body, refresh=True)


def confirm_page(snap: dict[str, Any], csrf: str, base: str = "", project: str = "") -> str:
    st = snap.get("status") or {}
    live = st.get("live")
    live_version = ((st.get("environments") or {}).get(live or "") or {}).get("version")
    rb = snap.get("rollback_to") or {}
    back = f"{e(base)}/"
    if not rb.get("version"):
        body = (f'<p class="bad">No rollback is possible: {e(rb.get("error"))}</p>'
                f'<a class="button" href="{back}">Back</a>')
    else:
        how = "at once (it is warm)" if rb.get("warm") else "after starting it and passing the health gate"
        whose = f" of <b id=\"confirm-project\">{e(project)}</b>" if project else ""
        body = (f'<p id="confirm-text">Roll back{whose} from <b>{e(live_version)}</b> ({e(live)}) to '
                f'<b id="confirm-version">{e(rb["version"])}</b>: all traffic moves {how}.</p>'
                f'<form method="post" action="{e(base)}/ui/rollback"><input type="hidden" name="csrf" '
                f'value="{e(csrf)}"><input type="hidden" name="from" value="{e(live_version)}">'
                f'<label>Reason <input name="reason" id="reason" size="50" placeholder="why (goes into history)">'
                f'</label> <button class="danger" id="confirm-rollback">Roll back to {e(rb["version"])}</button> '
                f'<a class="button" href="{back}" id="cancel">Cancel</a></form>')
    return page("bluegreen: roll back?", f'<header><h1>bluegreen</h1></header><main><section><h2>Roll back?</h2>'
                 f'{body}</section></main>')


# -- routes -----------------------------------------------------------------------------------------
def session_of(token: str, request: Request) -> str | None:
    value = request.cookies.get(SESSION_COOKIE)
    return value if session_ok(token, value) else None


def html_response(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def redirect(to: str, flash: str = "") -> RedirectResponse:
    """Back to the page at ``to``, with a message it shows once (a cookie of that page's path)."""
    response = RedirectResponse(to, status_code=303, headers=HEADERS)
    if flash:
        response.set_cookie(FLASH_COOKIE, json.dumps(flash[:500]), max_age=60, httponly=True, samesite="strict",
                            path=to)
    return response


def with_flash(request: Request, render: Callable[[str], str], path: str) -> Response:
    """The page (given the flash message left for it, if any); the message is then forgotten."""
    flash = ""
    raw = request.cookies.get(FLASH_COOKIE)
    if raw:
        try:
            flash = str(json.loads(raw))
        except ValueError:
            flash = ""
    response = html_response(render(flash))
    if raw:
        response.delete_cookie(FLASH_COOKIE, path=path)
    return response


async def form(request: Request) -> dict[str, str]:
    body = (await request.body())[:65536].decode(errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def checked(token: str, request: Request) -> tuple[str, dict[str, str]] | Response:
    """The session and the form of a state-changing request, or the refusal."""
    session = session_of(token, request)
    if session is None:
        return html_response(login_page("Sign in first."), 401)
    fields = await form(request)
    if not hmac.compare_digest(fields.get("csrf", ""), csrf_for(token, session)):
        return PlainTextResponse("refused: the form's CSRF token is missing or wrong (reload the page)",
                                 status_code=403, headers=HEADERS)
    return session, fields


def event_stream(token: str, session: str, request: Request, reader: Any,
                 render: Callable[[dict[str, Any]], dict[str, str]]) -> StreamingResponse:
    """Server-sent events: each of ``reader``'s readings, rendered into the page's sections."""
    async def events() -> AsyncIterator[str]:
        seq = 0
        deadline = time.monotonic() + SESSION_SECONDS
        while time.monotonic() < deadline and session_ok(token, session):
            if await request.is_disconnected():
                return
            seq, snap = await asyncio.to_thread(reader.wait, seq, 15.0)
            payload = {"sections": render(snap),
                       "updated": time.strftime("read %H:%M:%S UTC", time.gmtime(snap.get("at", time.time())))}
            yield f"id: {seq}\nevent: state\ndata: {json.dumps(payload)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={**HEADERS, "X-Accel-Buffering": "no"})


def sessions(app: FastAPI, token: str) -> None:
    """Sign-in, sign-out and the pages' script: once per app, whatever pages it has."""

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        given = (await form(request)).get("token", "").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            await asyncio.sleep(0.5)  # slows guessing; the token is long anyway
            return html_response(login_page("Wrong token."), 401)
        response = RedirectResponse("/", status_code=303, headers=HEADERS)
        response.set_cookie(SESSION_COOKIE, new_session(token), max_age=SESSION_SECONDS, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        got = await checked(token, request)
        if isinstance(got, Response):
            return got
        response = RedirectResponse("/", status_code=303, headers=HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/ui/dashboard.js", include_in_schema=False)
    def script() -> Response:
        return Response(SCRIPT.read_text(), media_type="text/javascript", headers=HEADERS)


@dataclass(frozen=True)
class Pages:
    """What one deployment's pages act on, and where they are."""

    service: Any  # api.app.Service
    observer: Any  # observer.Observer
    base: str = ""  # the pages' URL prefix: "" in a deployment's serve, /d/NAME in a fleet's
    home: str | None = None  # in a fleet: the overview, linked from the page's header


def pages(token: str, resolve: Callable[[Request], Pages]) -> APIRouter:
    """One deployment's page (``/``), its rollback confirmation, its actions and its stream (``/ui/…``),
    relative to where the router is mounted; ``resolve`` finds the deployment a request is for."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Response:
        session = session_of(token, request)
        if session is None:
            return html_response(login_page())
        at = resolve(request)
        snap = at.observer.current()
        return with_flash(request, lambda flash: dashboard_page(
            snap, csrf_for(token, session), at.service.settings.project, flash, at.base, at.home), f"{at.base}/")

    @router.get("/ui/rollback", response_class=HTMLResponse, include_in_schema=False)
    def confirm(request: Request) -> Response:
        session = session_of(token, request)
        if session is None:
            return html_response(login_page("Sign in first."), 401)
        at = resolve(request)
        return html_response(confirm_page(at.observer.tick(), csrf_for(token, session), at.base,
                                          at.service.settings.project if at.home else ""))

    def act(at: Pages, what: str, run: Callable[[], str]) -> Response:
        try:
            return redirect(f"{at.base}/", run())
        except BluegreenError as exc:
            return redirect(f"{at.base}/", f"{what} refused: {exc.message}" + (f" (try: {exc.hint})" if exc.hint
                                                                                else ""))
        finally:
            at.observer.tick()  # the next page shows the new state at once

    @router.post("/ui/rollback", include_in_schema=False)
    async def do_rollback(request: Request) -> Response:
        got = await checked(token, request)
        if isinstance(got, Response):
            return got
        _session, fields = got
        at = resolve(request)
        reason = fields.get("reason", "").strip()[:500] or "one-click rollback from the dashboard"

        def run() -> str:
            result = at.service.rollback(request, None, reason, fields.get("from") or None, face="dashboard")
            notes = f" ({'; '.join(result.notes)})" if result.notes else ""
            return f"Rolled back: {result.live} serves {result.version} ({result.seconds * 1000:.0f} ms){notes}"

        return await asyncio.to_thread(act, at, "rollback", run)

    def requester(what: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            got = await checked(token, request)
            if isinstance(got, Response):
                return got
            at = resolve(request)

            def run() -> str:
                from bluegreen.orchestrator.core.rollback import request as ask

                rec = ask(at.service.deployment(request, "dashboard"), what, wait=60, progress=at.service.events)
                return f"{what.capitalize()}: release {rec.id} of {rec.version} is {rec.status}"

            return await asyncio.to_thread(act, at, what, run)

        return handler

    router.post("/ui/abort", include_in_schema=False)(requester("abort"))
    router.post("/ui/promote", include_in_schema=False)(requester("promote"))

    @router.post("/ui/approve", include_in_schema=False)
    async def do_approve(request: Request) -> Response:
        got = await checked(token, request)
        if isinstance(got, Response):
            return got
        at = resolve(request)

        def run() -> str:
            from bluegreen.orchestrator.core.rollback import approve

            dep = at.service.deployment(request, "dashboard")
            rec = approve(dep, wait=60, progress=at.service.events)
            if rec.status != "running":
                return f"Approve: release {rec.id} of {rec.version} is {rec.status}"
            given = rec.approval_by(dep.actor)
            return (f"Approved {given['name']}: release {rec.id} of {rec.version} goes on" if given else
                    f"Approve: release {rec.id} no longer waited for approval; nothing was approved")

        return await asyncio.to_thread(act, at, "approve", run)

    @router.post("/ui/drill", include_in_schema=False)
    async def do_drill(request: Request) -> Response:
        got = await checked(token, request)
        if isinstance(got, Response):
            return got
        at = resolve(request)

        def run() -> str:
            return "Drill: " + str(at.service.drill(at.service.deployment(request, "dashboard")).summary())

        return await asyncio.to_thread(act, at, "drill", run)

    @router.get("/ui/stream", include_in_schema=False)
    async def stream(request: Request) -> Response:
        session = session_of(token, request)
        if session is None:
            return PlainTextResponse("sign in first", status_code=401, headers=HEADERS)
        at = resolve(request)
        csrf = csrf_for(token, session)
        return event_stream(token, session, request, at.observer, lambda snap: render_sections(snap, csrf, at.base))

    return router


def install(app: FastAPI, service: Any, observer: Any) -> None:
    """A deployment's serve: its page at ``/``, sign-in at ``/login``."""
    sessions(app, service.token)
    fixed = Pages(service, observer)
    app.include_router(pages(service.token, lambda request: fixed))
