"""``fanout bench feed``: push vs pull vs hybrid fan-out on a synthetic social graph.

For each backend (``scaled``: PostgreSQL + Redis; ``sqlite``: embedded) the graph
(``bench/graph.py``) and the background posts are bulk-loaded once (``bench/feed_load.py``).
Then for each strategy the strategy's state is reset and measured through the real service,
worker, consumer runners and reader (``bench/feed_backend.py``):

* **write amplification**: timeline writes per post over ``measured_posts`` posts by authors
  drawn uniformly (the same authors for every strategy and backend), beside the exact
  expectation over every author of the graph;
* **fan-out throughput**: timeline writes/s while the real runners (both lanes, bootstrap's
  concurrency) drain those posts from the log — creating them is not timed;
* **storage**: timelines, entries and bytes right after that fan-out;
* **freshness**: a post by one of the reader's followees, from the author's request to the first
  read of the reader's first page that shows it (polled in the service while the runners and
  the outbox relay run), one post at a time;
* **read latency**: the reader — following 200 accounts of which 20 are pull-tier — reads the
  first page (20 posts) of a warm feed, in the service and over HTTP from a real
  ``fanout serve`` on the same state.

On the scaled backend C ``redis-benchmark -P 100`` ZADD on random keys runs against the same
Redis in the same run, and fan-out throughput is reported as a ratio of it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import graph
from bench.feed_backend import Backend, Feed, open_backend
from bench.feed_http import fanout_serve, http_reads
from bench.feed_report import report
from bench.report import redis_benchmark
from fanout.accounts.model import NewUser, UserId
from fanout.accounts.passwords import PasswordHasher
from fanout.core.clock import SystemClock
from fanout.core.consumer import LEASE_MS
from fanout.core.gc_pauses import tune_gc
from fanout.core.log import Topics
from fanout.feed.events import FEED_POSTS_LOW
from fanout.feed.policy import FanoutPolicy
from fanout.feed.worker import GROUP

__all__ = ["STRATEGIES", "main"]

STRATEGIES = ("push", "pull", "hybrid")
READER = ("bench_reader", "bench-reader-password")  # created in the store, logs in over HTTP
PAGE = 20
CREATE_CONCURRENCY = 32  # measured posts created at once (not timed)
DRAIN_TIMEOUT_S = 900.0
FRESH_TIMEOUT_S = 30.0  # a post not visible after this counts as this (and is reported)
FRESH_POLL_S = 0.001  # between two reads while waiting for a post
ZADD_REQUESTS = 1_000_000
FEED_TOPICS = (Topics.FEED_POSTS, FEED_POSTS_LOW, Topics.FEED_FOLLOWS)

console = Console(width=120)


@dataclass(frozen=True)
class Workload:
    """Everything drawn from the seed, shared by every backend and strategy."""

    seed: int
    counts: graph.IntArray
    tiers: graph.Tiers
    followees: graph.IntArray  # the reader's
    background: graph.Posts
    authors: graph.IntArray  # of the measured posts
    fresh_authors: graph.IntArray  # of the freshness posts: the reader's followees
    reads: int
    http: bool
    now_ms: int

    @property
    def users(self) -> int:
        return len(self.counts)

    def followers(self) -> graph.IntArray:
        """Follower counts once the reader's edges are in."""
        counts = self.counts.copy()
        counts[self.followees - 1] += 1
        return counts

    def pull_authors(self, strategy: str) -> list[int]:
        """Pull sources as the strategy would have left them after the background posts."""
        authors = np.unique(self.background.authors)
        if strategy == "push":
            return []
        if strategy == "hybrid":
            authors = authors[self.followers()[authors - 1] >= self.tiers.pull_from]
        return [int(a) for a in authors]

    def expected_writes(self, strategy: str) -> float:
        """Timeline writes per post averaged over every author (no follower is idle)."""
        counts = self.followers()
        if strategy == "pull":
            return 0.0
        if strategy == "hybrid":
            counts = np.where(counts < self.tiers.pull_from, counts, 0)
        return float(counts.mean())


def workload(
    *, users: int, posts: int, measured: int, fresh: int, reads: int, seed: int, http: bool
) -> Workload:
    counts = graph.follower_counts(users, seed)
    tiers = graph.tiers_for(users)
    now_ms = SystemClock().now_ms()
    followees = graph.reader_followees(counts, tiers, seed)
    rng = np.random.default_rng([seed, 4])
    return Workload(
        seed,
        counts,
        tiers,
        followees,
        graph.background_posts(users, posts, seed, now_ms),
        rng.choice(users, size=measured, replace=measured > users) + 1,
        rng.choice(followees, size=fresh),
        reads,
        http,
        now_ms,
    )


def ms(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def load(backend: Backend, w: Workload) -> UserId:
    """Bulk-load the graph and the background posts; create the reader and its 200 follows."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        edges = progress.add_task(f"{backend.name}: follows", total=int(w.counts.sum()))
        await backend.loader.load_graph(
            graph.edge_chunks(w.counts, w.seed),
            w.users,
            w.now_ms,
            lambda n: progress.advance(edges, n),
        )
        posts = progress.add_task(f"{backend.name}: posts", total=len(w.background))
        await backend.loader.load_posts(w.background, lambda n: progress.advance(posts, n))
    username, password = READER
    reader = await backend.users.create(
        NewUser(
            UserId(backend.ids.next_id()),
            username,
            username,
            await PasswordHasher.fast_for_tests().hash(password),
            w.now_ms,
        )
    )
    await backend.loader.follow(reader.id, [int(f) for f in w.followees], w.now_ms)
    return reader.id


async def fan_out(backend: Backend, feed: Feed, w: Workload) -> dict[str, Any]:
    """Create the measured posts, then time the runners draining them; runners keep running."""
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def create(author: int) -> None:
        async with gate:
            await feed.service.create_post(UserId(author), "a measured post", [])

    began = time.perf_counter()
    await asyncio.gather(*(create(int(a)) for a in w.authors))
    await wait_for(backend.loader.settled, 60, "the outbox to reach the log")
    console.log(f"{backend.name}: created in {time.perf_counter() - began:.1f} s; draining")
    done = feed.worker.expect(len(w.authors))
    runners = backend.runners(feed.worker)
    began = time.perf_counter()
    for runner in runners:
        await runner.start()
    await asyncio.wait_for(done.wait(), DRAIN_TIMEOUT_S)
    elapsed = time.perf_counter() - began
    written = feed.worker.written
    return {
        "runners": runners,
        "writes_per_post": written / len(w.authors),
        "fanout_writes_per_s": written / elapsed if written else None,
        "fanout_s": elapsed,
    }


async def freshness(feed: Feed, reader: UserId, authors: Sequence[int]) -> dict[str, Any]:
    delays: list[float] = []
    late = 0
    for author in authors:
        began = time.perf_counter()
        post = await feed.service.create_post(UserId(author), "a fresh post", [])
        while True:
            page = await feed.reader.read(reader, None, PAGE, "chronological")
            waited = time.perf_counter() - began
            if any(p.id == post.id for p in page.posts):
                break
            if waited > FRESH_TIMEOUT_S:
                late += 1
                break
            await asyncio.sleep(FRESH_POLL_S)
        delays.append(waited)
    return {
        "fresh_p50_ms": ms(delays, 50),
        "fresh_p99_ms": ms(delays, 99),
        "fresh_samples": len(delays),
        "fresh_timeouts": late,
    }


async def service_reads(feed: Feed, reader: UserId, reads: int) -> dict[str, Any]:
    for _ in range(20):  # caches, prepared statements, pool connections
        await feed.reader.read(reader, None, PAGE, "chronological")
    samples: list[float] = []
    for _ in range(reads):
        began = time.perf_counter()
        page = await feed.reader.read(reader, None, PAGE, "chronological")
        samples.append(time.perf_counter() - began)
        if len(page.posts) != PAGE:
            raise RuntimeError(f"the reader's first page has {len(page.posts)} posts")
    return {"read_p50_ms": ms(samples, 50), "read_p99_ms": ms(samples, 99), "reads": reads}


async def run_strategy(
    backend: Backend,
    strategy: str,
    w: Workload,
    reader: UserId,
    workdir: Path,
    not_before: float,
) -> tuple[dict[str, Any], float]:
    """One row; and the monotonic time before which the next strategy's runners must not
    start (a stopped `fanout serve` still counts as a group member until its lease expires)."""
    tag = f"{backend.name}/{strategy}"
    policy = FanoutPolicy(strategy, w.tiers.low_priority_from, w.tiers.pull_from)
    await backend.loader.reset(int(w.background.ids[-1]) + 1, w.pull_authors(strategy))
    feed = backend.feed(policy)
    await asyncio.sleep(max(0.0, not_before - time.monotonic()))
    console.log(f"{tag}: fan-out of {len(w.authors):,} posts")
    row: dict[str, Any] = {
        "backend": backend.name,
        "strategy": strategy,
        "expected_writes_per_post": w.expected_writes(strategy),
    }
    measured = await fan_out(backend, feed, w)
    runners = measured.pop("runners")
    row.update(measured)
    storage = await backend.loader.storage()
    row.update(
        timelines=storage.timelines,
        timeline_entries=storage.entries,
        timeline_bytes=storage.bytes,
        bytes_per_entry=storage.bytes / storage.entries if storage.entries else None,
    )
    await feed.reader.read(reader, None, PAGE, "chronological")  # asks for the rebuild
    await feed.reader.process_rebuilds()
    if not await feed.reader.timeline_ready(reader):
        raise RuntimeError("the reader's timeline was not rebuilt")
    console.log(f"{tag}: freshness over {len(w.fresh_authors)} posts")
    row.update(await freshness(feed, reader, [int(a) for a in w.fresh_authors]))
    await wait_for(lambda: _drained(backend), 120, "the fan-out of the freshness posts")
    for runner in runners:
        await runner.stop()
    console.log(f"{tag}: {w.reads} service reads")
    row.update(await service_reads(feed, reader, w.reads))
    if w.http:
        console.log(f"{tag}: {w.reads} reads over HTTP")
        env = {
            **backend.serve_env,
            "FANOUT_FEED_STRATEGY": strategy,
            "FANOUT_FEED_LOW_PRIORITY_FROM": str(w.tiers.low_priority_from),
            "FANOUT_FEED_PULL_FROM": str(w.tiers.pull_from),
        }
        with fanout_serve(env, workdir / f"serve-{tag.replace('/', '-')}.log") as url:
            samples = await http_reads(url, *READER, w.reads)
        row.update(http_p50_ms=ms(samples, 50), http_p99_ms=ms(samples, 99))
        if backend.serve_consumes:
            not_before = time.monotonic() + LEASE_MS / 1000 + 0.5
    return row, not_before


async def _drained(backend: Backend) -> bool:
    lags = [await backend.log.lag(topic, GROUP) for topic in FEED_TOPICS]
    return not any(lags)


async def run_backend(name: str, w: Workload, strategies: Sequence[str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="fanout-bench-feed-") as tmp:
        workdir = Path(tmp)
        async with open_backend(name, workdir) as backend:
            began = time.perf_counter()
            reader = await load(backend, w)
            console.log(f"{name}: loaded in {time.perf_counter() - began:.1f} s")
            rows: list[dict[str, Any]] = []
            not_before = 0.0
            for strategy in strategies:
                row, not_before = await run_strategy(
                    backend, strategy, w, reader, workdir, not_before
                )
                rows.append(row)
            if backend.redis_url is not None:
                console.log(f"{name}: redis-benchmark -P 100 ZADD on random keys, median of 5 runs")
                zadd = await asyncio.to_thread(
                    redis_benchmark,
                    backend.redis_url,
                    ["ZADD", "bench:z:__rand_int__", "__rand_int__", "member"],
                    requests=ZADD_REQUESTS,
                    random_keys=ZADD_REQUESTS,
                )
                for row in rows:
                    row["redis_benchmark_zadd_per_s"] = zadd
                    rate = row["fanout_writes_per_s"]
                    row["zadd_ratio"] = rate / zadd if rate else None
            return rows


def main(
    *,
    users: int,
    posts: int,
    measured_posts: int,
    freshness_samples: int,
    reads: int,
    backends: Sequence[str],
    strategies: Sequence[str],
    seed: int,
    http: bool,
    out: Path,
) -> list[dict[str, Any]]:
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies: {sorted(unknown)}")
    w = workload(
        users=users,
        posts=posts,
        measured=measured_posts,
        fresh=freshness_samples,
        reads=reads,
        seed=seed,
        http=http,
    )
    scale = {
        **graph.summary(w.counts, w.tiers, w.followees),
        "posts": posts,
        "measured_posts": measured_posts,
        "freshness_samples": freshness_samples,
        "reads": reads,
        "seed": seed,
        "reader": {
            "following": len(w.followees),
            "pull_tier": int(np.sum(w.followers()[w.followees - 1] >= w.tiers.pull_from)),
        },
    }
    console.log(
        f"graph: {scale['users']:,} users, {scale['edges']:,} follows, followers median "
        f"{scale['followers_median']:.0f} / max {scale['followers_max']:,}; tiers: low "
        f"lane from {w.tiers.low_priority_from:,}, pull from {w.tiers.pull_from:,}"
    )
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()  # other work on the machine shows in the latencies
    tune_gc()  # the garbage collector as `fanout worker` and `fanout serve` set it
    for name in backends:
        rows += uvloop.run(run_backend(name, w, strategies))  # as `fanout worker` runs
    title = (
        f"feed: {users:,} users, {scale['edges']:,} follows, {posts:,} posts; "
        f"{measured_posts:,} measured posts, reader follows 200 (20 pull-tier in hybrid)"
    )
    extra = {"strategies": list(strategies), "backends": list(backends),
             "load_average_before": load_before, "load_average_after": os.getloadavg()}  # fmt: skip
    report(out, title, scale, rows, extra)
    return rows
