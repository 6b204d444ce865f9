"""REST client and emulator settings: read once from the environment, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.sink.errors import ConfigError

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
