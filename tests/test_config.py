"""The one config: defaults, DACSTYLE_* overrides, typo checks, printing."""

from __future__ import annotations

import configparser
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


def test_a_bad_environment_value_fails_when_read_and_names_the_variable(monkeypatch):
    monkeypatch.setenv("DACSTYLE_OFFLINE", "maybe")
    config = Config()  # no error yet: importing dacstyle must not fail on a bad variable
    assert config.runtime == "auto" and config.call_timeout == 60.0
    with pytest.raises(ConfigError, match=r"^DACSTYLE_OFFLINE='maybe': not a boolean"):
        config.offline
    with pytest.raises(ConfigError, match="DACSTYLE_OFFLINE"):
        config.check()
    with pytest.raises(ConfigError, match="DACSTYLE_OFFLINE"):
        config.as_dict()
    assert "INVALID 'maybe'" in config.describe()
    config.offline = True  # a valid value replaces the bad one
    assert config.offline is True
    config.check()


@pytest.mark.parametrize("variable, text, message", [
    ("CALL_TIMEOUT", "soon", "not a number"),
    ("CALL_TIMEOUT", "-1", "must be a positive finite number"),
    ("START_TIMEOUT", "inf", "must be a positive finite number"),
    ("MAX_MESSAGE_SIZE", "1.5", "not an integer"),
    ("RUNTIME", "docker", "use one of auto, apptainer, singularity, bwrap, process"),
    ("PROGRESS", "sometimes", "use one of auto, always, never"),
    ("SHARED_CACHE", "2", "not a boolean"),
])
def test_every_kind_of_bad_value_is_named(variable, text, message, monkeypatch):
    monkeypatch.setenv(f"DACSTYLE_{variable}", text)
    config = Config()
    with pytest.raises(ConfigError, match=rf"^DACSTYLE_{variable}={text!r}: {message}"):
        getattr(config, variable.lower())


def test_typos_and_bad_assignments_are_config_errors():
    config = Config(use_environment=False)
    with pytest.raises(ConfigError, match="unknown setting 'runtme'"):
        config.runtme = "bwrap"
    with pytest.raises(ConfigError, match="call_timeout='soon': not a number"):
        config.call_timeout = "soon"
    with pytest.raises(ConfigError, match="runtime='docker'"):
        Config(use_environment=False, runtime="docker")
    config.runs = "elsewhere"
    config.offline = "yes"
    config.max_message_size = "1024"
    assert config.runs == Path("elsewhere") and config.offline is True and config.max_message_size == 1024


def test_describe_names_every_setting_and_its_variable():
    text = Config(use_environment=False).describe()
    for name in _SETTINGS:
        assert name in text and f"DACSTYLE_{name.upper()}" in text
    assert set(Config.__annotations__) == set(_SETTINGS), "annotate every setting on Config"


def test_the_python_requirement_covers_what_the_codec_uses():
    """The codec attaches remote tracebacks with ``add_note`` (3.11+), so setup.cfg must not allow 3.10."""
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert setup["options"]["python_requires"] == ">=3.11"
    assert "add_note" in (Path(__file__).resolve().parents[1] / "dacstyle" / "codec.py").read_text()
