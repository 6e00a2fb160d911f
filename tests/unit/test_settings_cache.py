"""The settings cache: validated once, then read back without pydantic, and never stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bluegreen.orchestrator.errors import ConfigError
from bluegreen.orchestrator.settings import cache as settings_cache
from bluegreen.orchestrator.settings.core import default_toml
from bluegreen.orchestrator.settings.model import Settings
from tests.conftest import write_settings as write

CUSTOM = default_toml().replace('dir = ".bluegreen"\n', 'dir = "var/state"\n')


pytestmark = pytest.mark.usefixtures("no_bluegreen_variables")


def assert_same(model: Any, view: Any, where: str = "settings") -> None:
    """Every field of the validated model reads back from the view with the same value and type."""
    for name in type(model).model_fields:
        expected, got = getattr(model, name), getattr(view, name)
        if hasattr(type(expected), "model_fields"):
            assert_same(expected, got, f"{where}.{name}")
        elif isinstance(expected, list) and expected and hasattr(type(expected[0]), "model_fields"):
            assert len(got) == len(expected), f"{where}.{name}"
            for i, (one, other) in enumerate(zip(expected, got, strict=True)):
                assert_same(one, other, f"{where}.{name}.{i}")
        elif type(expected).__name__ == "SecretStr":
            assert got is None, f"{where}.{name}: a secret is never written into the cache"
        else:
            assert (type(got), got) == (type(expected), expected), f"{where}.{name}"


CHECKS = """
[[release.checks]]
name = "smoke"
kind = "web"
url = "{candidate}/health"
when = ["gate", "step"]
pointer = "/score"
min = 0.9

[[release.checks]]
name = "contract"
kind = "job"
command = ["sh", "-c", "exit 0"]
env = { TARGET = "{candidate}" }

[[release.checks]]
name = "sign-off"
kind = "approval"
when = ["promote"]
timeout = "10m"
"""


@pytest.mark.parametrize("text", [default_toml(), CUSTOM.replace('url = "sqlite:///data/app.db"',
                                                                 'url = "postgresql://app@127.0.0.1:5432/models"'),
                                  default_toml() + CHECKS],
                         ids=["defaults", "postgresql-and-own-state-dir", "release-checks"])
def test_the_cached_settings_read_back_exactly_as_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             text: str) -> None:
    monkeypatch.setenv("BLUEGREEN_PROXY__DRIVER", "nginx")
    monkeypatch.setenv("BLUEGREEN_ENVIRONMENTS__ENV", '{"FAULT_LATENCY_MS": "5"}')
    monkeypatch.setenv("BLUEGREEN_BACKUPS__EXTRA_FILES", '["models/extra.json"]')
    path = write(tmp_path, text)
    first = settings_cache.load(path)
    assert isinstance(first, Settings)  # validated with pydantic, then remembered
    second = settings_cache.load(path)
    assert not isinstance(second, Settings)
    assert_same(first, second)
    for derived in ("state_dir", "sqlite_path"):
        assert getattr(second, derived) == getattr(first, derived)
    assert second.image_ref("v2") == first.image_ref("v2")
    assert second.container_name("green") == first.container_name("green")
    assert second.environments.color("green").port == first.environments.color("green").port
    cache = first.state_dir / "settings.json"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(AttributeError):
        second.project = "changed"  # type: ignore[misc]


def test_any_change_of_input_validates_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, default_toml())
    settings_cache.load(path)
    assert not isinstance(settings_cache.load(path), Settings)
    monkeypatch.setenv("BLUEGREEN_PROXY__PORT", "9080")  # a variable
    changed = settings_cache.load(path)
    assert isinstance(changed, Settings) and changed.proxy.port == 9080
    monkeypatch.setenv("BLUEGREEN_ACTOR", "someone")  # not a setting: the cache still holds
    assert not isinstance(settings_cache.load(path), Settings)
    monkeypatch.delenv("BLUEGREEN_PROXY__PORT")
    path.write_text(default_toml().replace("port = 8080", 'port = "http"'))  # the file
    with pytest.raises(ConfigError) as info:
        settings_cache.load(path)
    assert info.value.message.startswith("invalid settings: proxy.port = 'http' (in bluegreen.toml)")


def test_a_damaged_or_foreign_cache_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, default_toml())
    settings = settings_cache.load(path)
    cache = settings.state_dir / "settings.json"
    for damage in ("not json", json.dumps({"format": 1, "fingerprint": "x", "settings": {}}),
                   json.dumps({"format": 1})):
        cache.write_text(damage)
        again = settings_cache.load(path)
        assert isinstance(again, Settings)  # validated afresh, and the cache rewritten
        assert json.loads(cache.read_text())["format"] == 1


def test_invalid_settings_leave_no_cache(tmp_path: Path) -> None:
    path = write(tmp_path, default_toml().replace("port = 8080", "port = 0"))
    with pytest.raises(ConfigError):
        settings_cache.load(path)
    assert not (tmp_path / ".bluegreen").exists()


def test_a_cached_load_does_not_import_pydantic(tmp_path: Path) -> None:
    """The reason the cache exists: pydantic-settings' import costs more than a whole rollback."""
    path = write(tmp_path, default_toml())
    probe = ("import sys; from pathlib import Path; from bluegreen.orchestrator.settings import cache; "
             f"s = cache.load(Path({str(path)!r})); print(s.proxy.port, 'pydantic' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")}
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout
            for _ in range(2)]
    assert runs == ["8080 True\n", "8080 False\n"]
