"""The HAProxy driver against a real haproxy process and two real HTTP backends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bluegreen.orchestrator.analysis import steps as analysis
from bluegreen.orchestrator.errors import PortInUse, ProxyError
from bluegreen.orchestrator.proxy import Backend
from bluegreen.orchestrator.proxy.haproxy import HAProxy
from bluegreen.orchestrator.proxy.instances import Process, socket_path
from tests.conftest import free_ports, wait_for


def backend_server(color: str, port: int, delay: float = 0.0, backlog: int = 5) -> ThreadingHTTPServer:
    """A colour's server on ``port`` answering {"color": ...}, ``delay`` seconds late."""

    class Server(ThreadingHTTPServer):
        request_queue_size = backlog

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two sends: no delayed-ACK wait between them

        def do_GET(self) -> None:
            time.sleep(delay)
            body = json.dumps({"color": color}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[HAProxy]:
    """HAProxy in front of blue (answers at once) and green (answers after 60 ms)."""
    proxy_port, blue_port, green_port = free_ports(3)
    servers = [backend_server("blue", blue_port), backend_server("green", green_port, delay=0.06)]
    p = HAProxy(tmp_path / "haproxy", "127.0.0.1", proxy_port,
                [Backend("blue", "127.0.0.1", blue_port), Backend("green", "127.0.0.1", green_port)],
                check_interval_ms=200)
    yield p
    p.stop()
    for s in servers:
        s.shutdown()
        s.server_close()


def colors_seen(p: HAProxy, n: int) -> Counter[str]:
    with httpx.Client(base_url=f"http://127.0.0.1:{p.port}", timeout=5) as client:
        return Counter(client.get("/").json()["color"] for _ in range(n))


def both_up(p: HAProxy) -> bool:
    stats = p.stats()
    return all(stats[c].status == "UP" for c in ("blue", "green"))


def test_weights_are_applied_live_and_read_back_from_haproxy(proxy: HAProxy) -> None:
    proxy.start({"blue": 100, "green": 0})
    assert proxy.running()
    assert proxy.weights() == {"blue": 100, "green": 0}
    assert wait_for(lambda: both_up(proxy), timeout=5)
    assert colors_seen(proxy, 20) == Counter(blue=20)

    proxy.set_weights({"blue": 75, "green": 25})
    assert proxy.weights() == {"blue": 75, "green": 25}
    assert colors_seen(proxy, 40) == Counter(blue=30, green=10)  # smooth weighted round robin

    proxy.set_weights({"blue": 0, "green": 100})
    assert colors_seen(proxy, 20) == Counter(green=20)


def test_a_restart_keeps_the_weights_saved_in_the_config_file(proxy: HAProxy) -> None:
    proxy.start({"blue": 100, "green": 0})
    proxy.set_weights({"blue": 10, "green": 90})
    assert "server green 127.0.0.1:" in proxy.config_path.read_text()
    assert " weight 90 check" in proxy.config_path.read_text()
    proxy.stop()
    assert not proxy.running()
    # Restart haproxy from its file alone, as a service manager would.
    subprocess.run(["haproxy", "-D", "-f", str(proxy.config_path), "-p", str(proxy.pid_path)], check=True)
    assert wait_for(proxy.running, timeout=5)
    assert wait_for(lambda: _answers(proxy), timeout=5)
    assert proxy.weights() == {"blue": 10, "green": 90}


def _answers(p: HAProxy) -> bool:
    try:
        p.command("show info")
        return True
    except ProxyError:
        return False


def test_stats_count_each_colours_responses(proxy: HAProxy) -> None:
    proxy.start({"blue": 50, "green": 50})
    assert wait_for(lambda: both_up(proxy), timeout=5)
    colors_seen(proxy, 10)
    stats = proxy.stats()
    assert stats["blue"].responses_2xx + stats["green"].responses_2xx == 10
    assert stats["blue"].responses_2xx == 5
    assert stats["blue"].weight == 50


def test_a_taken_proxy_port_is_refused_before_anything_starts(proxy: HAProxy) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", proxy.port))
        taken.listen()
        with pytest.raises(PortInUse) as info:
            proxy.start({"blue": 100, "green": 0})
    assert f"port 127.0.0.1:{proxy.port} (proxy.port) is already in use" in info.value.message
    assert not proxy.running()
    assert not proxy.config_path.exists()


def test_bad_weights_are_refused_and_leave_the_old_ones(proxy: HAProxy) -> None:
    proxy.start({"blue": 100, "green": 0})
    with pytest.raises(ProxyError, match=r"weights must be 0\.\.100"):
        proxy.set_weights({"blue": 150, "green": 0})
    with pytest.raises(ProxyError, match="no backend named purple"):
        proxy.set_weights({"purple": 10})
    assert proxy.weights() == {"blue": 100, "green": 0}


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    p = HAProxy(tmp_path, "127.0.0.1", port, [Backend("blue", "127.0.0.1", 1)], binary="no-such-haproxy")
    with pytest.raises(ProxyError) as info:
        p.start({"blue": 100})
    assert info.value.message == "the haproxy binary 'no-such-haproxy' is not installed"


def test_a_long_state_path_gets_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    path = socket_path(deep)
    assert len(str(path)) <= 97 and path.parent.parent == Path("/tmp")  # a private folder of its own in /tmp
    assert socket_path(deep) == path  # stable, so another process finds the same socket


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("length", [97, 98])
def test_haproxy_starts_whatever_the_state_paths_length(tmp_path: Path, length: int, processes: int) -> None:
    """HAProxy refuses socket paths over 97 bytes; a path at the limit stays put, one over moves to /tmp.
    A second process's socket is named as long as the first's, so it goes where the first does."""
    base = tmp_path / "d"
    directory = base.with_name("d" + "x" * (length - len(str(base / "admin.sock"))))
    assert len(str(directory / "admin.sock")) == length
    proxy_port, blue_port, green_port = free_ports(3)
    p = HAProxy(directory, "127.0.0.1", proxy_port,
                [Backend("blue", "127.0.0.1", blue_port), Backend("green", "127.0.0.1", green_port)],
                processes=processes)
    try:
        p.start({"blue": 100, "green": 0})
        assert p.weights() == {"blue": 100, "green": 0}
        assert {(q.socket_path.parent == directory) for q in p.processes} == {length == 97}
        assert all(q.answers() for q in p.processes)
    finally:
        p.stop()


def test_a_colour_is_up_only_when_haproxys_own_check_passed_on_every_replica(tmp_path: Path) -> None:
    """A colour of two servers (a swarm colour's replicas), one not listening: HAProxy holds it DOWN,
    so the colour is not up; once it listens, the colour is up at HAProxy's next check."""
    proxy_port, blue_port, green_port, green2_port = free_ports(4)
    servers = [backend_server("blue", blue_port), backend_server("green", green_port)]
    p = HAProxy(tmp_path / "haproxy", "127.0.0.1", proxy_port,
                [Backend("blue", "127.0.0.1", blue_port),
                 Backend("green", "127.0.0.1", green_port, replicas=2, port_step=green2_port - green_port)],
                check_interval_ms=200)
    try:
        p.start({"blue": 100, "green": 0})
        assert p.wait_servers_up("blue", 5)
        assert wait_for(lambda: p.stats()["green"].replicas[1].status == "DOWN", timeout=5)
        assert not p.wait_servers_up("green", 0)
        assert not p.wait_servers_up("green", 0.3)
        servers.append(backend_server("green", green2_port))
        assert p.wait_servers_up("green", 5)
        assert [r.status for r in p.stats()["green"].replicas] == ["UP", "UP"]
        with pytest.raises(ProxyError, match="no backend named purple"):
            p.wait_servers_up("purple", 0)
    finally:
        p.stop()
        for s in servers:
            s.shutdown()
            s.server_close()


def worker_pid(p: HAProxy) -> int:
    return int(next(line.split()[1] for line in p.command("show info").splitlines() if line.startswith("Pid:")))


def timed(before: dict[str, tuple[tuple[float, float], ...]], after: dict[str, tuple[tuple[float, float], ...]],
          color: str) -> tuple[int, float | None]:
    """Requests to ``color`` the proxy timed between two readings, and their p95 in ms."""
    p95 = analysis.quantile(0.95, before[color], after[color])
    return analysis.observed(before[color], after[color]), None if p95 is None else p95 * 1000


def test_haproxy_times_each_colours_requests_across_a_reload_and_a_restart(proxy: HAProxy) -> None:
    proxy.start({"blue": 50, "green": 50})
    assert wait_for(lambda: both_up(proxy), timeout=5)
    first = proxy.latency()
    colors_seen(proxy, 20)
    second = proxy.latency()
    assert timed(first, second, "blue")[0] == 10
    count, p95 = timed(first, second, "green")
    assert count == 10 and p95 is not None and p95 >= 60  # green answers 60 ms late, or later
    assert proxy.latency() == second  # read again: nothing is counted twice

    old = worker_pid(proxy)
    proxy.supervisor.send_signal(signal.SIGUSR2)  # a reload: a new worker, with a new, empty ring
    assert wait_for(lambda: proxy.wait_ready(1) and worker_pid(proxy) != old, timeout=10)
    assert wait_for(lambda: not Path(f"/proc/{old}").exists(), timeout=10)  # the old worker has finished
    colors_seen(proxy, 20)
    third = proxy.latency()
    assert timed(second, third, "green")[0] == 10 and timed(second, third, "blue")[0] == 10

    proxy.stop()
    proxy.start({"blue": 50, "green": 50})
    assert wait_for(lambda: both_up(proxy), timeout=5)
    colors_seen(proxy, 20)
    fourth = proxy.latency()
    assert timed(third, fourth, "green")[0] == 10 and timed(third, fourth, "blue")[0] == 10


def test_a_replicated_colours_timings_are_summed_over_its_servers(tmp_path: Path) -> None:
    proxy_port, blue_port, first, second = free_ports(4)
    low, high = sorted((first, second))
    servers = [backend_server("blue", blue_port), backend_server("green", low), backend_server("green", high)]
    p = HAProxy(tmp_path / "haproxy", "127.0.0.1", proxy_port,
                [Backend("blue", "127.0.0.1", blue_port), Backend("green", "127.0.0.1", low, 2, high - low)])
    try:
        p.start({"blue": 0, "green": 100})
        before = p.latency()
        assert colors_seen(p, 20) == Counter(green=20)
        assert timed(before, p.latency(), "green")[0] == 20  # both replicas' requests, as one colour
        assert p.stats()["green"].responses_2xx == 20
    finally:
        p.stop()
        for s in servers:
            s.shutdown()
            s.server_close()


def kill_process(process: Process) -> None:
    """kill -9 of a process-supervised HAProxy's master (its worker leaves with it)."""
    pid = int(process.pid_path.read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not process.running(), timeout=10)


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[HAProxy]:
    """A deployment's proxy of two HAProxy processes on one port (process supervisor), colours up."""
    proxy_port, blue_port, green_port = free_ports(3)
    servers = [backend_server("blue", blue_port), backend_server("green", green_port)]
    p = HAProxy(tmp_path / "haproxy", "127.0.0.1", proxy_port,
                [Backend("blue", "127.0.0.1", blue_port), Backend("green", "127.0.0.1", green_port)],
                check_interval_ms=200, processes=2)
    p.start({"blue": 100, "green": 0}, "green")
    try:
        assert p.wait_servers_up("blue", 5) and p.wait_servers_up("green", 5)
        yield p
    finally:
        p.stop()
        for s in servers:
            s.shutdown()
            s.server_close()


def test_two_processes_hold_the_same_weights_and_a_restarted_one_reads_the_changes_made_while_it_was_dead(
        two_processes: HAProxy) -> None:
    p = two_processes
    first, second = p.processes
    assert first.answers() and second.answers() and first.socket_path != second.socket_path
    p.set_weights({"blue": 40, "green": 60})
    assert p._weights_of(first) == p._weights_of(second) == {"blue": 40, "green": 60}
    kill_process(first)
    assert p.running() and p.stopped_processes() == ["haproxy process 1 of 2"]
    assert colors_seen(p, 10) == Counter(blue=4, green=6)  # the other serves
    p.set_weights({"blue": 0, "green": 100})  # saved; the dead process is not waited for
    p.set_standby("blue")
    assert p.reconfigure()  # starts it again, from the saved file
    assert p.stopped_processes() == []
    assert p._weights_of(first) == p._weights_of(second) == {"blue": 0, "green": 100}
    assert p._standby_of(first) == p._standby_of(second) == "blue"
    assert not p.reconfigure()  # nothing left to do


def test_a_process_that_disagrees_is_set_from_the_saved_file_when_read(two_processes: HAProxy) -> None:
    """A change cut short between the two processes (a crash) leaves them apart; the saved file, which
    every change is written to first, decides."""
    p = two_processes
    second = p.processes.all[1]
    second.command("set weight models/blue 55")
    second.command("set server models/blue-standby state ready")
    assert p.weights() == {"blue": 100, "green": 0}
    assert p._weights_of(second) == {"blue": 100, "green": 0}
    assert p.standby() == "green" and p._standby_of(second) == "green"


def test_counters_of_two_processes_are_summed_and_do_not_go_back_when_one_restarts(two_processes: HAProxy) -> None:
    """Each new connection reaches one process or the other; the counters are the sum. A process killed
    and started again counts from zero: what it had counted is carried, so a step's window (counters
    after minus before) never loses requests or errors to a restart."""
    p = two_processes
    first, second = p.processes
    url = f"http://127.0.0.1:{p.port}/"

    def each_served(n: int) -> bool:
        httpx.get(url, timeout=5)  # a new connection each time: the kernel picks a process
        return all(p._stats_of(q)["blue"].responses_2xx >= n for q in (first, second))

    assert wait_for(lambda: each_served(3), timeout=30)
    before = p.stats()["blue"].responses_2xx
    assert before == sum(p._stats_of(q)["blue"].responses_2xx for q in (first, second))
    kill_process(first)
    assert p.stats()["blue"].responses_2xx == before  # the dead one's last reading still counts
    assert p.reconfigure()
    assert p._stats_of(first)["blue"].responses_2xx == 0
    for _ in range(10):
        assert httpx.get(url, timeout=5).status_code == 200
    assert p.stats()["blue"].responses_2xx == before + 10
