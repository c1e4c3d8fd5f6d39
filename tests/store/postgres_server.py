"""A real PostgreSQL for the fleet-store tests: initdb + pg_ctl in a temporary directory as
an unprivileged user (nobody when the tests run as root), listening on a Unix socket and on
127.0.0.1, torn down at the end. Debian's postgresql package (scripts/setup --test)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
PASSWORD = "fleet-test-pw-7c1e"        # host connections need it (scram-sha-256); never printed
START_TIMEOUT = 60


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed (initdb not found): run scripts/setup --test")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parent(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])     # after the command's name, state, ppid
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class PostgresServer:
    base: Path
    port: int
    bin: Path
    as_user: list[str]

    @classmethod
    def start(cls) -> "PostgresServer":
        bin_dir = _binaries()
        base = Path(tempfile.mkdtemp(prefix="dfs-sensor-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:           # initdb refuses root: run the server as nobody
            nobody = pwd.getpwnam("nobody")
            os.chown(base, nobody.pw_uid, nobody.pw_gid)
            as_user = ["runuser", "-u", "nobody", "--"]
        server = cls(base, _free_port(), bin_dir, as_user)
        try:
            (base / "pw").write_text(PASSWORD + "\n")
            if as_user:
                os.chown(base / "pw", nobody.pw_uid, nobody.pw_gid)
            server._run("initdb", "-D", str(base / "data"), "-U", SUPERUSER, f"--pwfile={base / 'pw'}",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
            server.resume()
        except subprocess.CalledProcessError as e:
            log = (base / "log").read_text() if (base / "log").exists() else ""
            shutil.rmtree(base, ignore_errors=True)
            raise RuntimeError(f"PostgreSQL did not start: {e.stderr or e.stdout}\n{log}") from None
        return server

    def resume(self) -> None:
        """Start the server (again, after ``pause``)."""
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.base} -c fsync=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.base / "data"), "-o", options, "-l", str(self.base / "log"),
                  "-w", "-t", str(START_TIMEOUT), "start")

    def pause(self) -> None:
        """Stop the server as an administrator would (fast: clients are disconnected)."""
        self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: a hung server (its kernel still keeps the
        TCP connections and the listening socket alive, nothing answers)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        postmaster = int((self.base / "data" / "postmaster.pid").read_text().split()[0])
        children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(pid) == postmaster]
        for pid in [postmaster, *children]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True,
                       text=True, timeout=START_TIMEOUT + 30, cwd=self.base)

    def admin(self) -> psycopg.Connection:
        """The superuser over the Unix socket (trust)."""
        return psycopg.connect(host=str(self.base), port=self.port, user=SUPERUSER, dbname="postgres",
                               autocommit=True)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL over TCP with the password."""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, name: str, password: str = PASSWORD) -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
