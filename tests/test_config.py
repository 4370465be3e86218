"""Knobs: default, environment, scoped override, clear errors."""

import pytest

from lpcc import config


def test_default_env_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LPCC_PROGRESS", raising=False)
    assert config.get("progress") == "auto"
    monkeypatch.setenv("LPCC_PROGRESS", "never")
    assert config.get("progress") == "never"
    with config.override(progress="always"):
        assert config.get("progress") == "always"
    assert config.get("progress") == "never"


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LPCC_PROGRESS_MIN_LAYERS", "0")
    with pytest.raises(config.ConfigError, match="LPCC_PROGRESS_MIN_LAYERS"):
        config.get("progress_min_layers")
    with pytest.raises(config.ConfigError, match="no lpcc knob named 'nope'"):
        config.get("nope")
    with pytest.raises(config.ConfigError), config.override(nope=1):
        pass


def test_describe_lists_every_knob() -> None:
    text = config.describe()
    for knob in config.KNOBS.values():
        assert knob.env in text
