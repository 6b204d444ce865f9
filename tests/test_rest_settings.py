"""REST client and emulator settings: read once from the environment, secrets kept out."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings, local_callback_url
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port

ROOT = Path(__file__).resolve().parent.parent

CREDENTIALS = {
    "SINK_EASEMOB_HOST": "a1.easemob.com",
    "SINK_EASEMOB_ORG": "org",
    "SINK_EASEMOB_APP": "app",
    "SINK_EASEMOB_CLIENT_ID": "id",
    "SINK_EASEMOB_CLIENT_SECRET": "top-secret",
}


def test_no_credentials_at_all_means_no_rest_client() -> None:
    settings = EasemobSettings.from_env({})
    assert not settings.configured


def test_full_credentials_build_the_base_url() -> None:
    settings = EasemobSettings.from_env(CREDENTIALS)
    assert settings.configured
    assert settings.base_url == "https://a1.easemob.com/org/app"
    local = EasemobSettings.from_env({**CREDENTIALS, "SINK_EASEMOB_HOST": "http://127.0.0.1:8090"})
    assert local.base_url == "http://127.0.0.1:8090/org/app"


def test_incomplete_credentials_name_the_missing_variables() -> None:
    partial = {k: v for k, v in CREDENTIALS.items() if not k.endswith(("SECRET", "APP"))}
    with pytest.raises(ConfigError, match="SINK_EASEMOB_APP, SINK_EASEMOB_CLIENT_SECRET"):
        EasemobSettings.from_env(partial)


def test_the_client_secret_can_come_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("# rotated weekly\nfrom-a-file\n")
    env = {k: v for k, v in CREDENTIALS.items() if not k.endswith("SECRET")}
    settings = EasemobSettings.from_env(
        {**env, "SINK_EASEMOB_CLIENT_SECRET_FILE": str(secret_file)}
    )
    assert settings.client_secret == "from-a-file"


def test_the_secret_is_not_part_of_the_repr() -> None:
    settings = EasemobSettings.from_env(CREDENTIALS)
    assert "top-secret" not in repr(settings)
    assert "emulator-client-secret" not in repr(EmulatorSettings())


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SINK_EASEMOB_RATE_LIMIT", "0"),
        ("SINK_EASEMOB_MAX_ATTEMPTS", "many"),
        ("SINK_EASEMOB_TIMEOUT", "-1"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        EasemobSettings.from_env({**CREDENTIALS, variable: value})


def test_emulator_settings_read_rates_and_refuse_nonsense() -> None:
    settings = EmulatorSettings.from_env(
        {"SINK_EMULATOR_THROTTLE_RATE": "0.2", "SINK_EMULATOR_SINK_URL": "none"}
    )
    assert settings.throttle_rate == 0.2 and settings.sink_url == ""
    with pytest.raises(ConfigError, match="SINK_EMULATOR_DUPLICATE_RATE"):
        EmulatorSettings.from_env({"SINK_EMULATOR_DUPLICATE_RATE": "2"})
    with pytest.raises(ConfigError, match="SINK_EMULATOR_SINK_URL"):
        EmulatorSettings.from_env({"SINK_EMULATOR_SINK_URL": "ftp://x"})


def test_the_emulator_sends_callbacks_to_the_local_sink_its_sink_settings_describe() -> None:
    sink = {"SINK_HOST": "127.0.0.1", "SINK_PORT": "9999", "SINK_PATH": "/easemob"}
    assert EmulatorSettings.from_env(sink).sink_url == "http://127.0.0.1:9999/easemob"
    assert EmulatorSettings.from_env({}).sink_url == local_callback_url(Settings())
    given = Settings(host="10.0.0.5", port=8443, path="/cb")
    assert EmulatorSettings.from_env({}, sink=given).sink_url == "http://10.0.0.5:8443/cb"


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", "http://127.0.0.1:8080/callbacks"), ("::", "http://[::1]:8080/callbacks"),
     ("fd00::5", "http://[fd00::5]:8080/callbacks"), ("sink.local", "http://sink.local:8080/callbacks")],
)  # fmt: skip
def test_a_sink_listening_on_every_address_is_reached_through_the_loopback(
    host: str, url: str
) -> None:
    assert local_callback_url(Settings(host=host)) == url


def test_an_explicit_emulator_sink_url_wins_over_the_sink_settings() -> None:
    env = {"SINK_PORT": "9999", "SINK_EMULATOR_SINK_URL": "http://elsewhere:1/x"}
    assert EmulatorSettings.from_env(env).sink_url == "http://elsewhere:1/x"
    assert EmulatorSettings.from_env({**env, "SINK_EMULATOR_SINK_URL": "none"}).sink_url == ""


def test_the_declared_default_is_the_default_sinks_url() -> None:
    """The field's own default (what a test building ``EmulatorSettings()`` gets) cannot drift
    from the URL a default sink serves."""
    assert EmulatorSettings().sink_url == local_callback_url(Settings())


async def test_emulate_posts_to_the_port_in_sink_port(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINK_")}
    env |= {"SINK_PORT": "9999", "SINK_EMULATOR_PORT": str(free_port()), "PYTHONPATH": str(ROOT),
            "SINK_EMULATOR_CALLBACK_SECRET": "emulator-test-secret"}  # fmt: skip
    emulate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callback_sink", "emulate", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert emulate.stdout is not None
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while b"callbacks to" not in (line := await emulate.stdout.readline()):
                assert line, f"emulate exited before saying where callbacks go: {seen}"
                seen.append(line)
    finally:
        emulate.terminate()
        await emulate.wait()
    assert "callbacks to http://127.0.0.1:9999/callbacks" in line.decode()
