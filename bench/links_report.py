"""What ``fanout bench links`` prints and writes: a rich table, a markdown table (for
``docs/benchmarks.md``), the issue's targets checked per row, JSON and a PNG plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import fmt, markdown_table, print_table, write_json, write_plot

__all__ = ["COLUMNS", "check_targets", "markdown", "report"]

RATIO_TARGET = 0.80  # of the raw-ASGI 302 on the same server
P99_TARGET_MS = 50.0

# (row key, markdown header)
COLUMNS = (
    ("backend", "backend"),
    ("server", "server"),
    ("redirects_per_s", "redirects/s"),
    ("ceiling_per_s", "raw ASGI 302/s"),
    ("ratio", "ratio"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("ceiling_p99_ms", "raw p99 ms"),
    ("hit_rate", "LRU hit rate"),
    ("cpu_us_per_redirect", "server CPU µs/redirect"),
    ("ceiling_cpu_us_per_redirect", "raw CPU µs/302"),
    ("machine_us_per_redirect", "machine CPU µs/redirect"),
    ("ceiling_machine_us_per_redirect", "machine CPU µs/302"),
    ("served", "served"),
    ("aggregated", "aggregated"),
    ("lost", "lost"),
    ("non_3xx", "non-3xx"),
    ("settle_s", "settle s"),
)


def _cell(key: str, value: Any) -> str:
    if value is not None and key in ("ratio", "hit_rate"):
        return f"{value:.2f}" if key == "ratio" else f"{value:.1%}"
    return fmt(value)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    return markdown_table(rows, COLUMNS, _cell)


def check_targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for row in rows:
        name = f"{row['backend']}/{row['server']}"
        checks = (
            (f"redirects/s >= {RATIO_TARGET:.0%} of raw ASGI", row["ratio"],
             row["ratio"] >= RATIO_TARGET),
            (f"p99 < {P99_TARGET_MS:g} ms", row["p99_ms"], row["p99_ms"] < P99_TARGET_MS),
            ("no click lost (aggregated == served, every answer a 3xx)", row["lost"],
             row["lost"] == 0 and row["non_3xx"] == 0 and row["socket_errors"] == 0
             and row["hottest_clicks_api"] == row["hottest_clicks_store"]),
        )  # fmt: skip
        for target, value, met in checks:
            verdicts.append({"target": target, "row": name, "value": value, "met": met})
    return verdicts


def report(rows: Sequence[dict[str, Any]], options: dict[str, Any], out: Path) -> None:
    title = (
        f"links: {options['links']:,} links, Zipf(s={options['zipf_s']}) over "
        f"{options['codes']:,} codes, wrk -t{options['threads']} -c{options['connections']} "
        f"-d{options['duration_s']}s"
    )
    print_table(title, rows, [key for key, _ in COLUMNS])
    verdicts = check_targets(rows)
    shown = [{**v, "met": "yes" if v["met"] else "NO"} for v in verdicts]
    print_table("targets", shown, ["row", "target", "value", "met"])
    for row in rows:
        for line in row.get("profile", []):
            print(f"  {row['backend']}/{row['server']} py-spy self {line['self']:6.1%} "
                  f"incl {line['inclusive']:6.1%}  {line['frame']}")  # fmt: skip
        if row.get("other_benchmarks"):
            print(f"  warning: {row['backend']}/{row['server']} ran beside another benchmark")
    print()
    print(markdown(rows))
    write_json(out, "links", {"options": options, "rows": list(rows), "targets": verdicts})
    write_plot(
        out, "links", "redirects/s: fanout vs raw ASGI 302 on the same server",
        [f"{r['backend']}/{r['server']}" for r in rows],
        {"fanout": [r["redirects_per_s"] for r in rows],
         "raw ASGI 302": [r["ceiling_per_s"] for r in rows]},
        "redirects/s",
    )  # fmt: skip
