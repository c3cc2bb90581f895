"""Countries of clicks: a MaxMind database when configured, else a trusted proxy's header."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.api.conftest import AppFactory, register


@pytest.fixture
def geoip_db(tmp_path: Path) -> str:
    writer = MMDBWriter(ip_version=6, database_type="GeoIP2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "FR"}})
    writer.insert_network(IPSet(["2001:db8::/32"]), {"country": {"iso_code": "JP"}})
    path = str(tmp_path / "countries.mmdb")
    writer.to_db_file(path)
    return path


async def countries_after(
    client: httpx.AsyncClient, visits: list[dict[str, str]], username: str = "geo"
) -> dict[str, int]:
    _, token = await register(client, username)
    auth = {"Authorization": f"Bearer {token}"}
    code = (await client.post("/v1/links", headers=auth,
                              json={"url": "https://example.com"})).json()["code"]  # fmt: skip
    for headers in visits:
        headers = {"user-agent": "Mozilla/5.0 (X11; Linux) Firefox/120", **headers}
        assert (await client.get("/" + code, headers=headers)).status_code == 302
    for _ in range(200):
        stats = (await client.get(f"/v1/links/{code}/stats", headers=auth)).json()
        if stats["total"] == len(visits):
            return {c["value"]: c["clicks"] for c in stats["countries"]}
        await asyncio.sleep(0.025)
    raise AssertionError("clicks never aggregated")


async def test_maxmind_resolves_the_client_address(make_client: AppFactory, geoip_db: str) -> None:
    client = await make_client(links_geoip_db=geoip_db)  # the test client is 203.0.113.7
    assert await countries_after(client, [{}, {"cf-ipcountry": "DE"}]) == {"FR": 2}


async def test_forwarded_addresses_count_only_behind_a_trusted_proxy(
    make_client: AppFactory, geoip_db: str
) -> None:
    client = await make_client(links_geoip_db=geoip_db, trusted_proxies=("203.0.113.0/24",))
    visits = [{"x-forwarded-for": "2001:db8::5"}, {"x-forwarded-for": "198.51.100.9"}]
    assert await countries_after(client, visits) == {"JP": 1}


async def test_the_proxy_header_is_believed_only_from_a_trusted_peer(
    make_client: AppFactory,
) -> None:
    trusted = await make_client(trusted_proxies=("203.0.113.0/24",))
    assert await countries_after(trusted, [{"cf-ipcountry": "de"}, {}]) == {"DE": 1}
    untrusted = await make_client()
    assert await countries_after(untrusted, [{"cf-ipcountry": "de"}], "geo2") == {}
