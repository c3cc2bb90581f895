"""Load for ``fanout bench links``: wrk over a Zipf-distributed set of codes, and what the
server says about it in ``/metrics``.

The Lua script reads a table of ``cumulative-probability path`` lines (the codes ranked by a
seeded shuffle, rank ``k`` weighted ``1 / k**s``) and picks each request's path by binary
search on a uniform draw, with a browser ``User-Agent`` so every click counts as human. wrk is
closed-loop: each connection sends its next request when the previous answer arrives, so under
a stall latencies are understated (coordinated omission); the throughput figure is unaffected.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fanout.core.metrics import REDIRECT_LOOKUPS

__all__ = ["Lookups", "WrkResult", "lookups", "require_wrk", "run_wrk", "write_zipf"]

# A browser: classify() says desktop, not a bot, so every click counts as human.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
WRK_TIMEOUT_S = 5  # a request slower than this counts as a wrk timeout error
_MARK = "WRK-RESULT "

LUA = r"""
-- fanout bench links: Zipf-distributed redirects (written by bench/links_wrk.py)
local paths, cum, n = {}, {}, 0
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  for line in io.lines(args[1]) do
    local c, p = line:match("^(%S+) (%S+)$")
    n = n + 1
    cum[n] = tonumber(c)
    paths[n] = p
  end
  math.randomseed(tonumber(args[2]) * 1000 + id)
  wrk.headers["User-Agent"] = args[3]
end

function request()
  local r = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cum[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", paths[lo])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}\n',
    "MARK", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
""".replace("MARK", _MARK)


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # completed responses
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non_3xx: int  # wrk's status errors: answers >= 400 (nothing here answers 1xx or 2xx)
    socket_errors: int  # connect, read, write, timeout

    @property
    def per_s(self) -> float:
        return self.requests / self.duration_s


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not on PATH: `make bench-deps` installs it")
    return found


def write_zipf(workdir: Path, codes: Sequence[str], s: float, seed: int) -> tuple[Path, Path]:
    """The Lua script and its table: ``codes`` in a seeded random rank order, Zipf(``s``)
    weights. Returns (script, table); the hottest code is the table's first line."""
    ranked = list(codes)
    random.Random(seed).shuffle(ranked)
    weights = [1.0 / (k**s) for k in range(1, len(ranked) + 1)]
    total = sum(weights)
    lines, acc = [], 0.0
    for code, weight in zip(ranked, weights, strict=True):
        acc += weight / total
        lines.append(f"{acc:.12f} /{code}")
    lines[-1] = f"1.0 /{ranked[-1]}"  # no draw may fall past the end to rounding
    table = workdir / "zipf.txt"
    table.write_text("\n".join(lines) + "\n")
    script = workdir / "zipf.lua"
    script.write_text(LUA)
    return script, table


async def run_wrk(
    url: str, script: Path, table: Path, *, duration_s: int, connections: int, threads: int,
    seed: int,
) -> WrkResult:  # fmt: skip
    cmd = [
        require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency",
        f"--timeout={WRK_TIMEOUT_S}s", "-s", str(script), url, "--", str(table), str(seed),
        USER_AGENT,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=duration_s + 60)
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith(_MARK):
            raw = json.loads(line[len(_MARK) :])
            return WrkResult(
                requests=raw["requests"], duration_s=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1e3, p90_ms=raw["p90_us"] / 1e3,
                p99_ms=raw["p99_us"] / 1e3, max_ms=raw["max_us"] / 1e3,
                mean_ms=raw["mean_us"] / 1e3, non_3xx=raw["status"],
                socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
            )  # fmt: skip
    raise RuntimeError(f"no result from wrk (exit {proc.returncode}): {text[-800:]}"
                       f"{err.decode(errors='replace')[-800:]}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Lookups:
    all: int
    lru_hit: int


async def lookups(url: str) -> Lookups:
    """Redirect resolutions and LRU hits so far, from the server's ``/metrics``. The figures
    are per process: this is the whole server with one granian worker (the default)."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url + "/metrics")
        response.raise_for_status()
    found = {"all": 0.0, "lru_hit": 0.0}
    for family in text_string_to_metric_families(response.text):
        if family.name != REDIRECT_LOOKUPS:
            continue
        for sample in family.samples:
            cache = sample.labels.get("cache")
            if cache in found:
                found[cache] += sample.value
    return Lookups(all=int(found["all"]), lru_hit=int(found["lru_hit"]))
