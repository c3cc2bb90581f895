"""Names of the platform's metrics, so every process and dashboard agrees on them."""

from __future__ import annotations

__all__ = [
    "CHAT_CONNECTIONS",
    "CHAT_DELIVERY_SECONDS",
    "CHAT_FRAMES",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "LOG_LAG",
    "ORPHAN_VISITS",
    "RATE_LIMITED",
    "REDIRECT_LOOKUPS",
]

HTTP_REQUESTS = "fanout_http_requests"  # counter: method, route, status
HTTP_REQUEST_SECONDS = "fanout_http_request_seconds"  # histogram: method, route
LOG_LAG = "fanout_log_lag_records"  # gauge: topic, group — records not yet acknowledged
RATE_LIMITED = "fanout_rate_limited"  # counter: scope (ip, user)
ORPHAN_VISITS = "fanout_links_orphan_visits"  # gauge: requests for codes that never existed
REDIRECT_LOOKUPS = "fanout_links_lookups"  # gauge: redirect resolutions, and LRU hits among them
CHAT_CONNECTIONS = "fanout_chat_connections"  # gauge: open WebSockets in this process
CHAT_FRAMES = "fanout_chat_frames"  # gauge: event frames handed to this process's WebSockets
CHAT_DELIVERY_SECONDS = "fanout_chat_delivery_seconds"  # histogram: event commit → this gateway
