"""A PostgreSQL cluster of the test's own: initdb in a scratch directory, its own loopback port and
socket, owned by the postgres user, removed at the end. The shared server is not ours to restart;
this one is (archive_mode takes a restart)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = "pitr-test-password"  # a scratch cluster on loopback, removed with its directory


def _bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name))
    return versions[-1] / "bin"


class Cluster:
    def __init__(self, port: int) -> None:
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="bluegreen-pgcluster-"))
        os.chmod(self.root, 0o755)  # the postgres user walks through it
        self.data = self.root / "data"
        self.socket = self.root / "sock"
        self.pgbackrest_dir = self.root / "pgbackrest"
        for path in (self.data, self.socket):
            path.mkdir(mode=0o700)
            shutil.chown(path, "postgres", "postgres")
        self.conf = self.data / "postgresql.conf"

    def _as_postgres(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                              timeout=timeout, cwd="/")
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
        return proc

    def create(self) -> Cluster:
        try:
            return self._create()
        except BaseException:
            self.remove()
            raise

    def _create(self) -> Cluster:
        self._as_postgres(str(_bin() / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=peer",
                          "--auth-host=scram-sha-256")
        with self.conf.open("a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.socket}'\nfsync = off\n")
        self.start()
        self.sql(f"CREATE ROLE app LOGIN CREATEDB PASSWORD '{PASSWORD}'")
        self.sql("CREATE DATABASE app OWNER app")
        return self

    def start(self) -> None:
        self._as_postgres(str(_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.socket / "server.log"), "-w",
                          "start")

    def restart(self) -> None:
        self._as_postgres(str(_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.start()

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(_bin() / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "-w", "stop"], capture_output=True, cwd="/")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, statement: str, dbname: str = "postgres") -> list[str]:
        out = self._as_postgres("psql", "-X", "-qtA", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket), "-p",
                                str(self.port), "-d", dbname, "-c", statement).stdout
        return [line for line in out.splitlines() if line]

    @property
    def url(self) -> str:
        return f"postgresql://app:{PASSWORD}@127.0.0.1:{self.port}/app"

    def settings_env(self) -> dict[str, str]:
        """What a project needs to archive this cluster with pgBackRest."""
        return {"BLUEGREEN_DATABASE__URL": self.url, "BLUEGREEN_BACKUPS__PITR": "pgbackrest",
                "BLUEGREEN_BACKUPS__PGBACKREST__DATA_DIRECTORY": str(self.data),
                "BLUEGREEN_BACKUPS__PGBACKREST__SOCKET_DIRECTORY": str(self.socket),
                "BLUEGREEN_BACKUPS__PGBACKREST__DIRECTORY": str(self.pgbackrest_dir),
                "BLUEGREEN_BACKUPS__PGBACKREST__STANZA": "app"}

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while subprocess.run(["pg_isready", "-q", "-h", str(self.socket), "-p", str(self.port)]).returncode != 0:
            assert time.monotonic() < deadline, "the test cluster did not come back"
            time.sleep(0.1)
