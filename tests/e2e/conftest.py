"""Real ``fanout`` processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.servers import free_port


class Node:
    """One ``fanout`` process started from the command line."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.args, self.env, self.port, self.log_path = args, env, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 30) -> Node:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanout.cli", *self.args], env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fanout exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"fanout did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """kill -9 the whole process group: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> bool:
        """SIGTERM; True if the process shut down cleanly (servers re-raise the signal after
        their graceful shutdown, so -SIGTERM counts as clean when nothing was logged as failed)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
                return False
        return self.proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in self.output()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[object]:
    nodes: list[Node] = []

    def make(*args: str, env: dict[str, str] | None = None, port: int | None = None) -> Node:
        port = port or free_port()
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
        environ.update({"FANOUT_PORT": str(port), "FANOUT_RATE_LIMIT_PER_S": "0",
                        "FANOUT_LOG_LEVEL": "warning", **(env or {})})  # fmt: skip
        node = Node(list(args), environ, port, tmp_path / f"node-{port}.log")
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        with contextlib.suppress(Exception):
            node.kill()
