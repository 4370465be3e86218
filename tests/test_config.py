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


def test_lpcc_logs_help_lists_the_knobs_at_import() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "LPCC_LOGS": "help"}
    out = subprocess.run(
        [sys.executable, "-c", "import lpcc"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0
    for knob in config.KNOBS.values():
        assert knob.env in out.stderr


def test_lpcc_logs_shows_compile_stages(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import torch

    import lpcc

    monkeypatch.setenv("LPCC_LOGS", "compile")
    config.setup_logs()
    logger = logging.getLogger("lpcc.compile")
    try:
        assert logger.level == logging.INFO
        with caplog.at_level(logging.INFO, logger="lpcc.compile"):
            lpcc.compile(torch.nn.Linear(4, 2), (torch.ones(1, 4),), opt_level=1)
        stages = [r.getMessage().split()[0] for r in caplog.records]
        assert stages[0] == "import" and stages[1] == "fold-constants"
        assert stages[-1] == "lower"
    finally:
        logger.setLevel(logging.NOTSET)
    monkeypatch.setenv("LPCC_LOGS", "nope")
    with pytest.warns(UserWarning, match="unknown logger 'nope'"):
        config.setup_logs()
