"""``fanout bench chat``: WebSocket delivery latency, frames/s and memory per idle connection.

For each backend — embedded (one ``fanout serve``) and scaled (throwaway Redis + PostgreSQL, two
``fanout serve`` processes, the clients spread evenly over both, no worker: delivery needs none)
— the benchmark:

1. creates ``--clients`` users, their channels (DMs, groups of 10 and of 500: see
   ``bench.chat_setup``) and tokens through an in-process platform, then starts the servers;
2. connects every client (a progress bar; two client processes by default, see
   ``bench.chat_clients``) and samples the servers' RSS before and after, idle:
   (after - before) / connections is the memory per idle connection;
3. sends ``--rate`` msg/s for ``--duration`` s, each message into a channel drawn uniformly
   over all channels, from a random member — at 10 000 clients 86 % of messages go to DMs,
   14 % to groups of 10 and 0.07 % to groups of 500, ~3.4 frames per message. Latency is
   send → every recipient but the sender (p50/p95/p99), frames/s is counted by the clients
   and by the servers (``fanout_chat_frames``: independent of how fast the clients parse);
4. sweeps rates (250, 500, 1000, … doubling, ``--step`` s each, then two bisection steps)
   until p99 exceeds 50 ms, the senders fall behind or frames are lost: the highest rate
   that held p99 ≤ 50 ms is reported;
5. blasts the (first) 500-member group from a few senders with a few messages in flight each
   for ``--blast`` s: the servers' frames/s (``fanout_chat_frames`` deltas) and the clients'.

Each phase starts once the servers are back to their idle CPU use (an overloaded phase leaves
a backlog) and ends when every expected frame arrived or none came for 5 s: ``lost`` counts
the rest. CPU is read from ``/proc`` for the servers, the client processes and the machine.

Output: a rich table, a markdown table for ``docs/benchmarks.md``, the issue's targets checked,
``chat.json`` and ``chat.png`` (p99 against rate, per backend) under ``--out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.chat_clients import ClientProcs
from bench.chat_report import held, log_problems, report
from bench.chat_setup import BIG_GROUP, place, populate, secret_key
from bench.cpu import machine_busy_s, process_cpu_s
from bench.links import other_benchmarks
from bench.links_load import backend_env
from bench.links_procs import Process, fanout, profile_top, start_profile
from fanout.core.config import Settings

__all__ = ["Options", "main"]

SWEEP_START = 250  # msg/s; doubled each step
SWEEP_MAX = 64_000
SWEEP_BISECT = 2  # steps between the last rate that held and the first that did not
START_DELAY_NS = 300_000_000  # phases start together this long after they are asked for
DRAIN_STALL_S = 5.0  # after sending, frames are waited for until none arrived for this long
DRAIN_MAX_S = 300.0  # … or this long at most (an overloaded server works off its backlog)
IDLE_S = 3.0  # settle before sampling RSS
QUIET_MAX_S = 120.0  # longest wait for the servers to finish the previous phase's work
QUIET_MARGIN_CORES = 0.1  # per serve process, above its idle CPU use, that counts as quiet
BLAST_WINDOW = 4  # messages in flight per blast sender
SERVES = {"embedded": 1, "scaled": 2}


@dataclass(frozen=True, slots=True)
class Options:
    clients: int
    rate: float
    duration_s: float
    sweep: bool
    step_s: float
    blast_s: float
    client_procs: int
    seed: int
    profile: Path | None  # py-spy on the servers in the fixed-rate and blast phases, files here


@dataclass
class _Run:
    """One backend's running parts."""

    serves: list[Process]
    procs: ClientProcs
    clients: int
    phase: int = 0
    idle_cores: float = 0.0  # the servers' CPU use with every client connected and idle
    seen: dict[str, Any] = field(default_factory=lambda: {"closes": {}, "error_frames": {}})

    async def scrape(self, name: str) -> float:
        """The sum of one metric over every serve process."""
        total = 0.0
        async with httpx.AsyncClient(timeout=10) as client:
            for serve in self.serves:
                text = (await client.get(serve.url + "/metrics")).text
                found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
                total += float(found.group(1)) if found else 0.0
        return total

    def rss_bytes(self) -> int:
        total = 0
        for serve in self.serves:
            status = Path(f"/proc/{serve.proc.pid}/status").read_text()
            found = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
            total += int(found.group(1)) * 1024 if found else 0
        return total

    def server_cpu_s(self) -> float:
        return sum(s.cpu_s() for s in self.serves)


async def _sleep_until(ns: int) -> None:
    await asyncio.sleep(max(ns - time.perf_counter_ns(), 0) / 1e9)


async def _drain(run: _Run, phase: int, expected: int) -> float:
    """Wait until the clients hold every expected latency sample of ``phase``, or none came for
    ``DRAIN_STALL_S`` (the rest are lost), or ``DRAIN_MAX_S`` passed: seconds waited."""
    began = moved = time.perf_counter()
    seen = -1
    while time.perf_counter() - began < DRAIN_MAX_S:
        count = sum(await run.procs.ask_all("count", phase))
        if count >= expected or time.perf_counter() - moved > DRAIN_STALL_S:
            break
        if count > seen:
            seen, moved = count, time.perf_counter()
        await asyncio.sleep(0.1)
    return time.perf_counter() - began


async def _quiesce(run: _Run) -> float:
    """Wait until the servers are back to their idle CPU use — an overloaded phase leaves a
    backlog (deliveries, offline notices) that would slow the next one: seconds waited."""
    began = time.perf_counter()
    quiet = run.idle_cores + QUIET_MARGIN_CORES * len(run.serves)
    while time.perf_counter() - began < QUIET_MAX_S:
        before = run.server_cpu_s()
        await asyncio.sleep(1.0)
        if run.server_cpu_s() - before <= quiet:
            break
    return time.perf_counter() - began


async def measure(
    run: _Run, mode: str, rate: float, duration_s: float, profile: Path | None = None
) -> dict[str, Any]:
    """One phase: ``paced`` at ``rate`` msg/s or ``blast``; latency, frames/s, losses, CPU;
    with ``profile``, py-spy samples the servers meanwhile (into files named after it)."""
    run.phase += 1
    phase = run.phase
    quiesce_s = await _quiesce(run)
    t0 = time.perf_counter_ns() + START_DELAY_NS
    arg = {"phase": phase, "t0_ns": t0, "rate": rate, "duration_s": duration_s,
           "window": BLAST_WINDOW}  # fmt: skip
    sending = asyncio.ensure_future(run.procs.ask_all(mode, arg))
    await _sleep_until(t0)
    frames0, began = await run.scrape("fanout_chat_frames"), time.perf_counter()
    cpu0, client_cpu0, busy0 = run.server_cpu_s(), process_cpu_s(run.procs.pids), machine_busy_s()
    spies = []
    if profile is not None:
        for stale in profile.parent.glob(f"{profile.name}.*"):  # an earlier run's
            stale.unlink()
        spies = start_profile([s.proc.pid for s in run.serves], int(duration_s), profile)
    await _sleep_until(t0 + int(duration_s * 1e9))
    frames1, window = await run.scrape("fanout_chat_frames"), time.perf_counter() - began
    cpu, client_cpu = run.server_cpu_s() - cpu0, process_cpu_s(run.procs.pids) - client_cpu0
    busy = machine_busy_s() - busy0
    sent = await sending
    for spy in spies:
        await asyncio.to_thread(spy.wait, 120)
    expected = sum(s["expected"] for s in sent)
    drain_s = await _drain(run, phase, expected)
    got = await run.procs.ask_all("collect", phase)
    stats = await _stats(run)
    closes = Counter(stats["closes"]) - Counter(run.seen["closes"])
    errors = Counter(stats["error_frames"]) - Counter(run.seen["error_frames"])
    run.seen = stats
    samples = np.concatenate([np.frombuffer(g["samples"], dtype=np.int64) for g in got]) / 1e6
    frames = sum(g["frames"] for g in got)
    last = max((g["last_ns"] for g in got), default=t0)
    spread_s = max(max(s["ended_ns"] for s in sent) - t0, 1) / 1e9
    messages = sum(s["sent"] for s in sent)
    lags = [np.frombuffer(s["lag_ns"], dtype=np.int64) for s in sent if "lag_ns" in s]
    lag = np.concatenate(lags) / 1e6 if lags else np.zeros(0)
    p50, p95, p99 = (
        (float(v) for v in np.percentile(samples, [50, 95, 99])) if samples.size else (None,) * 3
    )
    result = {
        "rate": rate, "messages": messages, "achieved_per_s": messages / spread_s,
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        "max_ms": float(samples.max()) if samples.size else None,
        "expected": expected, "received": int(samples.size), "lost": expected - int(samples.size),
        "refused": sum(g["refused"] for g in got),
        "frames_per_s": frames / max((last - t0) / 1e9, duration_s),
        "server_frames_per_s": (frames1 - frames0) / window,
        "send_lag_p99_ms": float(np.percentile(lag, 99)) if lag.size else None,
        "unacked": sum(s.get("unacked", 0) for s in sent),
        "skipped": sum(s.get("skipped", 0) for s in sent),
        "server_cores": cpu / window, "client_cores": client_cpu / window,
        "machine_cores": busy / window, "drain_s": drain_s, "quiesce_s": quiesce_s,
        "closes": dict(closes), "error_frames": dict(errors),
    }  # fmt: skip
    if profile is not None:
        files = sorted(profile.parent.glob(f"{profile.name}.*"))
        result["profile"] = [
            {"frame": f, "self": s, "inclusive": i} for f, s, i in profile_top(files)
        ]
    return result


async def sweep(run: _Run, step_s: float, label: str) -> list[dict[str, Any]]:
    """Doubling rates until one fails, then bisect between the last that held and that one."""
    points: list[dict[str, Any]] = []

    async def step(rate: float) -> bool:
        point = await measure(run, "paced", rate, step_s)
        point["held"] = held(point)
        points.append(point)
        _say(label, f"sweep {rate:,.0f} msg/s: p99 {_ms(point['p99_ms'])}, achieved "
                    f"{point['achieved_per_s']:,.0f}/s, lost {point['lost']}")  # fmt: skip
        return bool(point["held"])

    good, rate = 0.0, float(SWEEP_START)
    while rate <= SWEEP_MAX and await step(rate):
        good, rate = rate, rate * 2
    bad = rate if rate <= SWEEP_MAX else 0.0
    for _ in range(SWEEP_BISECT if bad else 0):
        rate = round((good + bad) / 2 / 50) * 50
        if rate in (good, bad):
            break
        good, bad = (rate, bad) if await step(rate) else (good, rate)
    return points


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _say(label: str, text: str) -> None:
    print(f"[{label}] {text}", flush=True)


async def _connect(run: _Run, label: str) -> dict[str, Any]:
    done = [0] * run.procs.count
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns) as progress:
        task = progress.add_task(f"{label}: connecting", total=run.clients)

        def seen(i: int) -> Any:
            def update(n: int) -> None:
                done[i] = n
                progress.update(task, completed=sum(done))

            return update

        answers = await asyncio.gather(*(
            run.procs.ask(i, "connect", None, seen(i)) for i in range(run.procs.count)
        ))  # fmt: skip
    failures: Counter[str] = sum((Counter(a["failures"]) for a in answers), Counter())
    return {"open": sum(a["open"] for a in answers), "failures": dict(failures),
            "connect_s": max(a["seconds"] for a in answers)}  # fmt: skip


def _stem(opts: Options, label: str, phase: str) -> Path | None:
    return opts.profile / f"chat-profile-{label}-{phase}" if opts.profile else None


async def _phases(run: _Run, opts: Options, label: str) -> dict[str, Any]:
    await asyncio.sleep(IDLE_S)
    before = run.rss_bytes()
    connected = await _connect(run, label)
    failed = f", failures {connected['failures']}" if connected["failures"] else ""
    _say(label, f"{connected['open']:,} open in {connected['connect_s']:.1f} s{failed}")
    if not connected["open"]:
        raise RuntimeError(f"{label}: no client could connect")
    cpu = run.server_cpu_s()
    await asyncio.sleep(IDLE_S)
    after = run.rss_bytes()
    run.idle_cores = (run.server_cpu_s() - cpu) / IDLE_S
    attached = int(await run.scrape("fanout_chat_connections"))
    row: dict[str, Any] = {
        "clients": run.clients, **connected, "attached": attached, "idle_cores": run.idle_cores,
        "rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20,
        "rss_kb_per_conn": (after - before) / max(connected["open"], 1) / 1024,
    }  # fmt: skip
    _say(label, f"RSS {before / 2**20:.0f} → {after / 2**20:.0f} MB: "
                f"{row['rss_kb_per_conn']:.1f} KB per idle connection")  # fmt: skip
    fixed = await measure(run, "paced", opts.rate, opts.duration_s, _stem(opts, label, "fixed"))
    _say(label, f"{opts.rate:,.0f} msg/s: p50 {_ms(fixed['p50_ms'])} p99 {_ms(fixed['p99_ms'])}, "
                f"{fixed['server_frames_per_s']:,.0f} frames/s, lost {fixed['lost']}")  # fmt: skip
    row["fixed"] = fixed
    row["sweep"] = await sweep(run, opts.step_s, label) if opts.sweep else []
    fixed["held"] = held(fixed)
    good = [p["rate"] for p in [fixed, *row["sweep"]] if p["held"]]
    row["max_rate_p99_ok"] = max(good) if good else None
    blast = await measure(run, "blast", 0, opts.blast_s, _stem(opts, label, "blast"))
    row["blast"] = blast
    _say(label, f"blast: {blast['server_frames_per_s']:,.0f} frames/s at the servers, "
                f"{blast['frames_per_s']:,.0f}/s at the clients, "
                f"p99 {_ms(blast['p99_ms'])}")  # fmt: skip
    row.update(await _stats(run))
    return row


async def _stats(run: _Run) -> dict[str, Any]:
    """Open clients, closes by code and error frames by code, all processes, since the start."""
    stats = await run.procs.ask_all("stats")
    closes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for s in stats:
        closes.update({str(code): n for code, n in s["closes"].items()})
        errors.update(s["errors"])
    return {"open_at_end": sum(s["open"] for s in stats), "closes": dict(closes),
            "error_frames": dict(errors)}  # fmt: skip


async def _run_backend(backend: str, opts: Options, workdir: Path) -> dict[str, Any]:
    logs = workdir / backend
    logs.mkdir(parents=True, exist_ok=True)
    with backend_env(backend, workdir) as base:
        env = {**base, "FANOUT_SECRET_KEY": secret_key(),
               "FANOUT_CHAT_GROUP_CAP": str(BIG_GROUP)}  # fmt: skip
        began = time.perf_counter()
        pop = await populate(Settings.from_env(env), opts.clients, opts.seed, backend)
        _say(backend, f"{len(pop.user_ids):,} users, {pop.labels()} in "
                      f"{time.perf_counter() - began:.1f} s")  # fmt: skip
        async with contextlib.AsyncExitStack() as stack:
            serves = [
                await stack.enter_async_context(fanout("serve", env, logs / f"serve-{i}.log"))
                for i in range(SERVES[backend])
            ]
            procs = ClientProcs(place(pop, [s.url for s in serves], opts.client_procs, opts.seed))
            try:
                row = await _phases(_Run(serves, procs, opts.clients), opts, backend)
                ends = {s.log: s.log.stat().st_size for s in serves}  # before the clients close
            finally:
                procs.close()
        row["server_log_problems"] = log_problems(ends)
        return {"backend": backend, "serves": SERVES[backend], "channels": pop.labels(), **row}


def main(
    *, clients: int, rate: float, duration_s: float, sweep: bool, step_s: float, blast_s: float,
    client_procs: int, backends: list[str], seed: int, out: Path, keep: bool = False,
    profile: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    opts = Options(clients=clients, rate=rate, duration_s=duration_s, sweep=sweep, step_s=step_s,
                   blast_s=blast_s, client_procs=client_procs, seed=seed,
                   profile=out if profile else None)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    _, limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # servers and clients inherit it
    if clients + 200 > limit:  # the embedded server holds every client's socket
        raise SystemExit(f"{clients:,} clients need more than the {limit:,} open files a "
                         "process may have here: lower --clients")  # fmt: skip
    if others := other_benchmarks():
        print(f"warning: other benchmarks are running (pids {others}): figures will be low")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fanout-bench-chat-") as tmp:
        workdir = Path(tmp)
        try:
            for backend in backends:
                rows.append(asyncio.run(_run_backend(backend, opts, workdir)))
        finally:
            if keep:  # the servers' logs, for a failed run
                kept = out / "chat-logs"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(workdir, kept, ignore=shutil.ignore_patterns("*.sqlite3*"))
    report(rows, {**asdict(opts), "profile": profile}, out)
    return rows
