"""Throwaway Redis and PostgreSQL servers for the benchmarks and the test suite.

Each starts on a free port in a temporary directory and is stopped at the end of the session,
so runs are isolated and work on any machine with the binaries. ``FANOUT_TEST_REDIS_URL`` and
``FANOUT_TEST_DATABASE_URL`` point the suite at existing servers instead (their database is
wiped by the tests).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BackendUnavailable", "free_port", "postgres_server", "redis_server"]


class BackendUnavailable(RuntimeError):
    """A backend server could not be found or started on this machine."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BackendUnavailable(f"server exited with {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BackendUnavailable(f"nothing listens on port {port} after {timeout_s} s")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private ``redis-server`` with no persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BackendUnavailable("redis-server is not on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fanout-redis-") as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--maxclients",
                "10000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port, 10, proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    found = shutil.which(name)
    if candidates:
        return candidates[0]
    if found:
        return found
    raise BackendUnavailable(f"PostgreSQL's {name} was not found")


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise BackendUnavailable("running as root without runuser to drop to postgres")
    return [runuser, "-u", "postgres", "--", *cmd]


def _run_postgres_tool(cmd: list[str], env: dict[str, str], what: str) -> None:
    """Run a PostgreSQL tool (as the postgres user when root); ``BackendUnavailable`` if it
    fails, with the end of its error output."""
    result = subprocess.run(_as_postgres_user(cmd), capture_output=True, env=env, check=False)
    if result.returncode != 0:
        raise BackendUnavailable(f"{what} failed: {result.stderr.decode()[-500:]}")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL cluster (``initdb`` + ``pg_ctl``, fsync off); yields its URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="fanout-pg-"))
    datadir = workdir / "data"
    try:
        if os.geteuid() == 0:
            shutil.chown(workdir, "postgres", "postgres")
        env = {**os.environ, "LC_ALL": "C"}
        _run_postgres_tool(
            [initdb, "-D", str(datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8",
             "--no-sync"],
            env, "initdb",
        )  # fmt: skip
        options = (
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        _run_postgres_tool(
            [pg_ctl, "-D", str(datadir), "-o", options, "-w", "-t", "30",
             "-l", str(workdir / "log"), "start"],
            env, "pg_ctl start",
        )  # fmt: skip
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_postgres_user([pg_ctl, "-D", str(datadir), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                check=False,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
