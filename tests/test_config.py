"""The one config: defaults, DACSTYLE_* overrides, typo checks, printing."""

from __future__ import annotations

from pathlib import Path

import pytest

from dacstyle.config import _SETTINGS, Config
from dacstyle.errors import ConfigError


def test_defaults_without_environment():
    config = Config(use_environment=False)
    assert config.runtime == "auto" and config.offline is False and config.call_timeout == 60.0
    assert config.cache is None and config.cache_dir.name == "images"


def test_environment_overrides_are_converted(monkeypatch, tmp_path):
    monkeypatch.setenv("DACSTYLE_OFFLINE", "yes")
    monkeypatch.setenv("DACSTYLE_CALL_TIMEOUT", "2.5")
    monkeypatch.setenv("DACSTYLE_CACHE", str(tmp_path))
    config = Config()
    assert config.offline is True and config.call_timeout == 2.5 and config.cache_dir == tmp_path
    assert Config(use_environment=False).offline is False


def test_bad_values_and_typos_are_config_errors(monkeypatch):
    monkeypatch.setenv("DACSTYLE_OFFLINE", "maybe")
    with pytest.raises(ConfigError, match="DACSTYLE_OFFLINE"):
        Config()
    config = Config(use_environment=False)
    with pytest.raises(ConfigError, match="unknown setting 'runtme'"):
        config.runtme = "bwrap"
    with pytest.raises(ConfigError, match="call_timeout"):
        config.call_timeout = "soon"
    config.runs = "elsewhere"
    assert config.runs == Path("elsewhere")


def test_describe_names_every_setting_and_its_variable():
    text = Config(use_environment=False).describe()
    for name in _SETTINGS:
        assert name in text and f"DACSTYLE_{name.upper()}" in text
    assert set(Config.__annotations__) == set(_SETTINGS), "annotate every setting on Config"
