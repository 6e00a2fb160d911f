"""Typed settings: ``bluegreen.toml`` overridden by ``BLUEGREEN_*`` environment variables.

The whole file is validated at load; any bad key or value raises :class:`ConfigError`
naming the dotted key, the value, where it came from and what is allowed. Defaults live in
the models below and, commented, in ``default.toml`` (a test keeps the two equal).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bluegreen.orchestrator.common.redact import redact_url
from bluegreen.orchestrator.errors import ConfigError
from bluegreen.orchestrator.model.contract import REQUIRED_FOR_CUSTOM, check_template
from bluegreen.orchestrator.model.quality import METRICS, HoldoutError, choose_task, load_holdout
from bluegreen.orchestrator.settings.core import (
    CHECK_PLACEHOLDERS,
    CHECK_POINTS,
    DEFAULT_STATE_DIR,
    ENV_PREFIX,
    DerivedPaths,
    check_placeholders,
    check_steps,
    fill_placeholders,
    find_config,
    parse_duration,
    parse_size,
)

Port = int


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IP address such as 127.0.0.1") from None
    return value


class ProxySettings(_Section):
    driver: Literal["haproxy", "nginx"] = "haproxy"
    host: str = "127.0.0.1"
    port: Port = Field(8080, ge=1, le=65535)
    binary: str = "haproxy"
    nginx_binary: str = "nginx"
    check_interval_ms: int = Field(1000, ge=100, le=60000)
    supervisor: Literal["container", "process"] = "container"
    # HAProxy instances sharing the listener (SO_REUSEPORT): with 2, a dead one costs only the
    # connections it held while its supervisor restarts it (proxy/instances.py).
    processes: int = Field(1, ge=1, le=4)
    # With a remote docker.host: "here" runs the proxy's container on this machine's engine (the
    # proxy stays where bluegreen runs), "engine" on the remote engine beside the colours.
    where: Literal["here", "engine"] = "here"
    failover: bool = True
    connect_timeout: Duration = 0.1
    retry_candidate_failures: bool = False

    _host = field_validator("host")(_ip)

    @model_validator(mode="after")
    def _processes_are_haproxy_instances(self) -> ProxySettings:
        if self.processes != 1 and self.driver != "haproxy":
            raise ValueError(f"proxy.processes = {self.processes} needs driver = \"haproxy\" (nginx's own master "
                             "already starts a new worker when one dies): set it to 1")
        return self


PortNumber = Annotated[int, Field(ge=1, le=65535)]
PLACEHOLDER = re.compile(r"\{(port(?::[a-z0-9_]+)?|colou?r|host|model)\}")


class ColorSettings(_Section):
    port: Port = Field(ge=1, le=65535)
    # More ports the colour's server opens (MLServer: gRPC and metrics), named for {port:NAME}.
    ports: dict[str, PortNumber] = Field(default_factory=dict)


class EnvironmentsSettings(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    image: str = Field("bluegreen-model", min_length=1)
    version: str = Field("v1", min_length=1)
    host: str = "127.0.0.1"
    health_timeout: float = Field(30.0, gt=0, le=3600)
    env: dict[str, str] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)
    blue: ColorSettings = ColorSettings(port=8101)
    green: ColorSettings = ColorSettings(port=8102)
    # A colour of several services, defined by the team's compose file (runbooks/compose.md):
    # `service` is the one behind the proxy, `with` the services that switch with it (workers).
    compose: str = ""
    service: str = Field("api", min_length=1)
    with_: list[str] = Field(default_factory=list, alias="with")
    images: dict[str, str] = Field(default_factory=dict)  # service -> repository, when not the file's

    _host = field_validator("host")(_ip)

    @model_validator(mode="after")
    def _services(self) -> EnvironmentsSettings:
        if self.with_ and not self.compose:
            raise ValueError("environments.with names services of a compose file: set environments.compose too")
        if self.service in self.with_:
            raise ValueError(f"environments.with lists {self.service!r}, the service behind the proxy "
                             "(environments.service)")
        unknown = set(self.images) - {self.service, *self.with_}
        if unknown:
            raise ValueError(f"environments.images names {sorted(unknown)}, which are not environments.service "
                             "or environments.with")
        return self

    @model_validator(mode="after")
    def _placeholders_resolve(self) -> EnvironmentsSettings:
        if set(self.blue.ports) != set(self.green.ports):
            raise ValueError(f"environments.blue.ports names {sorted(self.blue.ports)} and environments.green.ports "
                             f"{sorted(self.green.ports)}: both colours need the same port names")
        for where, text in [*((f"env.{k}", v) for k, v in self.env.items()),
                            *((f"command[{i}]", v) for i, v in enumerate(self.command))]:
            for name in re.findall(r"\{port:([a-z0-9_]+)\}", text):
                if name not in self.blue.ports:
                    raise ValueError(f"environments.{where} uses {{port:{name}}} but environments.blue.ports and "
                                     f"environments.green.ports name no port {name!r}")
        return self

    @field_validator("image")
    @classmethod
    def _repository_without_tag(cls, value: str) -> str:
        if ":" in value.rsplit("/", 1)[-1]:
            raise ValueError("must be a repository without a tag (the version is the tag)")
        return value

    def color(self, name: str) -> ColorSettings:
        return self.blue if name == "blue" else self.green


def _path(value: str | None) -> str | None:
    if value is not None and not value.startswith("/"):
        raise ValueError("must be a path starting with /")
    return value


def _pointer(value: str | None) -> str | None:
    if value is not None and value != "" and not value.startswith("/"):
        raise ValueError('must be a JSON pointer: "" for the whole value, or /key/0/…')
    return value


class ModelSettings(_Section):
    """The model contract; empty keys take the profile's value (see contract.py)."""

    profile: Literal["reference", "mlflow", "open-inference", "custom"] = "reference"
    name: str = Field("model", min_length=1)
    ready_path: str | None = None
    ready_status: int | None = Field(None, ge=100, le=599)
    version_from: Literal["endpoint", "label", "none"] | None = None
    version_path: str | None = None
    version_pointer: str | None = None
    version_label: str | None = None
    predict_path: str | None = None
    request: str | None = None
    predictions: str | None = None
    prediction: str | None = None
    probabilities: str | None = None
    metrics_path: str | None = None
    metrics_port: str | None = None
    latency_histogram: str | None = None

    _paths = field_validator("ready_path", "predict_path", "version_path", "metrics_path")(_path)
    _pointers = field_validator("version_pointer", "predictions", "prediction", "probabilities")(_pointer)

    @field_validator("request")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _custom_names_everything(self) -> ModelSettings:
        if self.profile == "custom":
            missing = [f"model.{k}" for k in REQUIRED_FOR_CUSTOM if getattr(self, k) is None]
            if missing:
                raise ValueError(f"model.profile = 'custom' assumes nothing: set {', '.join(missing)}")
        return self


class DatabaseSettings(_Section):
    url: str = "sqlite:///data/app.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not re.match(r"^(sqlite:///.+|postgres(ql)?://.+)$", value):
            raise ValueError("must start with sqlite:/// or postgresql://, or be empty (no application database)")
        return value


class StateSettings(_Section):
    dir: Path = Path(DEFAULT_STATE_DIR)


class DockerSettings(_Section):
    host: str = ""
    timeout: float = Field(30.0, gt=0, le=600)
    # ssh:// engines: "paramiko" (the docker SDK's own client; reads ~/.ssh/config and known_hosts)
    # or "openssh" (runs the ssh binary, as the docker CLI does).
    ssh_client: Literal["paramiko", "openssh"] = "paramiko"
    # tcp:// engines with TLS: the CA that signed the engine's certificate, and this client's pair.
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True

    @field_validator("host")
    @classmethod
    def _engine_address(cls, value: str) -> str:
        if value and not value.startswith(("unix://", "tcp://", "ssh://")):
            raise ValueError("must be empty (DOCKER_HOST or the default socket) or start with unix://, tcp:// "
                             "or ssh:// (ssh://user@host[:port])")
        return value

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> DockerSettings:
        tls = [name for name in ("tls_ca", "tls_cert", "tls_key") if getattr(self, name)]
        if tls and not self.host.startswith("tcp://"):
            raise ValueError(f"{', '.join(tls)} apply to a tcp:// engine only (docker.host = {self.host!r})")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self


class RuntimeSettings(_Section):
    # "docker": each colour is one container. "swarm": each colour is a Docker Swarm service of
    # `replicas` tasks (the engine must be a swarm manager); replica i listens on the colour's port
    # + (i - 1) * port_step, and the proxy holds a server for every replica.
    kind: Literal["docker", "swarm"] = "docker"
    replicas: int = Field(1, ge=1, le=20)
    port_step: int = Field(1000, ge=1, le=10000)
    # How long a swarm colour's tasks may take to all run (pulling, scheduling, starting).
    converge_timeout: float = Field(120.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _replicas_need_swarm(self) -> RuntimeSettings:
        if self.kind == "docker" and self.replicas != 1:
            raise ValueError(f"replicas = {self.replicas} needs kind = \"swarm\" (the docker runtime runs one "
                             "container per colour)")
        return self


class WorkersSettings(_Section):
    # Services that switch with the traffic (environments.with): by default only the colour that
    # serves 100 % runs them; overlap = true runs the candidate's beside the live one's during the
    # steps (for queues that balance between consumers).
    overlap: bool = False
    drain_timeout: Duration = 30.0  # SIGTERM, then this long to finish held work (or the file's stop_grace_period)
    health_timeout: Duration = 60.0  # a started worker's compose healthcheck must pass within this
    watch: Duration = 5.0  # after a switch, the queue and the workers are watched this long
    # SQL answering the number of jobs waiting, run on the application database; empty: no lag check.
    lag_query: str = ""
    lag_tolerance: int = Field(50, ge=0)  # jobs that may wait without counting as lag (a stream always has some)
    max_restarts: int = Field(0, ge=0, le=100)  # worker restarts tolerated during the watch


class ImagesSettings(_Section):
    tags: list[str] = Field(default_factory=lambda: ["v1", "v2"], min_length=1)
    base: str = ""


CheckPoint = Literal["gate", "step", "promote"]
JsonScalar = bool | int | float | str
_AT_THE_GATE: list[CheckPoint] = ["gate"]
Templated = Annotated[str, AfterValidator(check_placeholders)]  # {candidate}, {live}, {version} filled in


class _Check(_Section):
    """What every check has: a name for the history, where in the release it runs, and a timeout."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                      description="Your name for it, unique: the history, the events and the dashboard show it.")
    when: list[CheckPoint] = Field(default_factory=lambda: _AT_THE_GATE.copy(), min_length=1, description=(
        'Where it runs: "gate" (after the health gate, before any traffic), "step" (after each traffic '
        'step\'s verdict, at that step\'s weights), "promote" (before the last switch).'))

    @field_validator("when")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a point twice")
        return sorted(value, key=CHECK_POINTS.index)


class WebCheck(_Check):
    """An HTTP request that passes on its status and, optionally, a value in its JSON answer."""

    kind: Literal["web"]
    url: str = Field(description="http(s) URL; {candidate} and {live} are the colours' base URLs, {version} the "
                                 "release's version: \"{candidate}/health\".")
    method: Literal["GET", "POST", "PUT", "HEAD"] = Field("GET", description="The request's method.")
    headers: dict[str, Templated] = Field(default_factory=dict, description="Sent as written, placeholders filled in "
                                    "(X-Bluegreen-Probe: check is added, so the reference server does not "
                                    "record the call).")
    body: str = Field("", description="The request's body, placeholders filled in (empty: none).")
    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1, description="The statuses that pass.")
    pointer: str | None = Field(None, description="A JSON pointer into the answer (\"/status\", \"\" for all of "
                                                  "it), judged by equals, or by min and/or max.")
    equals: JsonScalar | None = Field(None, description="The value the pointer must find (types count: true is "
                                                        "not 1).")
    min: float | None = Field(None, description="The lowest number the pointer may find.")
    max: float | None = Field(None, description="The highest number the pointer may find.")
    timeout: Duration = Field(10.0, gt=0, le=3600, description="No complete answer by then: the check fails.")

    @field_validator("pointer")
    @classmethod
    def _json_pointer(cls, value: str | None) -> str | None:
        _pointer(value)
        if value and re.search(r"~(?![01])", value):
            raise ValueError("~ in a JSON pointer must be ~0 (a ~) or ~1 (a /)")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        check_placeholders(value)
        sample = fill_placeholders(value, {n: "http://127.0.0.1:1" if n != "version" else "v1"
                                           for n in CHECK_PLACEHOLDERS})
        if not re.match(r"^https?://[^/\s?#]+", sample):
            raise ValueError("must be an http:// or https:// URL, or start with {candidate} or {live} "
                             "(e.g. \"{candidate}/health\")")
        return value

    _body = field_validator("body")(check_placeholders)

    @model_validator(mode="after")
    def _condition_needs_pointer(self) -> WebCheck:
        conditions = [k for k in ("equals", "min", "max") if getattr(self, k) is not None]
        if conditions and self.pointer is None:
            raise ValueError(f"{', '.join(conditions)} judge a value in the answer: set pointer too "
                             "(a JSON pointer such as \"/status\")")
        if self.pointer is not None and not conditions:
            raise ValueError(f"pointer = {self.pointer!r} needs a condition: equals, min or max")
        if self.equals is not None and (self.min is not None or self.max is not None):
            raise ValueError("give either equals or min/max, not both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min = {self.min:g} is above max = {self.max:g}: nothing could pass")
        return self


class JobCheck(_Check):
    """A container run to completion: exit code 0 passes; its output is kept in the history."""

    kind: Literal["job"]
    image: str = Field("", description="The image to run (empty: the candidate's own), on the colours' engine "
                                       "with host networking.")
    command: list[str] = Field(default_factory=list, description="Its command, as a list (empty: the image's "
                               "own); placeholders filled in.")
    env: dict[str, Templated] = Field(default_factory=dict, description="More environment, placeholders filled in, "
                                "besides CANDIDATE_URL, LIVE_URL, CANDIDATE_VERSION, LIVE_VERSION, "
                                "BLUEGREEN_RELEASE and BLUEGREEN_CHECK_POINT.")
    timeout: Duration = Field(300.0, gt=0, le=86400, description="Still running then: killed and removed, and "
                                                                  "the check fails.")

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        if value and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$", value):
            raise ValueError("must be an image reference such as smoke-tests:1.4")
        return value

    @model_validator(mode="after")
    def _candidate_image_needs_a_command(self) -> JobCheck:
        if not self.image and not self.command:
            raise ValueError("a job in the candidate's image (image = \"\") needs a command: its own command "
                             "serves the model and never exits")
        return self


class ApprovalCheck(_Check):
    """The release waits here for a person: bluegreen promote (or the API, or the dashboard) approves,
    bluegreen abort rejects; with no answer within the timeout, on_timeout decides."""

    kind: Literal["approval"]
    timeout: Duration = Field(3600.0, gt=0, le=7 * 86400, description="How long the release waits for an answer.")
    on_timeout: Literal["rollback", "proceed"] = Field("rollback", description="No answer within the timeout: "
                                                      "\"rollback\" fails the release, \"proceed\" goes on.")


AnyCheck = WebCheck | JobCheck | ApprovalCheck
Check = Annotated[AnyCheck, Field(discriminator="kind")]
CHECK_KINDS = ("web", "job", "approval")


class ReleaseSettings(_Section):
    steps: list[int] = Field(default_factory=lambda: [10, 25, 50, 100])
    bake: Duration = 30.0
    warm_window: Duration = 900.0
    predict_checks: int = Field(3, ge=0, le=100)
    predict_body: str = ""
    checks: list[Check] = Field(default_factory=list)

    _steps = field_validator("steps")(check_steps)

    @model_validator(mode="after")
    def _check_names_unique(self) -> ReleaseSettings:
        seen: set[str] = set()
        for check in self.checks:
            if check.name in seen:
                raise ValueError(f"release.checks: two are named {check.name!r}; each needs its own name (the "
                                 "history and the events tell them apart by it)")
            seen.add(check.name)
        return self

    @field_validator("predict_body")
    @classmethod
    def _json_object(cls, value: str) -> str:
        import json

        if value == "":
            return value
        try:
            if not isinstance(json.loads(value), dict | list):
                raise ValueError
        except ValueError:
            raise ValueError("must be JSON, the body of a prediction request (empty: built from the holdout)") from None
        return value


class ReplaySettings(_Section):
    requests: int = Field(200, ge=0, le=10000)
    file: str = ""
    max_difference: float = Field(0.05, ge=0)
    budget: Duration = 5.0


class DriftSettings(_Section):
    warn: float = Field(0.1, ge=0)
    fail: float = Field(0.25, ge=0)
    min_predictions: int = Field(50, ge=1)


class PrometheusQuery(_Section):
    query: str = Field(min_length=1)
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> PrometheusQuery:
        if self.max is None and self.min is None:
            raise ValueError("needs max or min: the value a step may not pass")
        return self


class PrometheusSettings(_Section):
    url: str = ""
    timeout: Duration = 5.0
    targets_file: str = ""
    queries: dict[str, PrometheusQuery] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if value and not re.match(r"^https?://", value):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:9090")
        return value


class AnalysisSettings(_Section):
    # "auto": inferred from the holdout's labels (or the reference image's label when there is none).
    task: Literal["auto", "classification", "regression"] = "auto"
    source: Literal["proxy", "prometheus", "both"] = "proxy"
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_p95_ms: float = Field(500.0, gt=0)
    max_quality_drop: float = Field(0.05, ge=0, le=1)
    thresholds: dict[str, float] = Field(default_factory=dict)
    primary: str = ""
    min_requests: int = Field(20, ge=0)
    no_traffic: Literal["probe", "pause", "fail"] = "probe"
    probe_rate: float = Field(100.0, gt=0, le=1000)
    pause_timeout: Duration = 600.0
    sample_interval: Duration = 0.25
    confidence: float = Field(0.99, ge=0.8, lt=1)
    holdout: str = ""
    label_column: str = "label"
    replay: ReplaySettings = ReplaySettings()
    drift: DriftSettings = DriftSettings()
    prometheus: PrometheusSettings = PrometheusSettings()

    @model_validator(mode="after")
    def _known_metrics(self) -> AnalysisSettings:
        known = METRICS[self.task] if self.task != "auto" else METRICS["classification"] + METRICS["regression"]
        for name in [*self.thresholds, *([self.primary] if self.primary else [])]:
            if name not in known:
                what = "a" if self.task == "auto" else f"a {self.task}"
                raise ValueError(f"analysis.thresholds / analysis.primary: {name!r} is not {what} metric "
                                 f"(those are {', '.join(known)})")
        if self.source != "proxy" and (not self.prometheus.url or not self.prometheus.queries):
            raise ValueError(f"analysis.source = {self.source!r} needs analysis.prometheus.url and at least one "
                             "query in [analysis.prometheus.queries]")
        return self


class ServeSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = Field(9900, ge=1, le=65535)
    # The API token: from BLUEGREEN_SERVE__TOKEN or the file token_file, never the settings file.
    token: SecretStr = SecretStr("")
    token_file: str = ""
    events: int = Field(2000, ge=10, le=100000)
    # How often serve settles what the proxy did alone (failover) and retires the warm colour.
    watch_interval: Duration = 5.0
    # A rollback request (without "from") this soon after the last one is a repeat of it.
    rollback_dedupe: Duration = 5.0
    # How often the dashboard reads the deployment and each colour's traffic (one reading for every viewer).
    dashboard_interval: Duration = 1.0
    # The largest request body serve reads (bytes); a bigger one is refused with 413 while it streams.
    max_body: Size = Field(1024 * 1024, ge=1024)

    _host = field_validator("host")(_ip)


class AlertRule(_Section):
    name: str = ""
    # Alert labels to match: an exact value, or "~<regex>" for a regular expression.
    match: dict[str, str] = Field(min_length=1)
    action: Literal["rollback", "abort", "record"]

    @field_validator("match")
    @classmethod
    def _regexes_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            if pattern.startswith("~"):
                try:
                    re.compile(pattern[1:])
                except re.error as exc:
                    raise ValueError(f"{label} = {pattern!r} is not a regular expression: {exc}") from None
        return value


class AlertsSettings(_Section):
    rules: list[AlertRule] = Field(default_factory=list)


class DrillsSettings(_Section):
    schedule: str = ""  # a cron expression (5 fields); empty: drills only on demand
    max_rto: Duration = 5.0
    when_busy: Literal["wait", "skip"] = "skip"
    wait: Duration = 600.0
    weight: int = Field(10, ge=1, le=50)
    hold: Duration = 2.0

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if value and len(value.split()) != 5:
            raise ValueError("must be a cron expression of 5 fields, e.g. '0 3 * * *' (03:00 daily)")
        return value


class MonitorSettings(_Section):
    interval: Duration = 300.0  # 0: no post-release monitoring
    window: Duration = 3600.0
    min_labelled: int = Field(100, ge=1)
    max_quality_drop: float = Field(0.05, ge=0, le=1)
    rollback: bool = True


class NotifySettings(_Section):
    webhooks: list[str] = Field(default_factory=list)
    timeout: Duration = 5.0
    retries: int = Field(3, ge=0, le=10)

    @field_validator("webhooks")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://", url):
                raise ValueError(f"{url!r} must be an http:// or https:// URL")
        return value


class PgBackRestSettings(_Section):
    # The cluster pgBackRest archives: its data directory (SHOW data_directory, as a superuser).
    data_directory: str = ""
    socket_directory: str = "/var/run/postgresql"  # the local socket pgBackRest and psql connect on
    os_user: str = ""  # the cluster's owner, whom pgBackRest runs as; empty: the data directory's owner
    # Configuration, repository, logs and scratch restores; empty: /var/lib/pgbackrest/bluegreen-<stanza>.
    directory: str = ""
    stanza: str = ""  # empty: the project's name
    binary: str = "pgbackrest"
    bin_dir: str = ""  # PostgreSQL's server programs (pg_ctl); empty: /usr/lib/postgresql/<major>/bin
    # A WAL segment is archived at least this often while anything is written: the recovery point objective.
    archive_timeout: Duration = 60.0
    retention_full: int = Field(2, ge=1, le=100)  # full backups kept in the repository
    full_every_days: int = Field(7, ge=1, le=366)  # a scheduled backup is full when the newest full is older


class BackupsSettings(_Section):
    dir: Path = Path(".bluegreen/backups")
    keep: int = Field(10, ge=1)
    extra_files: list[Path] = Field(default_factory=list)
    lock_wait_timeout: Duration = 10.0
    # Backups on a timer, run by `bluegreen serve`: a cron expression (5 fields; empty: none). Each
    # scheduled set is verified by restoring it into scratch; scheduled sets are kept by age.
    schedule: str = ""
    keep_daily: int = Field(7, ge=0, le=366)
    keep_weekly: int = Field(4, ge=0, le=520)
    # Continuous archiving for point-in-time recovery: "off", "litestream" (SQLite databases) or
    # "pgbackrest" (PostgreSQL; see [backups.pgbackrest] and runbooks/pitr.md).
    pitr: Literal["off", "litestream", "pgbackrest"] = "off"
    litestream_binary: str = "litestream"
    replica: str = ""  # a Litestream replica URL; empty: a file replica in <state>/litestream/replica
    pgbackrest: PgBackRestSettings = PgBackRestSettings()

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if value and len(value.split()) != 5:
            raise ValueError("must be a cron expression of 5 fields, e.g. '30 2 * * *' (02:30 daily)")
        return value


class Settings(DerivedPaths, BaseSettings):
    """One deployment's settings; ``root`` is the directory relative paths are resolved against."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    project: str = Field("bluegreen", pattern=r"^[a-z0-9][a-z0-9_.-]{0,40}$")
    proxy: ProxySettings = ProxySettings()
    environments: EnvironmentsSettings = EnvironmentsSettings()
    database: DatabaseSettings = DatabaseSettings()
    state: StateSettings = StateSettings()
    docker: DockerSettings = DockerSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    workers: WorkersSettings = WorkersSettings()
    images: ImagesSettings = ImagesSettings()
    release: ReleaseSettings = ReleaseSettings()
    model: ModelSettings = ModelSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    backups: BackupsSettings = BackupsSettings()
    serve: ServeSettings = ServeSettings()
    alerts: AlertsSettings = AlertsSettings()
    drills: DrillsSettings = DrillsSettings()
    monitor: MonitorSettings = MonitorSettings()
    notify: NotifySettings = NotifySettings()
    root: Path = Field(default_factory=Path.cwd, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init values; the environment overrides them.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _the_gate_has_a_request(self) -> Settings:
        if self.model.profile != "reference" and not self.analysis.holdout and not self.release.predict_body:
            raise ValueError(f"model.profile = {self.model.profile!r} has no bundled holdout, so the health gate has "
                             "no request to send: set analysis.holdout (labelled rows, also used for quality) or "
                             "release.predict_body")
        return self

    @model_validator(mode="after")
    def _task_fits_the_labels(self) -> Settings:
        """The task set (or inferred) must fit the holdout's labels, and the metrics named must be the task's."""
        a = self.analysis
        if not a.holdout:
            return self
        try:
            labels = load_holdout(a.holdout, "classification", a.label_column, self.root).y
        except HoldoutError:
            return self  # the gate names an unreadable holdout when it needs it
        try:
            choice = choose_task(a.task, labels)
        except HoldoutError as exc:
            raise ValueError(str(exc)) from None
        for name in [*a.thresholds, *([a.primary] if a.primary else [])]:
            if name not in METRICS[choice.task]:
                raise ValueError(f"analysis.thresholds / analysis.primary: {name!r} is not a {choice.task} metric, "
                                 f"and the holdout {a.holdout} is judged as {choice.task} ({choice.reason})")
        return self

    @model_validator(mode="after")
    def _pitr_fits_the_database(self) -> Settings:
        if self.backups.pitr == "litestream" and not self.database.url.startswith("sqlite:///"):
            raise ValueError("backups.pitr = \"litestream\" archives a SQLite database; database.url is "
                             f"{'empty' if not self.database.url else 'not sqlite:///…'}")
        if self.backups.pitr == "pgbackrest":
            if not self.database.url.startswith(("postgresql://", "postgres://")):
                raise ValueError("backups.pitr = \"pgbackrest\" archives a PostgreSQL cluster; database.url is "
                                 f"{'empty' if not self.database.url else 'not postgresql://…'}")
            if not self.backups.pgbackrest.data_directory:
                raise ValueError("backups.pitr = \"pgbackrest\" needs backups.pgbackrest.data_directory, the "
                                 "cluster's data directory (SHOW data_directory, as a superuser)")
        return self

    @model_validator(mode="after")
    def _compose_runtime(self) -> Settings:
        if self.environments.compose and self.runtime.kind != "docker":
            raise ValueError("environments.compose runs each colour's services as containers on one engine: it "
                             "needs runtime.kind = \"docker\"")
        return self

    @model_validator(mode="after")
    def _swarm_extra_ports(self) -> Settings:
        if self.runtime.replicas > 1 and self.proxy.driver != "haproxy":
            raise ValueError("runtime.replicas > 1 needs proxy.driver = \"haproxy\" (its backend holds a server "
                             "per replica)")
        if self.runtime.kind == "swarm" and any(self.environments.color(c).ports for c in ("blue", "green")):
            raise ValueError("environments.<colour>.ports (extra named ports) are not supported with "
                             "runtime.kind = \"swarm\"")
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        r = self.runtime
        ports = {
            "proxy.port": self.proxy.port,
            "environments.blue.port": self.environments.blue.port,
            "environments.green.port": self.environments.green.port,
            **{f"environments.{c}.port + {i} * runtime.port_step (replica {i + 1})":
               self.environments.color(c).port + i * r.port_step
               for c in ("blue", "green") for i in range(1, r.replicas)},
            **{f"environments.{c}.ports.{name}": port for c in ("blue", "green")
               for name, port in self.environments.color(c).ports.items()},
        }
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port > 65535:
                raise ValueError(f"{key} = {port} is above 65535: lower runtime.port_step or runtime.replicas")
            if port in seen:
                raise ValueError(f"{key} = {port} is already used by {seen[port]}; each needs its own port")
            seen[port] = key
        return self


def load_settings(config: Path | None = None, raw: bytes | None = None) -> Settings:
    """Read, merge and validate the settings; raise ConfigError naming every bad key.

    ``raw`` is the file's content when the caller has read it already (the settings cache
    fingerprints exactly the bytes that were validated).
    """
    path = find_config(config)
    try:
        data = tomllib.loads(path.read_text() if raw is None else raw.decode())
    except FileNotFoundError:
        raise ConfigError(
            f"no settings file at {path}",
            "bluegreen init   (writes a commented bluegreen.toml), or pass --config FILE",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", f"fix the syntax in {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", f"fix the encoding of {path}") from None
    if "root" in data:
        raise ConfigError(f"unknown key root in {path.name}", "remove it; paths are relative to the file")
    if isinstance(data.get("serve"), dict) and "token" in data["serve"]:
        raise ConfigError(f"serve.token must not be written in {path.name}, where anyone who reads it sees it",
                          "set BLUEGREEN_SERVE__TOKEN, or name a file with serve.token_file   (runbooks/automation.md)")
    try:
        return Settings(root=path.resolve().parent, **data)
    except ValidationError as exc:
        raise ConfigError(
            _describe(exc, os.environ, path.name),
            f"fix {path.name} or the variable named; bluegreen init --force writes the commented default"
            "   (runbooks/settings.md)",
        ) from None


# Lists of tables told apart by a key: pydantic puts the tag (kind = "web") in an error's location,
# after the index, where the operator wrote no such key.
_TAGGED_LISTS: dict[tuple[str | int, ...], tuple[str, tuple[str, ...]]] = {("release", "checks"): ("kind", CHECK_KINDS)}


def _location(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    for i, part in enumerate(loc):
        if isinstance(part, int) and tuple(loc[:i]) in _TAGGED_LISTS and i + 1 < len(loc) \
                and loc[i + 1] in _TAGGED_LISTS[tuple(loc[:i])][1]:
            return (*loc[:i + 1], *loc[i + 2:])
    return loc


def _tag_problem(err: Any, key: str, source: str) -> str | None:
    """A table of a tagged list without a known tag: which key to set, and to what."""
    if err["type"] not in ("union_tag_not_found", "union_tag_invalid"):
        return None
    loc = tuple(err["loc"])
    tag, kinds = _TAGGED_LISTS.get(tuple(loc[:-1]), ("kind", ()))
    allowed = ", ".join(f'"{k}"' for k in kinds)
    if err["type"] == "union_tag_not_found":
        return f"{key} ({source}) needs {tag} = one of {allowed}"
    given = err["input"].get(tag) if isinstance(err["input"], dict) else None
    return f"{key}.{tag} = {given!r} ({source}): must be one of {allowed}"


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()


def _describe(exc: ValidationError, env: Mapping[str, str], filename: str) -> str:
    lines = []
    upper_env = {k.upper(): k for k in env}
    for err in exc.errors():
        loc = _location(tuple(err["loc"]))
        key = ".".join(str(part) for part in loc)
        env_name = _env_name(loc)
        source = f"from {upper_env[env_name]}" if env_name in upper_env else f"in {filename}"
        tag_problem = _tag_problem(err, key, source)
        if tag_problem is not None:
            lines.append(tag_problem)
        elif err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key} ({source})")
        elif err["type"] == "missing":
            lines.append(f"{key} is required ({source})")
        elif loc and isinstance(loc[-1], int) and isinstance(err["input"], dict):
            # A rule across one table of a list (a check): where it is, and its name when it has one.
            name = err["input"].get("name")
            lines.append(f"{key}" + (f" ({name})" if isinstance(name, str) else "") + ": "
                         + str(err["msg"]).removeprefix("Value error, "))
        elif not loc or isinstance(err["input"], dict):
            # A rule across a whole section: its message names the keys involved.
            lines.append(str(err["msg"]).removeprefix("Value error, "))
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            value = redact_url(err["input"]) if isinstance(err["input"], str) else err["input"]
            lines.append(f"{key} = {value!r} ({source}): {msg}")
    if len(lines) == 1:
        return f"invalid settings: {lines[0]}"
    return "invalid settings:\n  " + "\n  ".join(lines)
