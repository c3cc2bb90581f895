"""The ``fanout`` command as a user runs it: real processes, kill -9, restarts, two nodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fanout.core.ids import MAX_WORKER_ID

pytestmark = pytest.mark.slow


def signup(client: httpx.Client, username: str) -> tuple[str, str]:
    created = client.post("/v1/users", json={"username": username, "password": "pass word 1"})
    assert created.status_code == 201, created.text
    session = client.post("/v1/sessions", json={"username": username, "password": "pass word 1"})
    assert session.status_code == 201, session.text
    return created.json()["id"], session.json()["token"]


def test_embedded_survives_kill_9_with_accounts_and_tokens_intact(
    node_factory: Any, tmp_path: Path
) -> None:
    data = str(tmp_path / "data")
    node = node_factory("serve", "--data-dir", data).start()
    with node.client() as client:
        ids = [signup(client, f"user{i}")[0] for i in range(20)]
        _, token = signup(client, "keeper")
    node.kill()
    again = node_factory("serve", "--data-dir", data, port=node.port).start()
    with again.client() as client:
        me = client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["username"] == "keeper"  # same secret key
        for i, user_id in enumerate(ids):
            assert client.get(f"/v1/users/{user_id}", headers={
                "Authorization": f"Bearer {token}"}).json()["username"] == f"user{i}"  # fmt: skip
        assert (
            client.post("/v1/users", json={"username": "user3", "password": "x" * 8}).status_code
            == 409
        )
    assert again.stop()  # SIGTERM drains and exits cleanly


def test_two_scaled_nodes_share_accounts_tokens_and_never_share_a_worker_id(
    node_factory: Any, clean_redis_url: str, fresh_database_url: str
) -> None:
    env = {"FANOUT_REDIS_URL": clean_redis_url, "FANOUT_DATABASE_URL": fresh_database_url}
    a = node_factory("serve", env=env).start()
    b = node_factory("serve", env=env).start()
    with a.client() as on_a, b.client() as on_b:
        user_a, _ = signup(on_a, "alice")
        user_b, token_b = signup(on_b, "bob")
        # B's token works on A: the generated secret is shared through PostgreSQL.
        me = on_a.get("/v1/users/me", headers={"Authorization": f"Bearer {token_b}"})
        assert me.status_code == 200 and me.json()["id"] == user_b
        assert (
            on_b.post(
                "/v1/sessions", json={"username": "alice", "password": "pass word 1"}
            ).status_code
            == 201
        )
        assert (
            on_b.post("/v1/users", json={"username": "alice", "password": "x" * 8}).status_code
            == 409
        )
    worker_bits = {(int(u) >> 12) & MAX_WORKER_ID for u in (user_a, user_b)}
    assert len(worker_bits) == 2
    assert a.stop() and b.stop()


def test_scaled_worker_process_serves_ops_routes(
    node_factory: Any, clean_redis_url: str, fresh_database_url: str
) -> None:
    env = {"FANOUT_REDIS_URL": clean_redis_url, "FANOUT_DATABASE_URL": fresh_database_url}
    worker = node_factory("worker", "--roles", "feed,links", env=env).start()
    with worker.client() as client:
        assert client.get("/healthz").status_code == 200
        assert "fanout_http_requests" in client.get("/metrics").text
        assert client.post("/v1/users", json={}).status_code == 404  # no API on a worker
    assert worker.stop()


def test_granian_serves_the_same_app(node_factory: Any, tmp_path: Path) -> None:
    node = node_factory("serve", "--server", "granian", "--data-dir", str(tmp_path / "g")).start()
    with node.client() as client:
        signup(client, "granian_user")
        assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert node.stop()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    return subprocess.run([sys.executable, "-m", "fanout.cli", *args], capture_output=True,
                          text=True, env={**environ, **(env or {})}, timeout=60)  # fmt: skip


def test_config_masks_secrets_and_worker_refuses_embedded_mode(tmp_path: Path) -> None:
    shown = run_cli("config", "--secret-key", "s" * 40,
                    env={"FANOUT_DATABASE_URL": "postgresql://u:hunter2@h/db",
                         "FANOUT_REDIS_URL": "redis://h"})  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout and "s" * 40 not in shown.stdout
    assert "FANOUT_FEED_PULL_FROM" in shown.stdout and "scaled" in shown.stdout
    refused = run_cli("worker", "--data-dir", str(tmp_path))
    assert refused.returncode != 0 and "scaled mode" in refused.stderr
    bad = run_cli("config", env={"FANOUT_PORT": "http"})
    assert bad.returncode != 0 and "FANOUT_PORT" in bad.stderr


def test_migrate_applies_the_schema_on_both_backends(
    tmp_path: Path, clean_redis_url: str, fresh_database_url: str
) -> None:
    embedded = run_cli("migrate", "--data-dir", str(tmp_path / "m"))
    assert embedded.returncode == 0, embedded.stderr
    assert (tmp_path / "m" / "fanout.sqlite3").exists()
    scaled = run_cli("migrate", env={"FANOUT_REDIS_URL": clean_redis_url,
                                     "FANOUT_DATABASE_URL": fresh_database_url})  # fmt: skip
    assert scaled.returncode == 0, scaled.stderr
