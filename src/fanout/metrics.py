"""Prometheus metrics of one process: a registry per platform, so tests and apps never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fanout.core import metrics as names
from fanout.core.log import Log

__all__ = ["Metrics"]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            names.HTTP_REQUESTS,
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            names.HTTP_REQUEST_SECONDS,
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.log_lag = Gauge(
            names.LOG_LAG,
            "Log records not yet acknowledged by a consumer group",
            ["topic", "group"],
            registry=self.registry,
        )
        self.orphan_visits = Gauge(
            names.ORPHAN_VISITS,
            "Aggregated visits of short codes that never existed",
            registry=self.registry,
        )
        self.redirect_lookups = Gauge(
            names.REDIRECT_LOOKUPS,
            "Redirect resolutions in this process, by where they ended",
            ["cache"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            names.RATE_LIMITED,
            "Requests refused by rate limiting",
            ["scope"],
            registry=self.registry,
        )

        self.chat_connections = Gauge(
            names.CHAT_CONNECTIONS, "Open WebSocket connections", registry=self.registry
        )
        self.chat_frames = Gauge(
            names.CHAT_FRAMES,
            "Channel event frames handed to this process's WebSocket connections",
            registry=self.registry,
        )
        self.chat_delivery = Histogram(
            names.CHAT_DELIVERY_SECONDS,
            "Seconds from a chat event's commit to its arrival at the gateway holding a member",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    async def refresh_lag(self, log: Log) -> None:
        for topic, group in await log.groups():
            self.log_lag.labels(topic, group).set(await log.lag(topic, group))

    def render(self) -> bytes:
        return generate_latest(self.registry)
