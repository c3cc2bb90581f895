"""What ``fanout bench feed`` prints and writes: a rich table, a markdown table (for
``docs/benchmarks.md``), the targets of the issue checked, JSON, and the trade-off plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import fmt, markdown_table, print_table, write_json

__all__ = ["COLUMNS", "check_targets", "markdown", "report", "write_trade_off_plot"]

# (row key, markdown header)
COLUMNS = (
    ("backend", "backend"),
    ("strategy", "strategy"),
    ("writes_per_post", "timeline writes/post"),
    ("expected_writes_per_post", "expected writes/post"),
    ("fanout_writes_per_s", "fan-out writes/s"),
    ("zadd_ratio", "÷ redis-benchmark ZADD"),
    ("read_p50_ms", "read p50 ms"),
    ("read_p99_ms", "read p99 ms"),
    ("http_p50_ms", "HTTP read p50 ms"),
    ("http_p99_ms", "HTTP read p99 ms"),
    ("timeline_entries", "timeline entries"),
    ("timeline_bytes", "timeline bytes"),
    ("bytes_per_entry", "bytes/entry"),
    ("fresh_p50_ms", "freshness p50 ms"),
    ("fresh_p99_ms", "freshness p99 ms"),
)
FANOUT_RATIO_TARGET = 0.60  # of C redis-benchmark -P 100 ZADD on random keys
READ_P99_TARGET_MS = 5.0  # in the service
HTTP_P99_TARGET_MS = 15.0  # over HTTP
TARGET_POSTS = 1_000_000  # the read targets are stated at this many posts


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    return markdown_table(rows, COLUMNS)


def check_targets(rows: Sequence[dict[str, Any]], posts: int) -> list[dict[str, Any]]:
    """One verdict per target and row it applies to: fan-out throughput on every strategy that
    fans out, read latency on hybrid (the reader "follows 20 pull-tier accounts" only there).
    The read targets note the posts that ran when that is not 1M."""
    verdicts: list[dict[str, Any]] = []
    at = "" if posts >= TARGET_POSTS else f" (ran at {posts:,} posts; target is at 1M)"

    def verdict(target: str, row: dict[str, Any], value: float, met: bool) -> None:
        name = f"{row['backend']}/{row['strategy']}"
        verdicts.append({"target": target, "row": name, "value": value, "met": met})

    for row in rows:
        ratio = row.get("zadd_ratio")
        if ratio is not None:
            verdict(f"fan-out >= {FANOUT_RATIO_TARGET:.0%} of redis-benchmark ZADD", row, ratio,
                    ratio >= FANOUT_RATIO_TARGET)  # fmt: skip
        if row["strategy"] != "hybrid":
            continue
        p99 = row["read_p99_ms"]
        verdict(f"service read p99 <= {READ_P99_TARGET_MS:g} ms{at}", row, p99,
                p99 <= READ_P99_TARGET_MS)  # fmt: skip
        if row.get("http_p99_ms") is not None:
            p99 = row["http_p99_ms"]
            verdict(f"HTTP read p99 <= {HTTP_P99_TARGET_MS:g} ms{at}", row, p99,
                    p99 <= HTTP_P99_TARGET_MS)  # fmt: skip
    return verdicts


def write_trade_off_plot(out: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Timeline writes per post against read p99 and freshness p99, one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    path = out / "feed.png"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = {"scaled": "o", "sqlite": "s"}
    colors = {"push": "tab:red", "hybrid": "tab:green", "pull": "tab:blue"}
    for ax, key, label in (
        (axes[0], "read_p99_ms", "read p99 (ms, service)"),
        (axes[1], "fresh_p99_ms", "freshness p99 (ms)"),
    ):
        for row in rows:
            x, y = row["writes_per_post"], row[key]
            ax.scatter(
                x,
                y,
                marker=markers.get(row["backend"], "x"),
                color=colors.get(row["strategy"], "black"),
                s=60,
            )
            ax.annotate(
                f"{row['backend']}/{row['strategy']}",
                (x, y),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("timeline writes per post (write amplification)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle("feed fan-out: write amplification vs read latency and freshness")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(
    out: Path, title: str, scale: dict[str, Any], rows: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """Print the tables and the target verdicts, write ``feed.json`` and ``feed.png``."""
    print_table(title, rows, [key for key, _ in COLUMNS])
    print(f"\n{title}\n\n{markdown(rows)}\n")
    verdicts = check_targets(rows, scale["posts"])
    for verdict in verdicts:
        mark = "met" if verdict["met"] else "MISSED"
        print(f"{mark:>6}  {verdict['target']}: {verdict['row']} = {fmt(verdict['value'])}")
    if "load_average_before" in extra:
        before, after = extra["load_average_before"][0], extra["load_average_after"][0]
        print(f"load average (1 min) before {before:.2f}, after {after:.2f}")
    write_json(out, "feed", {"scale": scale, **extra, "rows": rows, "targets": verdicts})
    write_trade_off_plot(out, rows)
    print(f"\nwrote {out / 'feed.json'} and {out / 'feed.png'}")
