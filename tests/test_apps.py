"""Several apps, each with its own secrets: a callback passes only with a secret of its app."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from callback_sink.ingress.app import create_app
from callback_sink.sink.apps import (
    appkey_of,
    check_signature,
    claimed_appkey,
    parse_apps,
    read_apps_file,
)
from callback_sink.sink.errors import ConfigError, Rejected
from callback_sink.sink.events import from_document
from callback_sink.sink.examples import load_examples, resign
from callback_sink.sink.settings import Settings
from tests.conftest import Recorder, callback, post, signed

APPS = "acme#prod=secretA|secretA2,acme#staging=secretB"


def call_id(appkey: str) -> str:
    return f"{appkey}_{uuid.uuid4()}"


def test_sink_apps_maps_each_appkey_to_its_secrets() -> None:
    assert parse_apps(APPS) == (
        ("acme#prod", ("secretA", "secretA2")),
        ("acme#staging", ("secretB",)),
    )


@pytest.mark.parametrize(
    "raw", ["acme#prod", "acme=secret", "acme#prod=", "a#b=s,a#b=t", "a#b=1|2|3|4|5"]
)
def test_a_malformed_sink_apps_stops_start_up_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="SINK_APPS"):
        Settings.from_env({"SINK_APPS": raw})


def test_sink_apps_alone_is_enough_for_the_ingress() -> None:
    settings = Settings.from_env({"SINK_APPS": APPS})
    settings.require_secrets()
    assert settings.secrets == ()
    assert "secretA" not in repr(settings)


def test_setting_both_sink_apps_and_sink_secrets_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({"SINK_APPS": APPS, "SINK_SECRETS": "any"})
    secrets = tmp_path / "secrets"
    secrets.write_text("any\n")
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({"SINK_APPS": APPS, "SINK_SECRETS_FILE": str(secrets)})


def test_sink_apps_file_lists_one_app_a_line_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "apps"
    path.write_text(
        "# production\nacme#prod=secretA|secretA2\n\n  # staging\nacme#staging=secretB\n"
    )
    settings = Settings.from_env({"SINK_APPS_FILE": str(path)})
    assert settings.apps == parse_apps(APPS)
    path.write_text("acme#prod\n")
    with pytest.raises(ConfigError, match="SINK_APPS_FILE"):
        read_apps_file("SINK_APPS_FILE", str(path))


def test_the_appkey_comes_from_the_call_id_else_from_the_appkey_field() -> None:
    assert appkey_of({"callId": "XXXX#XXXX_976459883882744164"}) == "XXXX#XXXX"
    assert appkey_of({"callId": "org#app_with_underscore_0f3e", "appkey": "org#app_with"}) == (
        "org#app_with_underscore"
    )
    assert appkey_of({"callId": "XXXX-demo#XXXX-dp01-8696", "appkey": "org#app"}) == "org#app"
    assert appkey_of({"callId": "no-appkey-at-all"}) is None


def test_a_call_id_and_an_appkey_field_that_differ_are_refused() -> None:
    with pytest.raises(Rejected) as refused:
        claimed_appkey({"callId": "acme#prod_1", "appkey": "acme#staging"})
    assert refused.value.status == 401


def test_handlers_see_the_appkey_of_the_event() -> None:
    doc = callback(call_id("acme#staging"))
    assert from_document({**doc, "security": ""}).appkey == "acme#staging"


@pytest.fixture
async def two_app_ingress(settings: Settings) -> Any:
    apps = replace(settings, secrets=(), apps=parse_apps(APPS))
    client = TestClient(TestServer(create_app(apps)))
    await client.start_server()
    yield client
    await client.close()


async def test_each_app_is_accepted_with_its_own_secret_and_refused_with_the_other_s(
    two_app_ingress: Any, start_worker: Any, recorder: Recorder
) -> None:
    await start_worker(recorder.handler("tests.apps"))
    prod, staging = call_id("acme#prod"), call_id("acme#staging")
    assert await post(two_app_ingress, signed(callback(prod), "secretB")) == 401
    assert await post(two_app_ingress, signed(callback(staging), "secretA")) == 401
    assert await post(two_app_ingress, signed(callback(prod), "secretA2")) == 200
    assert await post(two_app_ingress, signed(callback(staging), "secretB")) == 200
    await recorder.wait_for(2)
    seen = {event.call_id: event.appkey for event in recorder.of("tests.apps")}
    assert seen == {prod: "acme#prod", staging: "acme#staging"}


async def test_a_callback_of_an_unlisted_app_or_of_no_app_no_secret_verifies_gets_401(
    two_app_ingress: Any,
) -> None:
    other = callback(call_id("acme#dev"))
    assert await post(two_app_ingress, signed(other, "secretA")) == 401
    nameless = callback("XXXX-demo-8696-cf3b48b20e7e")
    assert await post(two_app_ingress, signed(nameless, "secretC")) == 401
    mismatched = callback(call_id("acme#prod"), appkey="acme#staging")
    assert await post(two_app_ingress, signed(mismatched, "secretA")) == 401
    # With no appkey in the callId, the appkey field names the app.
    by_field = callback("XXXX-demo-8696-cf3b48b20e7e", appkey="acme#staging")
    assert await post(two_app_ingress, signed(by_field, "secretB")) == 200


async def test_sink_secrets_alone_still_means_any_app(ingress: Any) -> None:
    for appkey in ("acme#prod", "acme#staging", "whoever#else"):
        assert await post(ingress, signed(callback(call_id(appkey)))) == 200


async def test_a_callback_naming_no_app_is_the_app_whose_secret_alone_verifies_it(
    two_app_ingress: Any, start_worker: Any, recorder: Recorder
) -> None:
    await start_worker(recorder.handler("tests.nameless"))
    nameless = callback("XXXX-demo-8696-cf3b48b20e7e")
    assert await post(two_app_ingress, signed(nameless, "secretB")) == 200
    await recorder.wait_for(1)
    [event] = recorder.of("tests.nameless")
    assert event.appkey == "acme#staging"


def test_a_callback_naming_no_app_that_several_apps_secrets_verify_is_refused() -> None:
    shared = parse_apps("acme#prod=shared|secretA,acme#staging=shared")
    doc = orjson.loads(signed(callback("XXXX-demo-8696-cf3b48b20e7e"), "shared"))
    with pytest.raises(Rejected, match="several apps"):
        check_signature(doc, shared, ())
    assert check_signature(orjson.loads(signed(doc, "secretA")), shared, ()) == "acme#prod"


async def test_every_spec_example_is_accepted_under_sink_apps(settings: Settings) -> None:
    """The spec's examples name app XXXX#XXXX, or (its chat_offline example) no app at all."""
    apps = replace(settings, secrets=(), apps=parse_apps("XXXX#XXXX=secretX,acme#prod=secretA"))
    client = TestClient(TestServer(create_app(apps)))
    await client.start_server()
    try:
        for example in load_examples(now=True):
            body = orjson.dumps(resign(example.body, "secretX"))
            assert await post(client, body) == 200, example.source
            other = orjson.dumps(resign(example.body, "secretA"))  # acme#prod's secret
            expected = 200 if appkey_of(example.body) is None else 401  # no app: acme#prod's
            assert await post(client, other) == expected, example.source
    finally:
        await client.close()
