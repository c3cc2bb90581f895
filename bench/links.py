"""``fanout bench links``: redirects/s of ``fanout serve`` against a raw-ASGI 302 ceiling.

For each backend (embedded, scaled) the benchmark registers a user through the API, loads
``--links`` links straight into the store's table, and picks ``--codes`` of them at random as
the Zipf-distributed working set. Then, for each server (uvicorn, granian):

1. start ``fanout serve`` on that server (scaled: and one ``fanout worker --roles links``), Redis'
   link cache emptied first, so each server starts as cold as the first; and, beside it, the
   ceiling: a raw ASGI app answering a fixed 302 with the same headers
   (``bench.links_ceiling``), same server and options;
2. warm both up with wrk, then measure them in ``--rounds`` alternating slices of
   ``--duration / --rounds`` seconds each (``wrk -t2 -c64``, closed loop, analytics on),
   fanout's clicks aggregated after each of its slices, before the ceiling's: redirects/s,
   p50/p99, non-3xx answers, CPU per redirect (aggregation included), and the LRU hit rate from
   ``/metrics``. On a shared machine another tenant's burst then lands on both sides of a
   round instead of on one of them: ``ratio`` is the median of the rounds' ratios, the other
   figures medians of the slices;
3. wait for aggregation to settle and compare the clicks aggregated in the store with the
   redirects the server resolved (warm-up included): ``lost`` must be 0; the hottest code's
   ``clicks`` is also read back through ``GET /v1/links/{code}``.

Output: a rich table, a markdown table for ``docs/benchmarks.md``, the targets checked,
``links.json`` and ``links.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.cpu import machine_busy_s
from bench.links_load import (
    ClickCounter,
    backend_env,
    bench_user,
    clear_link_cache,
    code_of,
    load_links,
    open_counter,
)
from bench.links_procs import Process, ceiling, fanout, profile_top, start_profile
from bench.links_report import report
from bench.links_wrk import Lookups, WrkResult, lookups, require_wrk, run_wrk, write_zipf

__all__ = ["Options", "main"]

SETTLE_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Options:
    links: int
    codes: int  # distinct codes in the Zipf working set
    zipf_s: float
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    settle_timeout_s: float
    seed: int
    profile: bool  # py-spy on fanout during its first slice (it costs the server CPU)
    rounds: int = 3

    @property
    def slice_s(self) -> int:
        return max(1, self.duration_s // self.rounds)


@dataclass(frozen=True, slots=True)
class Workload:
    script: Path
    table: Path
    hottest: str
    token: str


def other_benchmarks() -> list[int]:
    """Pids of other ``fanout bench …`` runs on this machine (they would pollute the figures)."""
    ours = _ancestors()  # this run, and a wrapper such as `timeout … fanout bench links`
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if any(a.endswith(b"fanout") and b == b"bench" for a, b in itertools.pairwise(args)):
                found.append(int(entry.name))
    return found


def _ancestors() -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # the field after the state: ppid
    return found


async def _wrk(url: str, work: Workload, opts: Options, duration_s: int) -> WrkResult:
    return await run_wrk(
        url, work.script, work.table, duration_s=duration_s, connections=opts.connections,
        threads=opts.threads, seed=opts.seed,
    )  # fmt: skip


async def _settle(
    url: str, counter: ClickCounter, before: int, timeout_s: float
) -> tuple[int, int, float]:
    """Wait until every redirect the server resolved is aggregated (or the timeout):
    (served, aggregated, seconds waited)."""
    began = time.perf_counter()
    while True:
        served = (await lookups(url)).all
        aggregated = (await counter.totals())[0] - before
        waited = time.perf_counter() - began
        if aggregated >= served or waited > timeout_s:
            return served, aggregated, waited
        await asyncio.sleep(SETTLE_POLL_S)


async def _api_clicks(url: str, token: str, code: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get(f"/v1/links/{code}",
                                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        response.raise_for_status()
        return int(response.json()["clicks"])


@dataclass
class _Slices:
    """The measured slices of one target: wrk results and CPU seconds, one per round."""

    results: list[WrkResult]
    cpu_s: list[float]
    busy_s: list[float]  # the whole machine's (wrk, the backend's servers, everything)

    def median(self, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in self.results))

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.results)


async def _slice(url: str, proc: Process, work: Workload, opts: Options, slices: _Slices) -> None:
    cpu_before, busy_before = proc.cpu_s(), machine_busy_s()
    slices.results.append(await _wrk(url, work, opts, opts.slice_s))
    slices.cpu_s.append(proc.cpu_s() - cpu_before)
    slices.busy_s.append(machine_busy_s() - busy_before)


async def _measure(
    backend: str, server: str, env: dict[str, str], work: Workload, opts: Options,
    counter: ClickCounter, logs: Path, out: Path,
) -> dict[str, Any]:  # fmt: skip
    """fanout and the ceiling, both running, measured in alternating slices: noise from the
    machine (another tenant's burst) then lands on both sides of a round, not on one side."""
    await clear_link_cache(env)
    before, bots_before = await counter.totals()
    async with contextlib.AsyncExitStack() as stack:
        worker = None
        if backend == "scaled":
            worker = await stack.enter_async_context(
                fanout("worker", env, logs / "worker.log", "--roles", "links")
            )
        serve = await stack.enter_async_context(
            fanout("serve", {**env, "FANOUT_SERVER": server}, logs / f"serve-{server}.log")
        )
        top = await stack.enter_async_context(ceiling(server, logs / f"ceiling-{server}.log"))
        await _wrk(serve.url, work, opts, opts.warmup_s)
        await _wrk(top.url, work, opts, opts.warmup_s)
        await _settle(serve.url, counter, before, opts.settle_timeout_s)
        start: Lookups = await lookups(serve.url)
        others = other_benchmarks()
        ours, raw = _Slices([], [], []), _Slices([], [], [])
        worker_cpu = settle_busy_s = 0.0
        stem = out / f"links-profile-{backend}-{server}"
        for round_ in range(opts.rounds):
            profiling = opts.profile and round_ == 0
            spies = start_profile(serve.pids, opts.slice_s, stem) if profiling else []
            worker_before = worker.cpu_s() if worker else 0.0
            await _slice(serve.url, serve, work, opts, ours)
            # The slice's clicks are aggregated before the ceiling's slice (and their CPU is
            # fanout's): fanout's background work must not run while the ceiling is measured.
            # (With --profile, py-spy's own CPU is in fanout's machine figures.)
            cpu_before, busy_before = serve.cpu_s(), machine_busy_s()
            for spy in spies:
                await asyncio.to_thread(spy.wait, 120)
            await _settle(serve.url, counter, before, opts.settle_timeout_s)
            ours.cpu_s[-1] += serve.cpu_s() - cpu_before
            settle_busy_s += machine_busy_s() - busy_before
            worker_cpu += worker.cpu_s() - worker_before if worker else 0.0
            await _slice(top.url, top, work, opts, raw)
        end = await lookups(serve.url)
        served, aggregated, settle_s = await _settle(
            serve.url, counter, before, opts.settle_timeout_s
        )
        api_clicks = await _api_clicks(serve.url, work.token, work.hottest)
        db_clicks = await counter.clicks(work.hottest)
        bots = (await counter.totals())[1] - bots_before
        measured_s = sum(r.duration_s for r in ours.results)
        raw_s = sum(r.duration_s for r in raw.results)
        machine_s = sum(ours.busy_s) + settle_busy_s
        ratios = [a.per_s / b.per_s for a, b in zip(ours.results, raw.results, strict=True)]
        row: dict[str, Any] = {
            "backend": backend,
            "server": server,
            "redirects_per_s": ours.median("per_s"),
            "p50_ms": ours.median("p50_ms"),
            "p90_ms": ours.median("p90_ms"),
            "p99_ms": ours.median("p99_ms"),
            "max_ms": max(r.max_ms for r in ours.results),
            "cpu_us_per_redirect": sum(ours.cpu_s) / max(ours.requests, 1) * 1e6,
            "server_cores": sum(ours.cpu_s) / measured_s,
            "worker_cores": worker_cpu / measured_s if worker else None,
            "hit_rate": (end.lru_hit - start.lru_hit) / max(end.all - start.all, 1),
            "wrk_requests": ours.requests,
            "non_3xx": sum(r.non_3xx for r in ours.results),
            "socket_errors": sum(r.socket_errors for r in ours.results),
            "served": served,
            "aggregated": aggregated,
            "lost": served - aggregated,
            "bots": bots,
            "settle_s": settle_s,
            "hottest_clicks_api": api_clicks,
            "hottest_clicks_store": db_clicks,
            "other_benchmarks": len(others),
            "ceiling_per_s": raw.median("per_s"),
            "ceiling_p50_ms": raw.median("p50_ms"),
            "ceiling_p99_ms": raw.median("p99_ms"),
            "ceiling_non_3xx": sum(r.non_3xx for r in raw.results),
            "ceiling_cpu_us_per_redirect": sum(raw.cpu_s) / max(raw.requests, 1) * 1e6,
            "ceiling_cores": sum(raw.cpu_s) / raw_s,
            # The whole machine's CPU (wrk's, PostgreSQL's, Redis', the worker's included), in
            # the slices and, for fanout, until their clicks are aggregated: what a redirect
            # costs all told, every process sharing the same cores. Busy cores: in the slices.
            "machine_us_per_redirect": machine_s / max(ours.requests, 1) * 1e6,
            "ceiling_machine_us_per_redirect": sum(raw.busy_s) / max(raw.requests, 1) * 1e6,
            "machine_cores": sum(ours.busy_s) / measured_s,
            "ceiling_machine_cores": sum(raw.busy_s) / raw_s,
            "ratio": statistics.median(ratios),
            "ratios": ratios,
            "slices_per_s": [r.per_s for r in ours.results],
            "ceiling_slices_per_s": [r.per_s for r in raw.results],
        }
        if opts.profile:
            files = await asyncio.to_thread(lambda: sorted(out.glob(f"{stem.name}.*")))
            row["profile"] = [
                {"frame": f, "self": s, "inclusive": i} for f, s, i in profile_top(files)
            ]
        return row


async def _prepare(
    backend: str, env: dict[str, str], opts: Options, workdir: Path
) -> tuple[Workload, float]:
    # Register through the API (this first start also applies the migrations), then load.
    async with fanout("serve", env, workdir / "prepare.log") as serve:
        owner, token = await bench_user(serve.url)
    print(f"[{backend}] loading {opts.links:,} links …", flush=True)
    load_s = await load_links(env, opts.links, owner)
    picked = random.Random(opts.seed).sample(range(opts.links), min(opts.codes, opts.links))
    script, table = write_zipf(workdir, [code_of(i) for i in picked], opts.zipf_s, opts.seed)
    hottest = table.read_text().split("\n", 1)[0].split(" /", 1)[1]
    return Workload(script, table, hottest, token), load_s


async def _run_backend(
    backend: str, servers: list[str], opts: Options, workdir: Path, out: Path
) -> list[dict[str, Any]]:
    rows = []
    logs = workdir / backend
    logs.mkdir(parents=True, exist_ok=True)
    with backend_env(backend, workdir) as env:
        work, load_s = await _prepare(backend, env, opts, logs)
        print(f"[{backend}] loaded in {load_s:.1f} s", flush=True)
        async with open_counter(env) as counter:
            for server in servers:
                print(f"[{backend}/{server}] fanout and ceiling, {opts.rounds} rounds …",
                      flush=True)  # fmt: skip
                row = await _measure(backend, server, env, work, opts, counter, logs, out)
                row["load_s"] = load_s
                print(f"[{backend}/{server}] {row['redirects_per_s']:,.0f}/s vs "
                      f"{row['ceiling_per_s']:,.0f}/s (ratios "
                      f"{', '.join(f'{r:.2f}' for r in row['ratios'])}), "
                      f"p99 {row['p99_ms']:.1f} ms, lost {row['lost']}", flush=True)  # fmt: skip
                rows.append(row)
    return rows


def main(
    *, links: int, codes: int, zipf_s: float, duration_s: int, warmup_s: int, connections: int,
    threads: int, settle_timeout_s: float, backends: list[str], servers: list[str], seed: int,
    profile: bool, out: Path, keep: bool = False, rounds: int = 3,
) -> list[dict[str, Any]]:  # fmt: skip
    require_wrk()
    opts = Options(links=links, codes=codes, zipf_s=zipf_s, duration_s=duration_s,
                   warmup_s=warmup_s, connections=connections, threads=threads,
                   settle_timeout_s=settle_timeout_s, seed=seed, profile=profile,
                   rounds=rounds)  # fmt: skip
    if others := other_benchmarks():
        print(f"warning: other benchmarks are running (pids {others}): figures will be low")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fanout-bench-links-") as tmp:
        workdir = Path(tmp)
        try:
            for backend in backends:
                rows += asyncio.run(_run_backend(backend, servers, opts, workdir, out))
        finally:
            if keep:  # the servers' logs, for a failed run
                kept = out / "links-logs"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(workdir, kept, ignore=shutil.ignore_patterns("*.sqlite3*"))
    report(rows, asdict(opts), out)
    return rows
