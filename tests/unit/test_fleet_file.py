"""The fleet file: what it accepts, the exact words of each refusal, and the routes it gives the proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.orchestrator.core.fleet import _block, _without
from bluegreen.orchestrator.errors import ConfigError
from bluegreen.orchestrator.proxy.fleet import Route, SharedHAProxy
from bluegreen.orchestrator.settings.fleet import FLEET_TEMPLATE, Member, find_fleet, load_fleet, parse_text

FRAUD = '\n[[deployment]]\nname = "fraud"\ndir = "fraud"\nhosts = ["fraud.example.com"]\n'


def fleet_text(*blocks: str, head: str = FLEET_TEMPLATE) -> str:
    return head + "".join(blocks)


def refusal(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_text(text, tmp_path / "fleet.toml")
    return info.value.message


def test_the_commented_template_loads_with_its_defaults_and_no_deployment(tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_text(FLEET_TEMPLATE)
    fleet = load_fleet(tmp_path / "fleet.toml")
    assert (fleet.proxy.port, fleet.proxy.supervisor, fleet.proxy.processes, fleet.serve.port, fleet.alert_label,
            fleet.members) == (8080, "container", 2, 9900, "deployment", ())
    assert fleet.proxy_dir == tmp_path / ".bluegreen-fleet"


def test_members_and_their_routes(tmp_path: Path) -> None:
    fleet = parse_text(fleet_text(FRAUD, '\n[[deployment]]\nname = "churn"\ndir = "/srv/churn"\nprefix = "/churn"\n'
                                         'strip_prefix = false\n'), tmp_path / "fleet.toml")
    fraud, churn = fleet.members
    assert fraud == Member("fraud", "fraud", ("fraud.example.com",), "", True)
    assert (churn.prefix, churn.strip_prefix, fleet.directory(churn)) == ("/churn", False, Path("/srv/churn"))
    assert fleet.directory(fraud) == (tmp_path / "fraud").resolve()
    assert fleet.member_at(tmp_path / "fraud") == fraud and fleet.member_at(tmp_path) is None
    assert fraud.describe() == "fraud.example.com" and churn.describe() == "any host at /churn"


@pytest.mark.parametrize(("block", "message"), [
    ('\n[proxy]\nport = 0\n', "proxy.port = 0: must be a whole number in 1..65535"),
    ('\n[proxy]\nprocesses = 5\n', "proxy.processes = 5: must be a whole number in 1..4"),
    ('\n[[deployment]]\nname = "a"\ndir = "a"\nhosts = ["a"]\nspeed = 1\n',
     "unknown key deployment[0].speed (known: dir, hosts, name, prefix, strip_prefix)"),
    ('\n[[deployment]]\nname = "Fraud"\ndir = "f"\nhosts = ["f"]\n',
     "deployment[0].name = 'Fraud': must be a project name (lower-case letters, digits, - and _)"),
    ('\n[[deployment]]\nname = "f"\ndir = "f"\nhosts = ["https://f.example.com"]\n',
     "deployment[0].hosts: 'https://f.example.com' is not a host name (no scheme, port or path)"),
    ('\n[[deployment]]\nname = "f"\ndir = "f"\nprefix = "/f/"\n',
     "deployment[0].prefix = '/f/': must be a path such as /fraud (starting with /, no trailing /"),
    ('\n[[deployment]]\nname = "f"\ndir = "f"\n', "deployment 'f' has neither hosts nor prefix"),
    (FRAUD + FRAUD.replace('dir = "fraud"', 'dir = "other"'), "names deployment 'fraud' twice"),
    (FRAUD + FRAUD.replace('name = "fraud"', 'name = "twin"'), "deployments 'fraud' and 'twin' of fleet.toml share"),
    (FRAUD + '\n[[deployment]]\nname = "b"\ndir = "b"\nhosts = ["FRAUD.example.com"]\n',
     "deployments 'fraud' and 'b' both claim host fraud.example.com: a request could not tell them apart"),
])
def test_each_refusal_names_the_key_the_value_and_the_rule(block: str, message: str, tmp_path: Path) -> None:
    head = FLEET_TEMPLATE if not block.startswith("\n[proxy]") else FLEET_TEMPLATE.replace("[proxy]\n", "[old]\n", 1)
    text = fleet_text(block, head=head) if not block.startswith("\n[proxy]") else block
    assert message in refusal(text, tmp_path)


def test_a_missing_fleet_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_fleet(tmp_path / "nowhere.toml")
    assert info.value.message == f"no fleet file at {tmp_path / 'nowhere.toml'}"
    assert info.value.hint.startswith("bluegreen fleet init DIR")


def test_the_fleet_file_is_found_by_option_then_variable_then_home(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("BLUEGREEN_FLEET", raising=False)
    assert find_fleet(None) == tmp_path / "config" / "bluegreen" / "fleet.toml"
    monkeypatch.setenv("BLUEGREEN_FLEET", "/etc/f.toml")
    assert find_fleet(None) == Path("/etc/f.toml")
    assert find_fleet(Path("x.toml")) == Path("x.toml")


def test_routes_go_most_specific_first_and_unrouted_requests_get_404(tmp_path: Path) -> None:
    """Host and prefix, then host, then the longest prefix: /ml/fraud is tried before /ml."""
    routes = [Route("short", (), "/ml"), Route("host", ("a.example.com",)), Route("long", (), "/ml/fraud"),
              Route("both", ("a.example.com",), "/x")]
    proxy = SharedHAProxy(tmp_path, "127.0.0.1", 8080, routes)
    proxy.conf_dir.mkdir()
    for r in routes[:3]:  # "both" has no backend file yet: no route to it
        proxy.fragment_path(r.name).write_text(f"backend be_{r.name}\n")
    text = proxy.render()
    uses = [line.split()[1] for line in text.splitlines() if line.strip().startswith("use_backend")]
    assert uses == ["be_host", "be_long", "be_short"]
    assert "    acl long_path path /ml/fraud\n    acl long_path path_beg /ml/fraud/\n" in text
    assert "    acl host_host hdr(host),field(1,:) -i a.example.com\n" in text
    assert "default_backend fleet_unrouted" in text and "http-request return status 404" in text


def test_removing_a_deployment_keeps_the_rest_of_the_file_and_its_comments() -> None:
    church = _block(Member("churn", "churn", (), "/churn", False))
    text = FLEET_TEMPLATE + FRAUD + church + "\n# a note of the operator's\n"
    without = _without(text, "fraud")
    assert FRAUD not in without and church in without and "# a note of the operator's" in without
    assert without.startswith(FLEET_TEMPLATE)
    assert _without(text, "nobody") == text


def test_the_listener_names_each_process_its_own_socket_when_there_are_several(tmp_path: Path) -> None:
    """One process: the socket's path, as always. Several: the variable each is started with, whose
    default is the first one's path (so a process started without it, as before, keeps its socket)."""
    one = SharedHAProxy(tmp_path, "127.0.0.1", 8080, [], processes=1)
    assert f"    stats socket {tmp_path / 'admin.sock'} mode 600 level admin\n" in one.render()
    two = SharedHAProxy(tmp_path, "127.0.0.1", 8080, [], processes=2)
    assert (f'    stats socket "${{BLUEGREEN_HAPROXY_SOCKET-{tmp_path / "admin.sock"}}}" mode 600 level admin\n'
            in two.render())
    first, second = two.processes
    assert (second.socket_path, second.pid_path, second.env) == (
        tmp_path / "adm-2.sock", tmp_path / "haproxy-2.pid", {"BLUEGREEN_HAPROXY_SOCKET": str(tmp_path / "adm-2.sock")})
    assert len(str(second.socket_path)) == len(str(first.socket_path))
