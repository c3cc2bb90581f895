"""Processes of ``fanout bench links``: ``fanout serve``, ``fanout worker --roles links`` and the
raw-ASGI ceiling, each in its own process group (granian forks its workers), started until
ready and stopped with SIGTERM (then SIGKILL); and py-spy on a running server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

from bench.cpu import process_cpu_s
from bench.servers import free_port

__all__ = ["Process", "ceiling", "fanout", "profile_top", "start_profile"]

READY_TIMEOUT_S = 90.0  # a scaled start migrates, leases an id and waits for its relay
STOP_TIMEOUT_S = 20.0


class Process:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    @property
    def pids(self) -> list[int]:
        """The process and its children (granian's workers): what a profiler should watch."""
        found = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            found += [int(p) for p in children.split()]
        return found

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the process and its children have used so far."""
        return process_cpu_s(self.pids)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    async def wait_ready(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=1) as client:
            while loop.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"exited with {self.proc.returncode}:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(self.url + path)
                    if response.status_code < 400:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"not ready within {READY_TIMEOUT_S} s:\n{self.tail()}")

    async def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def _running(
    cmd: Sequence[str], env: dict[str, str], port: int, log: Path, ready: str
) -> AsyncIterator[Process]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    environ.update(env)
    with log.open("ab") as sink:
        proc = await asyncio.to_thread(
            subprocess.Popen, list(cmd), env=environ, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    process = Process(proc, f"http://127.0.0.1:{port}", log)
    try:
        await process.wait_ready(ready)
        yield process
    finally:
        await process.stop()


@contextlib.asynccontextmanager
async def fanout(
    command: str, env: dict[str, str], log: Path, *extra: str
) -> AsyncIterator[Process]:
    """``fanout serve`` or ``fanout worker`` with ``env`` on a free port, once ``/readyz``."""
    port = free_port()
    cmd = [sys.executable, "-m", "fanout.cli", command, *extra]
    async with _running(cmd, {**env, "FANOUT_PORT": str(port)}, port, log, "/readyz") as proc:
        yield proc


@contextlib.asynccontextmanager
async def ceiling(server: str, log: Path) -> AsyncIterator[Process]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.links_ceiling", server, str(port)]
    async with _running(cmd, {}, port, log, "/ceiling-ready") as proc:
        yield proc


def start_profile(pids: Sequence[int], duration_s: int, out: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy sampling each of ``pids`` for ``duration_s`` into collapsed stacks (``out`` with
    the pid appended); the caller waits for the returned processes."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    # One py-spy per process: --subprocesses cannot follow an already running fork tree.
    # --gil: only the thread holding the GIL, i.e. what the one Python core is spent on.
    options = ["--duration", str(duration_s), "--rate", "250", "--format", "raw", "--gil"]
    return [
        subprocess.Popen(
            [binary, "record", "--pid", str(pid), *options, "--output", f"{out}.{pid}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def profile_top(files: Sequence[Path], n: int = 15) -> list[tuple[str, float, float]]:
    """(frame, self share, inclusive share) of the ``n`` frames with the most self samples,
    over every collapsed-stack file (``a;b;c count`` lines); idle event-loop waits included."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            samples = int(count)
            frames = stack.split(";")
            total += samples
            self_samples[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
    if not total:
        return []
    return [(f, c / total, inclusive[f] / total) for f, c in self_samples.most_common(n)]
