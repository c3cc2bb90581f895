"""Reporting for benchmarks: a rich table on the terminal, JSON and a PNG bar chart on disk."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "fmt",
    "machine",
    "markdown_table",
    "print_table",
    "redis_benchmark",
    "write_json",
    "write_plot",
]


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*(fmt(row.get(c)) for c in columns))
    Console(width=200).print(table)


def fmt(value: Any) -> str:
    """A table cell: thousands separators, 3 significant digits for small floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    cell: Callable[[str, Any], str] = lambda key, value: fmt(value),
) -> str:
    """``columns`` are (row key, header); the first two columns are labels, the rest numbers."""
    lines = [
        "| " + " | ".join(header for _, header in columns) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(cell(k, row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(out: Path, name: str, payload: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def write_plot(
    out: Path, name: str, title: str, labels: Sequence[str], series: dict[str, Sequence[float]],
    ylabel: str,
) -> Path:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [x + i * width for x in range(len(labels))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))], labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def redis_benchmark(
    url: str,
    args: Sequence[str],
    requests: int,
    pipeline: int = 100,
    random_keys: int = 0,
    runs: int = 5,
) -> float:
    """Requests/s of C ``redis-benchmark -P pipeline`` running ``args`` against ``url``: the
    median of ``runs`` runs (one run swings by ±20 % on two busy cores); with ``random_keys``,
    ``__rand_int__`` in ``args`` is replaced by one of that many values."""
    return statistics.median(
        _redis_benchmark_once(url, args, requests, pipeline, random_keys) for _ in range(runs)
    )


def _redis_benchmark_once(
    url: str, args: Sequence[str], requests: int, pipeline: int, random_keys: int
) -> float:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    cmd = [
        "redis-benchmark", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379),
        "-n", str(requests), "-P", str(pipeline), "-c", "50", "--csv",
        *(("-r", str(random_keys)) if random_keys else ()), *args,
    ]  # fmt: skip
    output = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    for line in output.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] != "test":
            return float(cells[1])
    raise RuntimeError(f"no figure in redis-benchmark output: {output!r}")
