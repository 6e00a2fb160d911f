"""Settings: the example file, environment overrides, and the exact words of every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.orchestrator.errors import ConfigError
from bluegreen.orchestrator.settings.core import default_toml
from bluegreen.orchestrator.settings.model import Settings, load_settings
from tests.conftest import write_settings as write

HINT = ("fix bluegreen.toml or the variable named; bluegreen init --force writes the commented default"
        "   (runbooks/settings.md)")


pytestmark = pytest.mark.usefixtures("no_bluegreen_variables")


def error_for(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value


def test_the_commented_default_file_loads_to_exactly_the_model_defaults(tmp_path: Path) -> None:
    """default.toml (what `init` writes) and the model's defaults are the same settings."""
    loaded = load_settings(write(tmp_path, default_toml()))
    assert loaded.model_dump() == Settings(root=tmp_path).model_dump()
    assert loaded.root == tmp_path
    assert loaded.state_dir == tmp_path / ".bluegreen"
    assert loaded.sqlite_path == tmp_path / "data" / "app.db"


def test_environment_variables_override_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_PROXY__PORT", "9080")
    monkeypatch.setenv("BLUEGREEN_ENVIRONMENTS__GREEN__PORT", "9102")
    monkeypatch.setenv("BLUEGREEN_ENVIRONMENTS__ENV", '{"FAULT_LATENCY_MS": "5"}')
    s = load_settings(write(tmp_path, default_toml()))
    assert (s.proxy.port, s.environments.green.port, s.environments.blue.port) == (9080, 9102, 8101)
    assert s.environments.env == {"FAULT_LATENCY_MS": "5"}


def test_config_path_comes_from_bluegreen_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('project = "elsewhere"\n')
    monkeypatch.setenv("BLUEGREEN_CONFIG", str(path))
    assert load_settings().project == "elsewhere"


def test_a_wrong_type_in_the_file_names_key_value_and_rule(tmp_path: Path) -> None:
    err = error_for(write(tmp_path, '[proxy]\nport = "eighty"\n'))
    assert err.message == ("invalid settings: proxy.port = 'eighty' (in bluegreen.toml): "
                           "Input should be a valid integer, unable to parse string as an integer")
    assert err.hint == HINT
    assert err.exit_code == 4


def test_a_wrong_value_from_the_environment_names_the_variable(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_PROXY__PORT", "70000")
    err = error_for(write(tmp_path, ""))
    assert err.message == ("invalid settings: proxy.port = '70000' (from BLUEGREEN_PROXY__PORT): "
                           "Input should be less than or equal to 65535")


@pytest.mark.parametrize(("written", "size"), [("\"1MiB\"", 1048576), ("\"1MB\"", 1000000), ("\"64 KiB\"", 65536),
                                               ("\"1.5kb\"", 1500), ("4096", 4096), ("\"2048\"", 2048)])
def test_a_size_is_bytes_or_a_number_with_a_unit(tmp_path: Path, written: str, size: int) -> None:
    assert load_settings(write(tmp_path, f"[serve]\nmax_body = {written}\n")).serve.max_body == size


def test_a_size_without_a_known_unit_or_too_small_is_refused(tmp_path: Path) -> None:
    err = error_for(write(tmp_path, '[serve]\nmax_body = "1 furlong"\n'))
    assert err.message == ("invalid settings: serve.max_body = '1 furlong' (in bluegreen.toml): "
                           "must be a size such as 64KiB, 1MiB, 1MB or a number of bytes")
    small = error_for(write(tmp_path, '[serve]\nmax_body = "1000B"\n'))
    assert small.message == ("invalid settings: serve.max_body = 1000 (in bluegreen.toml): "
                             "Input should be greater than or equal to 1024")


def test_an_unknown_key_is_refused(tmp_path: Path) -> None:
    err = error_for(write(tmp_path, "[proxy]\nprot = 8080\n"))
    assert err.message == "invalid settings: unknown key proxy.prot (in bluegreen.toml)"


def test_several_problems_are_listed_together(tmp_path: Path) -> None:
    err = error_for(write(tmp_path, '[proxy]\ndriver = "traefik"\n[environments]\nhealth_timeout = -1\n'))
    assert err.message == (
        "invalid settings:\n"
        "  proxy.driver = 'traefik' (in bluegreen.toml): Input should be 'haproxy' or 'nginx'\n"
        "  environments.health_timeout = -1 (in bluegreen.toml): Input should be greater than 0"
    )


def test_two_services_on_one_port_are_refused(tmp_path: Path) -> None:
    err = error_for(write(tmp_path, "[environments.green]\nport = 8101\n"))
    assert err.message == ("invalid settings: environments.green.port = 8101 is already used by "
                           "environments.blue.port; each needs its own port")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[environments]\nimage = "bluegreen-model:v1"\n',
         "invalid settings: environments.image = 'bluegreen-model:v1' (in bluegreen.toml): "
         "must be a repository without a tag (the version is the tag)"),
        ('[database]\nurl = "mysql://x"\n',
         "invalid settings: database.url = 'mysql://x' (in bluegreen.toml): "
         "must start with sqlite:/// or postgresql://, or be empty (no application database)"),
        ('[model]\nprofile = "custom"\npredict_path = "/p"\n',
         "invalid settings: model.profile = 'custom' assumes nothing: set model.ready_path, model.request, "
         "model.predictions"),
        ('[model]\nrequest = \'{"rows": 1}\'\n',
         "invalid settings: model.request = '{\"rows\": 1}' (in bluegreen.toml): "
         'must contain "$rows", "$flat" or "$records" where the feature rows go'),
        ('[model]\npredictions = "predictions"\n',
         "invalid settings: model.predictions = 'predictions' (in bluegreen.toml): "
         'must be a JSON pointer: "" for the whole value, or /key/0/…'),
        ('[environments]\ncommand = ["serve", "--grpc", "{port:grpc}"]\n',
         "invalid settings: environments.command[2] uses {port:grpc} but environments.blue.ports "
         "and environments.green.ports name no port 'grpc'"),
        ('[environments.blue]\nport = 8101\nports = { grpc = 8102 }\n[environments.green]\nport = 8102\n'
         'ports = { grpc = 8202 }\n',
         "invalid settings: environments.blue.ports.grpc = 8102 is already used by environments.green.port; "
         "each needs its own port"),
        ('[analysis]\ntask = "classification"\nthresholds = { rmse = 0.1 }\n',
         "invalid settings: analysis.thresholds / analysis.primary: 'rmse' is not a classification metric "
         "(those are accuracy, f1_macro, log_loss)"),
        ('[analysis]\nsource = "prometheus"\n',
         "invalid settings: analysis.source = 'prometheus' needs analysis.prometheus.url and at least "
         "one query in [analysis.prometheus.queries]"),
        ('[proxy]\ndriver = "nginx"\nprocesses = 2\n',
         'invalid settings: proxy.processes = 2 needs driver = "haproxy" (nginx\'s own master already starts a new '
         "worker when one dies): set it to 1"),
        ('[proxy]\nprocesses = 5\n',
         "invalid settings: proxy.processes = 5 (in bluegreen.toml): Input should be less than or equal to 4"),
        ('[proxy]\nhost = "localhost"\n',
         "invalid settings: proxy.host = 'localhost' (in bluegreen.toml): must be an IP address such as 127.0.0.1"),
        ('project = "Has Spaces"\n',
         "invalid settings: project = 'Has Spaces' (in bluegreen.toml): "
         "String should match pattern '^[a-z0-9][a-z0-9_.-]{0,40}$'"),
    ],
)
def test_values_outside_the_rules(tmp_path: Path, text: str, message: str) -> None:
    assert error_for(write(tmp_path, text)).message == message


def test_a_bad_database_url_is_shown_without_its_password(tmp_path: Path) -> None:
    err = error_for(write(tmp_path, '[database]\nurl = "mysql://app:hunter2@db:3306/models"\n'))
    assert err.message == ("invalid settings: database.url = 'mysql://app:***@db:3306/models' (in bluegreen.toml): "
                           "must start with sqlite:/// or postgresql://, or be empty (no application database)")


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[proxy\nport = 1\n")
    err = error_for(path)
    assert err.message == (f"{path} is not valid TOML: "
                           "Expected ']' at the end of a table declaration (at line 1, column 7)")
    assert err.hint == f"fix the syntax in {path}"


def test_a_missing_file_points_at_init(tmp_path: Path) -> None:
    err = error_for(tmp_path / "bluegreen.toml")
    assert err.message == f"no settings file at {tmp_path / 'bluegreen.toml'}"
    assert err.hint == "bluegreen init   (writes a commented bluegreen.toml), or pass --config FILE"


def test_a_task_the_holdouts_labels_contradict_is_refused_at_load(tmp_path: Path) -> None:
    """Classification on amounts, or the other task's metrics, stop every command before it starts."""
    (tmp_path / "holdout.csv").write_text("age,bmi,target\n0.03,0.06,151.5\n-0.01,-0.05,75.25\n0.08,0.04,141\n")
    err = error_for(write(tmp_path, '[analysis]\ntask = "classification"\nholdout = "holdout.csv"\n'
                                    'label_column = "target"\n'))
    assert err.message == (
        "invalid settings: analysis.task = 'classification' contradicts the holdout's labels: classification needs "
        "classes, and 2 of 3 labels are fractional amounts (such as 151.5): set analysis.task = \"regression\", or "
        "\"auto\" to infer")
    err = error_for(write(tmp_path, '[analysis]\nholdout = "holdout.csv"\nlabel_column = "target"\n'
                                    'thresholds = { accuracy = 0.02 }\n'))
    assert err.message == (
        "invalid settings: analysis.thresholds / analysis.primary: 'accuracy' is not a regression metric, and the "
        "holdout holdout.csv is judged as regression (inferred: 2 of 3 labels are fractional amounts)")
    loaded = load_settings(write(tmp_path, '[analysis]\nholdout = "holdout.csv"\nlabel_column = "target"\n'))
    assert loaded.analysis.task == "auto"  # inferred where it is used, from the labels as they are then
