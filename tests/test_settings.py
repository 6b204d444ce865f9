"""Settings come from SINK_* variables; a bad value stops start-up naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from callback_sink.sink.errors import ConfigError
from callback_sink.sink.settings import Settings


def test_defaults_work_on_a_developer_machine() -> None:
    settings = Settings.from_env({})
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.dedup_url == "memory://"
    assert settings.prefetch == 64
    assert settings.body_limit == 1024 * 1024
    assert settings.handlers == ("callback_sink.handlers.log",)
    assert settings.dedup_ttl > 3 * 24 * 3600


def test_several_secrets_are_read_comma_separated() -> None:
    assert Settings.from_env({"SINK_SECRETS": "a, b ,c"}).secrets == ("a", "b", "c")


def test_secrets_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("# one per rule\nfirst\n\nsecond\n")
    assert Settings.from_env({"SINK_SECRETS_FILE": str(path)}).secrets == ("first", "second")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SINK_PORT", "eighty"),
        ("SINK_PREFETCH", "0"),
        ("SINK_BODY_LIMIT", "-1"),
        ("SINK_DEDUP_URL", "mysql://x"),
        ("SINK_AMQP_URL", "http://x"),
        ("SINK_AMQP_URL", "amqp://u:p@host:abc/"),
        ("SINK_LOG_FORMAT", "xml"),
        ("SINK_RETRY_DELAYS", "1,soon"),
        ("SINK_DEDUP_TTL", "0"),
        ("SINK_SECRETS_FILE", "/nonexistent/secrets"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_secrets_never_show_in_the_settings_repr() -> None:
    settings = Settings.from_env(
        {"SINK_SECRETS": "hunter2", "SINK_AMQP_URL": "amqp://u:pw-secret@h/"}
    )
    assert "hunter2" not in repr(settings)
    assert "pw-secret" not in repr(settings)


def test_the_ingress_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ConfigError, match="SINK_SECRETS"):
        Settings.from_env({}).require_secrets()
