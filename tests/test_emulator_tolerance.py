"""The emulator takes what clients written against the real Easemob send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callback_sink.easemob import api
from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.settings import EmulatorSettings

SETTINGS = EmulatorSettings(sink_url="")
PREFIX = f"/{SETTINGS.org}/{SETTINGS.app}"
ERROR_FIELDS = {"error", "exception", "timestamp", "duration", "error_description"}


@pytest.fixture
async def http() -> AsyncIterator[TestClient[Any, Any]]:
    client = TestClient(TestServer(Emulator(SETTINGS, callback_secret="s").app()))
    await client.start_server()
    yield client
    await client.close()


async def token(http: TestClient[Any, Any], **extra: Any) -> str:
    body = {"grant_type": "client_credentials", "client_id": SETTINGS.client_id,
            "client_secret": SETTINGS.client_secret, **extra}  # fmt: skip
    response = await http.post(f"{PREFIX}/token/", json=body)
    assert response.status == 200, await response.text()
    return str((await response.json())["access_token"])


async def test_every_route_accepts_a_trailing_slash(http: TestClient[Any, Any]) -> None:
    auth = {"Authorization": f"Bearer {await token(http)}"}
    create = {"groupname": "g", "desc": "d", "public": True, "owner": "alice", "maxusers": 50}
    response = await http.post(f"{PREFIX}/chatgroups/", json=create, headers=auth)
    assert response.status == 200, await response.text()
    group = (await response.json())["data"]["groupid"]
    for path in (f"/chatgroups/{group}/users/", f"/chatgroups/{group}/", "/chatgroups/",
                 f"/chatgroups/{group}/admin/", f"/chatgroups/{group}/mute/"):  # fmt: skip
        response = await http.get(PREFIX + path, headers=auth)
        assert response.status == 200, (path, await response.text())
    routed = {(r.method, r.resource.canonical) for r in http.app.router.routes() if r.resource}
    assert all((m, p + "/") in routed for m, p in routed if not p.endswith("/") and m != "HEAD")


async def test_header_names_and_the_bearer_scheme_in_any_case(http: TestClient[Any, Any]) -> None:
    headers = {"authorization": f"bearer {await token(http)}", "ACCEPT": "application/json"}
    response = await http.get(f"{PREFIX}/chatgroups", headers=headers)
    assert response.status == 200


async def test_numbers_and_booleans_written_as_strings(http: TestClient[Any, Any]) -> None:
    auth = {"Authorization": f"Bearer {await token(http, ttl='600')}"}
    create = {"groupname": "g", "desc": "d", "public": "true", "owner": "alice",
              "maxusers": "300", "members_only": "False", "members": ["bob"]}  # fmt: skip
    response = await http.post(f"{PREFIX}/chatgroups", json=create, headers=auth)
    assert response.status == 200, await response.text()
    group = (await response.json())["data"]["groupid"]
    details = await (await http.get(f"{PREFIX}/chatgroups/{group}", headers=auth)).json()
    assert (details["data"][0]["maxusers"], details["data"][0]["public"]) == (300, True)
    mute = {"usernames": ["bob"], "mute_duration": "60000"}
    response = await http.post(f"{PREFIX}/chatgroups/{group}/mute", json=mute, headers=auth)
    assert response.status == 200, await response.text()
    bad = {**create, "maxusers": "lots"}
    response = await http.post(f"{PREFIX}/chatgroups", json=bad, headers=auth)
    assert response.status == 400
    assert (await response.json())["error"] == api.ILLEGAL_ARGUMENT


async def test_refusals_carry_the_error_body_clients_parse(http: TestClient[Any, Any]) -> None:
    auth = {"Authorization": f"Bearer {await token(http)}"}
    for method, path, status, error in (
        ("GET", "/no/such/route/", 404, api.NOT_FOUND),
        ("GET", "/chatgroups/1/", 404, api.NOT_FOUND),
        ("GET", api.STORAGE_INFO + "/", 403, api.FORBIDDEN),  # the option is off
    ):
        response = await http.request(method, PREFIX + path, headers=auth)
        body = await response.json()
        assert (response.status, body["error"]) == (status, error)
        assert set(body) == ERROR_FIELDS
    response = await http.get(f"{PREFIX}/chatgroups/")
    assert response.status == 401
    assert (await response.json())["error"] == api.UNAUTHORIZED
