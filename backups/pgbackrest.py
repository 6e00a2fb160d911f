"""Continuous archiving of a PostgreSQL cluster with pgBackRest, and point-in-time restores.

bluegreen writes pgBackRest's configuration (one stanza, a repository under its own directory),
runs ``stanza-create`` and ``check`` (which proves that PostgreSQL's ``archive_command`` reaches
the repository), takes the first full backup, and from then on asks for restore points: a named
restore point and a WAL switch, waited for until the segment is archived, in constant time at any
database size. PostgreSQL itself runs ``archive_command``; bluegreen never configures the server,
it says which lines postgresql.conf needs and refuses until ``check`` passes.

A restore never touches the live cluster: ``pgbackrest restore`` rebuilds the cluster as of the
point into a scratch directory, and a scratch server on a free loopback port replays the WAL up to
the target and is promoted; the application database is then copied out of it (a new database on
the live server, or a backup set that the ordinary restore swaps in place).

pgBackRest reads the cluster's files, so it runs as the cluster's owner (``runuser`` when
bluegreen runs as root). Its repository, configuration and scratch directories belong to that user.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bluegreen.backups.litestream import RestorePoint
from bluegreen.backups.postgres import Target
from bluegreen.orchestrator.errors import BackupError

# Settings a server in recovery must have at least as high as the cluster that wrote the WAL, as
# pg_controldata names them.
CONTROL_FILE_SETTINGS = {"max_connections": "max_connections setting",
                         "max_worker_processes": "max_worker_processes setting",
                         "max_wal_senders": "max_wal_senders setting",
                         "max_prepared_transactions": "max_prepared_xacts setting",
                         "max_locks_per_transaction": "max_locks_per_xact setting"}


@dataclass(frozen=True)
class ScratchServer:
    url: str  # the live database's URL, on the scratch server's loopback port
    port: int
    directory: Path
    seconds: float  # restore and recovery, until the scratch server was promoted
    backup: str  # the pgBackRest backup it started from


@dataclass
class Setup:
    stanza: str
    created: bool = False  # the stanza was made now
    first_backup: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class PgBackRest:
    tool = "pgbackrest"

    def __init__(self, url: str, directory: Path, stanza: str, data_directory: Path,
                 socket_directory: str = "/var/run/postgresql", os_user: str = "", binary: str = "pgbackrest",
                 archive_timeout: float = 60.0, retention_full: int = 2, bin_dir: str = "") -> None:
        self.target = Target(url)
        self.directory = directory
        self.stanza = stanza
        self.data_directory = data_directory
        self.socket_directory = socket_directory
        self._os_user = os_user
        self.binary = binary
        self.archive_timeout = archive_timeout
        self.retention_full = retention_full
        self._bin_dir = bin_dir
        self.config_path = directory / "pgbackrest.conf"
        self.repository = directory / "repo"
        self.replica = str(self.repository)  # what status shows as the archive's destination

    # -- who runs it, and how -------------------------------------------------------------------
    @property
    def os_user(self) -> str:
        if self._os_user:
            return self._os_user
        try:
            return pwd.getpwuid(self.data_directory.stat().st_uid).pw_name
        except (OSError, KeyError):
            return "postgres"

    def _as_owner(self, argv: list[str]) -> list[str]:
        user = self.os_user
        if pwd.getpwuid(os.geteuid()).pw_name == user:
            return argv
        if os.geteuid() != 0:
            raise BackupError(f"pgBackRest reads the cluster's files, so it runs as their owner {user!r}, "
                              f"and bluegreen runs as {pwd.getpwuid(os.geteuid()).pw_name!r}",
                              f"run bluegreen as root or as {user}; runbooks/pitr.md")
        return ["runuser", "-u", user, "--", *argv]

    def _pgbackrest(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise BackupError(f"the pgbackrest binary {self.binary!r} is not installed",
                              "apt-get install pgbackrest (scripts/provision.sh does); or backups.pgbackrest.binary")
        return found

    def _run(self, *args: str, timeout: float = 600, check: bool = True,
             console: str = "warn") -> subprocess.CompletedProcess[str]:
        argv = self._as_owner([self._pgbackrest(), f"--config={self.config_path}", f"--stanza={self.stanza}",
                               f"--log-level-console={console}", *args])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
        if check and proc.returncode != 0:
            raise BackupError(f"pgbackrest {args[-1]} failed: {_said(proc)}", f"check {self.directory / 'log'}")
        return proc

    def _psql(self, sql: str, timeout: float = 30) -> list[str]:
        """SQL as the cluster's owner over the local socket (peer authentication): the functions a
        restore point needs are the superuser's."""
        argv = self._as_owner(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", self.socket_directory,
                               "-p", str(self.target.port), "-d", "postgres", "-c", sql])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
        if proc.returncode != 0:
            raise BackupError(f"psql as {self.os_user} on {self.socket_directory}: {_said(proc)}",
                              "check backups.pgbackrest.socket_directory and os_user")
        return [line for line in proc.stdout.splitlines() if line]

    # -- configuration ----------------------------------------------------------------------------
    def render(self) -> str:
        return "\n".join([
            "# Written by bluegreen: edit bluegreen.toml ([backups.pgbackrest]), not this file.",
            "[global]",
            f"repo1-path={self.repository}",
            f"repo1-retention-full={self.retention_full}",
            f"log-path={self.directory / 'log'}",
            f"lock-path={self.directory / 'lock'}",
            f"spool-path={self.directory / 'spool'}",
            "start-fast=y",
            # lz4: a 16 MB segment is pushed in a fraction of gzip's time, so the archive keeps up with
            # bursts of writes and a restore point waits less (bench/pitr_pg.py).
            "compress-type=lz4",
            # How long check and backup wait for a segment to reach the repository (a backlog after a
            # burst of writes takes a while).
            "archive-timeout=180",
            "",
            f"[{self.stanza}]",
            f"pg1-path={self.data_directory}",
            f"pg1-port={self.target.port}",
            f"pg1-socket-path={self.socket_directory}",
            f"pg1-user={self.os_user}",
            "",
        ])

    def required_lines(self) -> list[str]:
        """What postgresql.conf needs for this archive (archive_mode takes a restart)."""
        return ["archive_mode = on",
                f"archive_command = '{self._pgbackrest()} --config={self.config_path} --stanza={self.stanza} "
                "archive-push %p'",
                f"archive_timeout = {int(self.archive_timeout)}"]

    def _write_config(self) -> None:
        owner = pwd.getpwnam(self.os_user)
        for path in (self.directory, self.repository, self.directory / "log", self.directory / "lock",
                     self.directory / "spool"):
            path.mkdir(mode=0o750, parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        partial = self.config_path.with_name(self.config_path.name + ".partial")
        partial.write_text(self.render())
        os.chmod(partial, 0o640)
        if os.geteuid() == 0:
            os.chown(partial, owner.pw_uid, owner.pw_gid)
        os.replace(partial, self.config_path)

    def start(self) -> str | None:
        """Write the configuration, make the stanza, prove the archive works, take the first full
        backup. Refused, with the lines postgresql.conf needs, until ``check`` passes."""
        first = not self.config_path.exists() or self.config_path.read_text() != self.render()
        self._write_config()
        created = self._run("stanza-create", check=False)
        checked = self._run("check", timeout=120, check=False) if created.returncode == 0 else created
        if checked.returncode != 0:
            lines = "\n    ".join(self.required_lines())
            raise BackupError(
                f"pgBackRest cannot archive this cluster yet ({_said(checked)}). PostgreSQL needs, in "
                f"postgresql.conf:\n    {lines}\n  then a restart (archive_mode takes one)",
                "add the lines, restart PostgreSQL, and run bluegreen up again; runbooks/pitr.md")
        if not self.backups():
            began = time.monotonic()
            self._run("--type=full", "backup", timeout=24 * 3600)
            return (f"pgBackRest archiving stanza {self.stanza} to {self.repository}; first full backup in "
                    f"{time.monotonic() - began:.1f}s")
        return f"pgBackRest archiving stanza {self.stanza} to {self.repository}" if first else None

    def supervise(self) -> str | None:
        """PostgreSQL runs the archiver itself: nothing to restart, but a failing one is said."""
        state = self.archiver()
        if state.get("failing"):
            return (f"PostgreSQL's archive_command is failing (WAL {state.get('last_failed_wal')} at "
                    f"{state.get('last_failed_time')}): the recoverable window stops growing")
        return None

    def running(self) -> bool:
        try:
            return not self.archiver().get("failing") and self.config_path.exists()
        except BackupError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """The archiver is PostgreSQL's; ``down`` leaves it archiving."""

    # -- restore points ---------------------------------------------------------------------------
    def restore_point(self, name: str = "", timeout: float = 30.0) -> RestorePoint:
        """A named restore point, its WAL switched and archived before this returns.

        A transaction id is taken first, so the WAL holds a commit at this moment: a restore to a
        time just before now then has a record after the target to stop at.
        """
        name = name or f"bluegreen-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        began = time.time()
        rows = self._mark(name)
        if len(rows) != 3:
            raise BackupError(f"unexpected answer to the restore point: {rows!r}")
        lsn, segment = rows[1], rows[2]
        deadline = time.monotonic() + timeout
        while True:
            state = self.archiver()
            if (state.get("last_archived_wal") or "") >= segment:
                break
            failed_now = state.get("failing") and (state.get("last_failed_wal") or "") >= segment
            if failed_now or time.monotonic() > deadline:
                failing = (f": archive_command failed on {state['last_failed_wal']} at {state['last_failed_time']}"
                           if state.get("last_failed_wal") else f" within {timeout:g}s")
                raise BackupError(f"WAL segment {segment} was not archived{failing}",
                                  f"check archive_command in postgresql.conf and {self.directory / 'log'}")
            time.sleep(0.02)
        return RestorePoint("pgbackrest", _iso(began), name=name, lsn=lsn)

    def _mark(self, name: str) -> list[str]:
        """A commit now, the named restore point, the WAL switch: (txid, point's LSN, segment).

        On the application's own connection when its role may (GRANT EXECUTE ON FUNCTION
        pg_create_restore_point(text), pg_switch_wal() TO it, in the application's database: no
        process started, about 70 ms instead of 130), else through psql as the cluster's owner.
        """
        import psycopg

        # The commit first, on its own (autocommit): its record must be in the segment switched out.
        sql = "SELECT pg_create_restore_point(%s)::text, pg_walfile_name(pg_switch_wal() - 1)"
        try:
            conn = self.target.connect()
        except BackupError:
            conn = None
        if conn is not None:
            try:
                txid = conn.execute("SELECT txid_current()::text").fetchone()[0]
                row = conn.execute(sql, (name,)).fetchone()
                return [str(txid), str(row[0]), str(row[1])]
            except psycopg.errors.InsufficientPrivilege:
                pass
            finally:
                conn.close()
        return self._psql(f"SELECT txid_current(); SELECT pg_create_restore_point('{_quote(name)}'); "
                          "SELECT pg_walfile_name(pg_switch_wal() - 1);")

    def archiver(self) -> dict[str, Any]:
        """PostgreSQL's archiver, as pg_stat_archiver sees it (readable by any role)."""
        conn = self.target.connect()
        try:
            row = conn.execute("SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time, "
                               "current_setting('archive_mode') FROM pg_stat_archiver").fetchone()
        finally:
            conn.close()
        archived_at, failed_at = row[1], row[3]
        return {"last_archived_wal": row[0], "last_archived_time": archived_at.timestamp() if archived_at else None,
                "last_failed_wal": row[2], "last_failed_time": _iso(failed_at.timestamp()) if failed_at else None,
                "archive_mode": row[4],
                "failing": row[4] == "off" or bool(failed_at and (archived_at is None or failed_at > archived_at))}

    # -- the repository ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        if not self.config_path.exists():
            return {}
        proc = self._run("--output=json", "info", timeout=60, check=False)
        try:
            doc = json.loads(proc.stdout or "[]")
        except ValueError:
            return {}
        return next((s for s in doc if isinstance(s, dict) and s.get("name") == self.stanza), {})

    def backups(self) -> list[dict[str, Any]]:
        """The repository's backups, oldest first."""
        return [b for b in self.info().get("backup", []) if not b.get("error")]

    def backup(self, kind: str = "full") -> dict[str, Any]:
        began = time.monotonic()
        self._run(f"--type={kind}", "backup", timeout=24 * 3600)
        newest = self.backups()[-1]
        return {"label": newest["label"], "type": kind, "seconds": round(time.monotonic() - began, 3),
                "size": newest.get("info", {}).get("repository", {}).get("size")}

    def verify(self) -> list[str]:
        """pgBackRest's own check of every file in the repository against its checksums.

        pgBackRest 2.45 ends ``verify`` with exit code 0 even when it found invalid files; its
        report (at log level info) says so, and is read here.
        """
        proc = self._run("verify", timeout=24 * 3600, check=False, console="info")
        if proc.returncode != 0:
            return [f"pgbackrest verify: {_said(proc)}"]
        found = [line.split("INFO:", 1)[-1].strip() for line in proc.stdout.splitlines()
                 if "invalid" in line or "missing" in line or "status: error" in line]
        return [f"pgbackrest verify: {'; '.join(found)}"] if found else []

    def window(self) -> tuple[str, str] | None:
        """From the end of the oldest backup to the newest archived WAL (or now, while archiving)."""
        backups = self.backups()
        if not backups:
            return None
        oldest = min(b["timestamp"]["stop"] for b in backups)
        newest = self.archiver().get("last_archived_time") or oldest
        return _iso(oldest), _iso(max(newest, oldest))

    def state(self) -> dict[str, Any]:
        archiver = self.archiver()
        backups = self.backups()
        window = self.window() if backups else None
        newest_base = max((b["timestamp"]["stop"] for b in backups), default=None)
        return {"tool": "pgbackrest", "running": not archiver["failing"] and self.config_path.exists(),
                "replica": str(self.repository), "stanza": self.stanza, "pending_transactions": None,
                "oldest": window[0] if window else None, "newest": window[1] if window else None,
                "newest_base_backup": _iso(newest_base) if newest_base else None,
                "last_failed_wal": archiver["last_failed_wal"], "last_failed_time": archiver["last_failed_time"]}

    def _backup_for(self, lsn: str | None = None, epoch: float | None = None) -> str | None:
        """The newest backup that ended before the point: recovery starts from it."""
        fits = [b for b in self.backups()
                if (lsn is None or _lsn(b["lsn"]["stop"]) <= _lsn(lsn))
                and (epoch is None or b["timestamp"]["stop"] <= epoch)]
        return fits[-1]["label"] if fits else None

    # -- restores ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def scratch(self, name: str | None = None, lsn: str | None = None, at: str | None = None,
                timeout: float = 600) -> Iterator[ScratchServer]:
        """The cluster as of a restore point (``name`` with its ``lsn``), a time (``at``, UTC ISO
        8601) or, with neither, the end of the archive, served by a scratch server on a free
        loopback port; stopped and removed on exit. It needs only the repository, not the live
        server (which may be the thing that was lost)."""
        from bluegreen.orchestrator.common.ports import free_ports

        epoch = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() if at else None
        label = self._backup_for(lsn=lsn, epoch=epoch)
        if label is None:
            try:
                window = self.window()
            except BackupError:
                window = None
            raise BackupError(f"no backup in the repository ends before {name or at}; the recoverable window is "
                              f"{f'{window[0]} to {window[1]}' if window else 'empty'}",
                              "choose a later point; bluegreen status shows the window")
        directory = self.directory / f"scratch-{os.getpid()}-{time.monotonic_ns()}"
        owner = pwd.getpwnam(self.os_user)
        directory.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        port = free_ports(1)[0]
        began = time.monotonic()
        server = Path("pg_ctl")
        started = False
        try:
            if name:
                target = ["--type=name", f"--target={name}", "--target-action=promote"]
            elif epoch is not None:
                target = ["--type=time", f"--target={datetime.fromtimestamp(epoch, UTC).isoformat()}",
                          "--target-action=promote"]
            else:
                target = []  # replay every archived segment, then promote
            self._run(f"--pg1-path={directory}", f"--set={label}", *target, "--archive-mode=off", "restore",
                      timeout=timeout)
            server = self._bin_dir_path(directory) / "pg_ctl"
            self._scratch_config(directory, port, server.parent)
            started = True
            proc = subprocess.run(self._as_owner([str(server), "-D", str(directory), "-o",
                                                  f"-c config_file={directory / 'bluegreen-scratch.conf'}",
                                                  "-l", str(directory / "server.log"), "-w", "-t", str(int(timeout)),
                                                  "start"]), capture_output=True, text=True, timeout=timeout + 10,
                                  cwd="/")
            if proc.returncode != 0:
                raise BackupError(f"the scratch server did not start: {self._log_tail(directory)}",
                                  f"the restored cluster is in {directory} until this command ends")
            url = self._url_on(port)
            self._wait_promoted(Target(url), directory, timeout)
            yield ScratchServer(url, port, directory, round(time.monotonic() - began, 3), label)
        finally:
            if started:
                subprocess.run(self._as_owner([str(server), "-D", str(directory), "-m", "immediate", "-w", "stop"]),
                               capture_output=True, text=True, timeout=60, cwd="/")
            shutil.rmtree(directory, ignore_errors=True)

    def _url_on(self, port: int) -> str:
        parts = urlsplit(self.target.url)
        netloc = parts.netloc.rpartition("@")
        auth = netloc[0] + "@" if netloc[1] else ""
        return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", parts.path, parts.query, ""))

    def _bin_dir_path(self, data: Path) -> Path:
        """The server programs of the restored cluster's major version (its PG_VERSION file)."""
        if self._bin_dir:
            return Path(self._bin_dir)
        major = (data / "PG_VERSION").read_text().strip()
        return Path(f"/usr/lib/postgresql/{major}/bin")

    def _scratch_config(self, directory: Path, port: int, bin_dir: Path) -> None:
        """A config of its own: loopback only, no archiving, at least the settings the cluster ran
        with that recovery checks (from its control file), passwords as on the live server."""
        control = subprocess.run(self._as_owner([str(bin_dir / "pg_controldata"), str(directory)]),
                                 capture_output=True, text=True, timeout=60, cwd="/")
        found = dict(line.split(":", 1) for line in control.stdout.splitlines() if ":" in line)
        limits = {name: found[key].strip() for name, key in CONTROL_FILE_SETTINGS.items()
                  if found.get(key, "").strip().isdigit()}
        lines = ["listen_addresses = '127.0.0.1'", f"port = {port}", f"unix_socket_directories = '{directory}'",
                 f"hba_file = '{directory / 'bluegreen-hba.conf'}'", f"ident_file = '{directory / 'pg_ident.conf'}'",
                 "archive_mode = off", "shared_buffers = 32MB", "fsync = off", "synchronous_commit = off",
                 *(f"{k} = {v}" for k, v in limits.items())]
        files = {"bluegreen-scratch.conf": "\n".join(lines) + "\n",
                 "bluegreen-hba.conf": f"local all {self.os_user} peer\nhost all all 127.0.0.1/32 md5\n"}
        owner = pwd.getpwnam(self.os_user)
        for filename, text in files.items():
            path = directory / filename
            path.write_text(text)
            os.chmod(path, 0o600)
            if os.geteuid() == 0:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        ident = directory / "pg_ident.conf"
        if not ident.exists():
            ident.write_text("")
            if os.geteuid() == 0:
                os.chown(ident, owner.pw_uid, owner.pw_gid)

    def _wait_promoted(self, target: Target, directory: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = target.connect()
                try:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        return
                finally:
                    conn.close()
            except BackupError:
                pass
            if not (directory / "postmaster.pid").exists() or time.monotonic() > deadline:
                raise BackupError(f"the restored cluster did not reach the target: {self._log_tail(directory)}",
                                  "choose a point inside the window (bluegreen status)")
            time.sleep(0.05)

    @staticmethod
    def _log_tail(directory: Path, lines: int = 4) -> str:
        try:
            text = (directory / "server.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        wanted = [line for line in text if "FATAL" in line or "ERROR" in line] or text
        return " | ".join(wanted[-lines:])


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout or "").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[-3:])[:400] if lines else f"exit code {proc.returncode}"


def _quote(text: str) -> str:
    return text.replace("'", "''")
