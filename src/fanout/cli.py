"""The ``fanout`` command: serve | worker | migrate | config | bench.

Every setting of :class:`fanout.core.config.Settings` is a ``FANOUT_*`` variable and, on the
commands that take settings, a ``--flag`` of the same name; a flag wins over the variable. This is
the one place that reads the environment (``Settings.from_env``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fanout.core.config import Settings, field_type, parse_field
from fanout.core.errors import FanoutError
from fanout.core.gc_pauses import tune_gc

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
WORKER_OPS_PORT = 8001  # a worker process's /healthz, /readyz, /metrics


def settings_options(func: F) -> F:
    """Add one ``--flag`` per setting; values given are parsed like their variable."""
    for f in reversed(dataclasses.fields(Settings)):
        kind = field_type(f.name)
        click_type: Any = {int: int, float: float, Path: click.Path(path_type=Path)}.get(kind, str)
        flag = "--" + f.name.replace("_", "-")
        func = click.option(
            flag, f.name, type=click_type, default=None,
            help=f"FANOUT_{f.name.upper()}", show_envvar=False,
        )(func)  # fmt: skip
    return func


def load_settings(flags: dict[str, Any]) -> Settings:
    overrides = {
        name: parse_field(name, value) if isinstance(value, str) else value
        for name, value in flags.items()
        if value is not None
    }
    try:
        return Settings.from_env(**overrides)
    except FanoutError as exc:
        raise click.UsageError(exc.message) from exc


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group()
@click.version_option(package_name="fanout")
def main() -> None:
    """fanout: news feed, chat, notifications and short links on one fan-out core."""


@main.command()
@settings_options
def serve(**flags: Any) -> None:
    """Serve the API and WebSocket gateway (and, embedded, every consumer) in this process.

    In scaled mode consumers run in ``fanout worker`` processes instead."""
    settings = load_settings(flags)
    _logging(settings.log_level)
    if settings.server == "granian":
        _serve_granian(settings)
    else:
        # Scaled: consumers run in `fanout worker` processes (DESIGN.md §2); embedded: here.
        _serve_uvicorn(settings, operations=None, roles=() if settings.scaled else None)


def _serve_uvicorn(settings: Settings, operations: Any, roles: Any) -> None:
    import uvicorn

    from fanout.api.app import create_app, uvicorn_options

    options: dict[str, Any] = {}
    if operations is not None:
        options["operations"] = operations
    if roles is not None:
        options["roles"] = roles
    tune_gc()
    app = create_app(settings, **options)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        **uvicorn_options(app),
    )


def _serve_granian(settings: Settings) -> None:
    from granian.constants import Interfaces
    from granian.server import Server

    # granian imports the app by name in its own worker: hand it the settings as variables.
    os.environ.update(settings.to_env())
    Server(
        "fanout.api.asgi:factory",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        factory=True,
        log_level=settings.log_level,  # type: ignore[arg-type]  # granian's enum takes the name
    ).serve()


@main.command()
@click.option("--roles", default=",".join(("feed", "chat", "notify", "links")),
              help="comma-separated consumer roles: feed, chat, notify, links")  # fmt: skip
@settings_options
def worker(roles: str, **flags: Any) -> None:
    """Run consumers only (scaled mode); ops routes on --port / FANOUT_PORT, else 8001."""
    from fanout.api import ops

    if flags.get("port") is None and not os.environ.get("FANOUT_PORT"):
        flags["port"] = WORKER_OPS_PORT  # beside a `fanout serve` on 8000 by default
    settings = load_settings(flags)
    if not settings.scaled:
        raise click.UsageError(
            "fanout worker needs scaled mode (FANOUT_DATABASE_URL and FANOUT_REDIS_URL); "
            "embedded `fanout serve` already runs every consumer"
        )
    chosen = [r.strip() for r in roles.split(",") if r.strip()]
    _logging(settings.log_level)
    _serve_uvicorn(settings, operations=ops.OPERATIONS, roles=chosen)


@main.command()
@settings_options
def migrate(**flags: Any) -> None:
    """Apply pending schema migrations and exit."""
    from fanout.bootstrap import build

    settings = load_settings(flags)
    _logging(settings.log_level)

    async def run() -> None:
        platform = await build(settings, consume=False)
        await platform.close()

    asyncio.run(run())
    target = (settings.database_url and "PostgreSQL") or str(settings.sqlite_path)
    click.echo(f"schema up to date ({target})")


@main.command()
@settings_options
def config(**flags: Any) -> None:
    """Print the effective settings, secrets masked."""
    settings = load_settings(flags)
    shown = settings.display()
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        click.echo(f"{name.ljust(width)}  {value}")
    click.echo(f"{'mode'.ljust(width)}  {'scaled' if settings.scaled else 'embedded'}")


@main.group()
def bench() -> None:
    """Benchmarks: print a table, write JSON and a PNG plot under bench-results/."""


@bench.command("log")
@click.option("--records", default=50_000, show_default=True, help="records per backend")
@click.option("--payload-bytes", default=200, show_default=True)
@click.option("--backends", default="sqlite,redis", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results"))
def bench_log(records: int, payload_bytes: int, backends: str, out: Path) -> None:
    """Publish + consume records/s through the log on each backend."""
    # bench/ sits beside src/ (installed with the package) and is not type-checked with it.
    workload = importlib.import_module("bench.log")
    workload.main(records=records, payload_bytes=payload_bytes,
                  backends=[b.strip() for b in backends.split(",")], out=out)  # fmt: skip


@bench.command("feed")
@click.option(
    "--users",
    default=20_000,
    show_default=True,
    help="users in the synthetic graph (followers median 200, stars followed by all)",
)
@click.option(
    "--posts",
    default=100_000,
    show_default=True,
    help="background posts bulk-loaded (the read targets are stated at 1000000)",
)
@click.option(
    "--measured-posts",
    default=8_000,  # a drain of several seconds: 2 000 posts were mostly its first pass
    show_default=True,
    help="posts fanned out through the real worker, per strategy and backend",
)
@click.option("--freshness-samples", default=200, show_default=True)
@click.option(
    "--reads",
    default=1_000,  # a p99 of 300 reads is their 3rd slowest, and swung by 1 ms between runs
    show_default=True,
    help="timed reads, service and HTTP",
)
@click.option("--backends", default="scaled,sqlite", show_default=True)
@click.option("--strategies", default="push,pull,hybrid", show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option(
    "--http/--no-http",
    default=True,
    show_default=True,
    help="also read over HTTP from a real `fanout serve`",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results"))
def bench_feed(
    users: int,
    posts: int,
    measured_posts: int,
    freshness_samples: int,
    reads: int,
    backends: str,
    strategies: str,
    seed: int,
    http: bool,
    out: Path,
) -> None:
    """Push vs pull vs hybrid fan-out on a synthetic social graph."""
    workload = importlib.import_module("bench.feed")
    workload.main(users=users, posts=posts, measured_posts=measured_posts,
                  freshness_samples=freshness_samples, reads=reads,
                  backends=[b.strip() for b in backends.split(",") if b.strip()],
                  strategies=[s.strip() for s in strategies.split(",") if s.strip()],
                  seed=seed, http=http, out=out)  # fmt: skip


@bench.command("links")
@click.option("--links", default=1_000_000, show_default=True, help="links loaded per backend")
@click.option("--codes", default=100_000, show_default=True, help="distinct codes redirected")
@click.option("--zipf-s", default=1.1, show_default=True, help="Zipf exponent of code popularity")
@click.option("--duration", default=15, show_default=True,
              help="seconds measured per target (fanout, and the ceiling)")  # fmt: skip
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    help="alternating slices of fanout and the ceiling the duration is split into",
)
@click.option("--warmup", default=2, show_default=True, help="seconds of wrk before measuring")
@click.option("--connections", default=64, show_default=True)
@click.option("--threads", default=2, show_default=True, help="wrk threads")
@click.option("--settle-timeout", default=300.0, show_default=True,
              help="seconds to wait for aggregation to catch up")  # fmt: skip
@click.option("--backends", default="embedded,scaled", show_default=True)
@click.option("--servers", default="uvicorn,granian", show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--profile", is_flag=True, help="py-spy on fanout during the measured runs")
@click.option("--keep-logs", is_flag=True, help="copy the servers' logs to OUT/links-logs")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results"))
def bench_links(
    links: int, codes: int, zipf_s: float, duration: int, rounds: int, warmup: int,
    connections: int,
    threads: int, settle_timeout: float, backends: str, servers: str, seed: int, profile: bool,
    keep_logs: bool, out: Path,
) -> None:  # fmt: skip
    """Redirects/s over Zipf codes (wrk) vs a raw-ASGI 302 on uvicorn and granian."""
    workload = importlib.import_module("bench.links")
    workload.main(links=links, codes=codes, zipf_s=zipf_s, duration_s=duration, warmup_s=warmup,
                  connections=connections, threads=threads, settle_timeout_s=settle_timeout,
                  backends=[b.strip() for b in backends.split(",") if b.strip()],
                  servers=[s.strip() for s in servers.split(",") if s.strip()], seed=seed,
                  profile=profile, out=out, keep=keep_logs, rounds=rounds)  # fmt: skip


@bench.command("chat")
@click.option("--clients", default=10_000, show_default=True,
              help="WebSocket clients (users): half in DMs, ~40% in groups of 10, the rest in "
                   "groups of 500")  # fmt: skip
@click.option("--rate", default=2_000.0, show_default=True, help="msg/s of the fixed-rate phase")
@click.option("--duration", default=10.0, show_default=True,
              help="seconds of the fixed-rate phase")  # fmt: skip
@click.option("--sweep/--no-sweep", default=True, show_default=True,
              help="find the highest rate that keeps p99 within 50 ms")  # fmt: skip
@click.option("--step", default=10.0, show_default=True, help="seconds of each sweep step")
@click.option("--blast", default=5.0, show_default=True,
              help="seconds of sending into a 500-member group as fast as senders can")  # fmt: skip
@click.option("--client-procs", default=2, show_default=True,
              help="processes the clients are spread over")  # fmt: skip
@click.option("--backends", default="embedded,scaled", show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--profile", is_flag=True,
              help="py-spy on the servers in the fixed-rate and blast phases")  # fmt: skip
@click.option("--keep-logs", is_flag=True, help="copy the servers' logs to OUT/chat-logs")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results"))
def bench_chat(
    clients: int, rate: float, duration: float, sweep: bool, step: float, blast: float,
    client_procs: int, backends: str, seed: int, profile: bool, keep_logs: bool, out: Path,
) -> None:  # fmt: skip
    """Chat over WebSockets: delivery latency, frames/s, memory per idle connection."""
    workload = importlib.import_module("bench.chat")
    workload.main(clients=clients, rate=rate, duration_s=duration, sweep=sweep, step_s=step,
                  blast_s=blast, client_procs=client_procs,
                  backends=[b.strip() for b in backends.split(",") if b.strip()], seed=seed,
                  out=out, keep=keep_logs, profile=profile)  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
