"""Settings: defaults, comma lists, and one clear line naming a bad variable."""

from __future__ import annotations

import pytest

from config.settings import SettingsError, load_settings


def test_defaults_need_no_environment() -> None:
    settings = load_settings()
    assert settings.broker_url is None
    assert settings.worker_max_messages == 1000
    assert settings.worker_threads == 8
    assert settings.processes >= 1


def test_comma_lists_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBOARD_ACTOR_MODULES", "a.b, c.d ,,")
    monkeypatch.setenv("CALLBOARD_WORKER_QUEUES", "critical,email")
    settings = load_settings()
    assert settings.actor_modules == ["a.b", "c.d"]
    assert settings.worker_queues == ["critical", "email"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALLBOARD_WORKER_THREADS", "abc"),
        ("CALLBOARD_WORKER_THREADS", "0"),
        ("CALLBOARD_BROKER_URL", "http://example"),
        ("CALLBOARD_LOG_FORMAT", "xml"),
        ("CALLBOARD_WORKER_SHUTDOWN_TIMEOUT", "-1"),
    ],
)
def test_bad_value_names_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(variable + ":")
    assert "\n" not in message


def test_case_of_levels_is_forgiven(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBOARD_LOG_LEVEL", "debug")
    monkeypatch.setenv("CALLBOARD_LOG_FORMAT", "CONSOLE")
    settings = load_settings()
    assert (settings.log_level, settings.log_format) == ("DEBUG", "console")
