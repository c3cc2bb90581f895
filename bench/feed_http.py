"""Feed reads over HTTP for ``fanout bench feed``: a real ``fanout serve`` on the benchmark's
state, and a client that logs in and reads the first page of its feed, one request at a time."""

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

from bench.servers import free_port

__all__ = ["fanout_serve", "http_reads"]

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
WARM_READS = 20  # connections, caches and the server's first-request work, not timed
PAGE = 20


@contextlib.contextmanager
def fanout_serve(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run ``fanout serve`` with ``env`` (``FANOUT_*``; rate limiting off) until the block ends;
    yields its base URL once ``/readyz`` answers 200."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    environ.update(
        {
            "FANOUT_PORT": str(port),
            "FANOUT_RATE_LIMIT_PER_S": "0",
            "FANOUT_LOG_LEVEL": "warning",
            **env,
        }
    )
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout.cli", "serve"],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(proc, url, log_path)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # graceful: consumers give their leases back
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT_S)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"fanout serve exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"fanout serve was not ready within {READY_TIMEOUT_S} s")


async def http_reads(url: str, username: str, password: str, reads: int) -> list[float]:
    """Log in, then time ``reads`` sequential ``GET /v1/feed?limit=20`` (seconds each) over one
    kept-alive connection."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        session = await client.post(
            "/v1/sessions", json={"username": username, "password": password}
        )
        session.raise_for_status()
        client.headers["Authorization"] = f"Bearer {session.json()['token']}"
        params = {"limit": PAGE}
        for _ in range(WARM_READS):
            warm = await client.get("/v1/feed", params=params)
            warm.raise_for_status()
        if len(warm.json()["items"]) != PAGE:
            raise RuntimeError(f"the reader's feed over HTTP is short: {warm.text[:200]}")
        samples: list[float] = []
        for _ in range(reads):
            began = time.perf_counter()
            response = await client.get("/v1/feed", params=params)
            samples.append(time.perf_counter() - began)
            response.raise_for_status()
        return samples
