"""[coercion] in the TOML configuration."""
from __future__ import annotations

import pytest

from sensor.config import ConfigError, load_config


def config_from(tmp_path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(str(path), env={"HOME": str(tmp_path)})


def test_defaults_and_values(tmp_path):
    assert config_from(tmp_path, "").coercion.enabled is True
    assert config_from(tmp_path, "").coercion.window == 30.0
    c = config_from(tmp_path, '[coercion]\nwindow = 10\nknown_servers = ["10.0.0.20"]\nenabled = false\n').coercion
    assert (c.enabled, c.window, c.known_servers) == (False, 10.0, frozenset({"10.0.0.20"}))


@pytest.mark.parametrize("text", ["[coercion]\nwindow = 0\n", "[coercion]\nwindow = true\n",
                                  '[coercion]\nenabled = "yes"\n', "[coercion]\nknown_servers = [1]\n",
                                  "[coercion]\nwindw = 3\n"])
def test_mistakes_are_refused(tmp_path, text):
    with pytest.raises(ConfigError):
        config_from(tmp_path, text)
