"""What ``fanout bench chat`` prints and writes: rich tables, markdown tables (for
``docs/benchmarks.md``), the issue's targets checked per backend, JSON and a PNG plot."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.report import fmt, markdown_table, print_table, write_json

__all__ = [
    "COLUMNS",
    "SWEEP_COLUMNS",
    "check_targets",
    "flatten",
    "held",
    "log_problems",
    "markdown",
    "report",
]

P99_TARGET_MS = 50.0
TARGET_CLIENTS = 10_000
TARGET_RATE = 2_000  # msg/s
RSS_TARGET_KB = 16.0  # per idle connection
BLAST_TARGET = 200_000  # frames/s delivered by one process to a 500-member group
KEEP_UP = 0.95  # a sender that achieves less of the asked rate has fallen behind
LOSS_ALLOWED = 0.001  # of the expected frames, before a sweep step counts as failed

# (row key, markdown header)
COLUMNS = (
    ("backend", "backend"),
    ("serves", "serve procs"),
    ("open", "clients"),
    ("rss_kb_per_conn", "KB/idle conn"),
    ("rate", "msg/s asked"),
    ("achieved_per_s", "msg/s sent"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("frames_per_s", "frames/s (clients)"),
    ("server_frames_per_s", "frames/s (servers)"),
    ("lost", "lost"),
    ("max_rate_p99_ok", "max msg/s p99≤50ms"),
    ("blast_server_frames_per_s", "500-group frames/s (servers)"),
    ("blast_per_process", "per serve proc"),
    ("blast_frames_per_s", "500-group frames/s (clients)"),
    ("blast_p99_ms", "500-group p99 ms"),
    ("closes_4408", "4408 closes"),
    ("server_cores", "server cores"),
    ("client_cores", "client cores"),
    ("machine_cores", "busy cores (machine)"),
)
SWEEP_COLUMNS = (
    ("backend", "backend"),
    ("rate", "msg/s asked"),
    ("achieved_per_s", "msg/s sent"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("server_frames_per_s", "frames/s (servers)"),
    ("lost", "lost"),
    ("server_cores", "server cores"),
    ("client_cores", "client cores"),
    ("machine_cores", "busy cores"),
    ("held", "p99≤50ms"),
)


def held(point: dict[str, Any]) -> bool:
    """A phase held: p99 within target, the senders kept up and (almost) every frame arrived."""
    return bool(
        point["p99_ms"] is not None
        and point["p99_ms"] <= P99_TARGET_MS
        and point["achieved_per_s"] >= KEEP_UP * point["rate"]
        and point["lost"] <= LOSS_ALLOWED * max(point["expected"], 1)
    )


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One line per backend: the fixed-rate phase, the sweep's answer and the blast."""
    fixed, blast = row["fixed"], row["blast"]
    return {
        "backend": row["backend"], "serves": row["serves"], "open": row["open"],
        "rss_kb_per_conn": row["rss_kb_per_conn"],
        **{k: fixed[k] for k in ("rate", "achieved_per_s", "p50_ms", "p95_ms", "p99_ms",
                                 "frames_per_s", "server_frames_per_s", "lost",
                                 "server_cores", "client_cores", "machine_cores")},
        "max_rate_p99_ok": row["max_rate_p99_ok"],
        "blast_server_frames_per_s": blast["server_frames_per_s"],
        "blast_per_process": blast["server_frames_per_s"] / row["serves"],
        "blast_frames_per_s": blast["frames_per_s"], "blast_p99_ms": blast["p99_ms"],
        "closes_4408": row["closes"].get("4408", 0),
    }  # fmt: skip


def _cell(key: str, value: Any) -> str:
    if key == "held":
        return "yes" if value else "NO"
    if isinstance(value, float) and key.endswith("_cores"):
        return f"{value:.2f}"
    return fmt(value)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    main = markdown_table([flatten(r) for r in rows], COLUMNS, _cell)
    points = [{"backend": r["backend"], **p} for r in rows for p in r["sweep"]]
    if not points:
        return main
    return main + "\n\nRate sweep:\n\n" + markdown_table(points, SWEEP_COLUMNS, _cell)


def check_targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for row in rows:
        fixed, blast = row["fixed"], row["blast"]
        at_target = row["open"] >= TARGET_CLIENTS and fixed["rate"] >= TARGET_RATE
        checks = [
            (f"p99 ≤ {P99_TARGET_MS:g} ms at {TARGET_CLIENTS:,} clients and "
             f"{TARGET_RATE:,} msg/s (ran {row['open']:,} clients, {fixed['rate']:,.0f} msg/s)",
             fixed["p99_ms"],
             at_target and fixed["p99_ms"] is not None and fixed["p99_ms"] <= P99_TARGET_MS
             and fixed["achieved_per_s"] >= KEEP_UP * fixed["rate"]),
            (f"≤ {RSS_TARGET_KB:g} KB per idle connection", row["rss_kb_per_conn"],
             row["rss_kb_per_conn"] <= RSS_TARGET_KB),
        ]  # fmt: skip
        if row["serves"] == 1:  # the target is one process delivering to the whole group
            checks.append((
                f"≥ {BLAST_TARGET:,} frames/s delivered by one process to a 500-member group",
                blast["server_frames_per_s"], blast["server_frames_per_s"] >= BLAST_TARGET,
            ))  # fmt: skip
        for target, value, met in checks:
            verdicts.append({"row": row["backend"], "target": target, "value": value, "met": met})
    return verdicts


_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Unavailable)\w*): (.*)$")


def log_problems(logs: dict[Path, int]) -> dict[str, dict[str, int]]:
    """The exceptions the servers logged, counted by their last line (numbers blanked), during
    the measurements (before the offset given per log) and after them (the clients closing)."""
    found: dict[str, Counter[str]] = {"during": Counter(), "after": Counter()}
    for log, offset in logs.items():
        data = log.read_bytes() if log.exists() else b""
        for when, part in (("during", data[:offset]), ("after", data[offset:])):
            for line in part.decode(errors="replace").splitlines():
                if _RAISED.match(line):
                    found[when][re.sub(r"\d+", "N", line)[:200]] += 1
    return {when: dict(c.most_common()) for when, c in found.items()}


def _plot(rows: Sequence[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out / "chat.png"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        points = sorted((p["rate"], p["p99_ms"]) for p in row["sweep"] if p["p99_ms"] is not None)
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=f"{row['backend']} p99")
    ax.axhline(P99_TARGET_MS, color="grey", linestyle="--", label=f"{P99_TARGET_MS:g} ms")
    rates = sorted({p["rate"] for row in rows for p in row["sweep"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates, [f"{r:,.0f}" for r in rates], rotation=45)
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("messages/s (channels drawn uniformly)")
    ax.set_ylabel("p99 send → recipient (ms)")
    ax.set_title(f"chat: p99 delivery latency against rate, {rows[0]['open']:,} clients")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _print_transposed(title: str, rows: Sequence[dict[str, Any]]) -> None:
    """The main table with a line per figure and a column per backend (20 figures are too
    wide the other way round)."""
    table = Table(title=title)
    table.add_column("")
    for row in rows:
        table.add_column(str(row["backend"]), justify="right")
    for key, header in COLUMNS[1:]:
        table.add_row(header, *(_cell(key, row.get(key)) for row in rows))
    Console(width=200).print(table)


def report(rows: Sequence[dict[str, Any]], options: dict[str, Any], out: Path) -> None:
    title = (
        f"chat: {options['clients']:,} clients, {options['rate']:,.0f} msg/s for "
        f"{options['duration_s']:g} s, channels drawn uniformly"
    )
    _print_transposed(title, [flatten(r) for r in rows])
    points = [{"backend": r["backend"], **p} for r in rows for p in r["sweep"]]
    if points:
        shown = [{**p, "held": "yes" if p["held"] else "NO"} for p in points]
        print_table("rate sweep", shown, [key for key, _ in SWEEP_COLUMNS])
    verdicts = check_targets(rows)
    shown = [{**v, "met": "yes" if v["met"] else "NO"} for v in verdicts]
    print_table("targets", shown, ["row", "target", "value", "met"])
    for row in rows:
        if row["failures"]:
            print(f"  {row['backend']}: connections failed: {row['failures']}")
        phases = [("fixed", row["fixed"]), ("blast", row["blast"]),
                  *((f"sweep {p['rate']:,.0f}", p) for p in row["sweep"])]  # fmt: skip
        for name, point in phases:
            if point["lost"] or point["closes"] or point["error_frames"]:
                print(f"  {row['backend']}/{name}: lost {point['lost']} (sends refused with an "
                      f"error: {point['refused']}), closes {point['closes']}, error frames "
                      f"{point['error_frames']}")  # fmt: skip
        if row["closes"] or row["error_frames"]:
            print(f"  {row['backend']}: in all, closes {row['closes']}, error frames "
                  f"{row['error_frames']}")  # fmt: skip
        for phase in ("fixed", "blast"):
            for line in row[phase].get("profile", []):
                print(f"  {row['backend']}/{phase} py-spy self {line['self']:6.1%} "
                      f"incl {line['inclusive']:6.1%}  {line['frame']}")  # fmt: skip
        for when, lines in row["server_log_problems"].items():
            for line, n in list(lines.items())[:8]:
                print(f"  {row['backend']}: server logs, {when} the measurements: {n} x {line}")
    print()
    print(markdown(rows))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out, "chat", {"options": options, "rows": list(rows), "targets": verdicts})
    if points:
        _plot(rows, out)
