"""A throwaway PostgreSQL cluster for tests and benchmarks (Debian's `postgresql` package).

`Postgres` runs `initdb` on a private temporary directory and `postgres` on 127.0.0.1 at a
free port (its Unix socket in that directory too), trust authentication for its superuser
`pinkbutton` (loopback only, gone when it stops); `create_database()` gives each test its own
database. PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres`
user (created by the Debian package) and its processes run under `runuser -u postgres`.

    python -m harness.pg      # starts one, prints its URL, stops on Ctrl-C
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.broker import HOST, free_port

SUPERUSER = "pinkbutton"


class PostgresError(RuntimeError):
    """PostgreSQL could not be found or started; one line (+ the log's tail)."""


def find_bin(name: str) -> str:
    """`initdb`/`postgres` of the newest PostgreSQL under /usr/lib/postgresql, else on PATH."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    for d in reversed(versions):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    found = shutil.which(name)
    if found:
        return found
    raise PostgresError(f"{name} not found: apt-get install postgresql")


class Postgres:
    """One postgres process with its own cluster; a context manager."""

    def __init__(self, *, durable: bool = True) -> None:
        """`durable` False: fsync off (tests: faster; a crash may lose the cluster, which is
        thrown away anyway). Benchmarks keep it on, as a real deployment does."""
        self.durable = durable
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> Postgres:
        try:
            return self._start()
        except BaseException:
            self.stop()  # no cluster directory or process left behind
            raise

    def _start(self) -> Postgres:
        initdb, postgres = find_bin("initdb"), find_bin("postgres")
        # Not under pytest's tmp dirs: as root those are 0700 root and `postgres` cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="pinkbutton-pg-"))
        data, log = self.dir / "data", self.dir / "postgres.log"
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError("running as root and there is no `postgres` user: "
                                    "apt-get install postgresql") from None
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        done = subprocess.run(
            [*self._as_owner(), initdb, "-D", str(data), "-U", SUPERUSER, "--auth=trust",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PostgresError(f"initdb failed: {(done.stderr or done.stdout).strip()[-500:]}")
        self.port = free_port()
        options = ["-c", f"listen_addresses={HOST}", "-c", "max_connections=200",
                   "-c", "shared_buffers=32MB"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "full_page_writes=off",
                        "-c", "synchronous_commit=off"]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self._as_owner(), postgres, "-D", str(data), "-k", str(self.dir),
                 "-p", str(self.port), *options],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(log)
        return self

    def _wait_ready(self, log: Path, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PostgresError(f"postgres exited {self.proc.returncode}: "
                                    f"{log.read_text(errors='replace')[-800:]}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PostgresError(f"postgres not ready on port {self.port} after "
                                        f"{timeout:.0f} s") from None
                time.sleep(0.1)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url_of(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: "fast shutdown" (the runuser parent passes it on to postgres).
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    try:
        with Postgres() as pg:
            print(f"postgres running: {pg.url} (Ctrl-C stops it and deletes the cluster)",
                  flush=True)
            while True:
                time.sleep(3600)
    except PostgresError as e:
        print(f"harness.pg: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
