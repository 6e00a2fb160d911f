"""The proxy's request lines turned into latency histograms, and the p95 judged from them."""

from __future__ import annotations

import math

from bluegreen.orchestrator.analysis import steps as analysis
from bluegreen.orchestrator.proxy.timings import Histogram, RingReader, haproxy_timing, nginx_timing


def test_an_haproxy_line_gives_the_server_and_its_connect_answer_and_body_time() -> None:
    assert haproxy_timing("bgt 4242 17 green-2 1 700 3 200") == ("green-2", 0.704)
    # Tc and Td of -1 (a reused connection's connect, no body) add nothing; Tr of -1: never answered.
    assert haproxy_timing("bgt 4242 18 blue 0 12 -1 200") == ("blue", 0.012)
    assert haproxy_timing("bgt 4242 19 blue 0 -1 -1 503") is None
    assert haproxy_timing("bgt 4242 20 blue -1 -1 -1 503") is None
    # HAProxy's own notices go to the same ring, and a request no server took has no server.
    assert haproxy_timing("Proxy models_in stopped (cumulated conns: FE: 4, BE: 0).") is None
    assert haproxy_timing("bgt 4242 21 <NOSRV> -1 -1 -1 503") is None


def test_an_nginx_upstream_time_is_read_and_a_missing_one_is_not() -> None:
    assert nginx_timing("0.704") == 0.704
    assert nginx_timing("-") is None


def test_observations_fill_cumulative_buckets_a_value_on_a_bound_belonging_to_it() -> None:
    h = Histogram()
    for seconds in (0.0, 0.001, 0.0011, 0.7, 99.0):
        h.observe(seconds)
    buckets = dict(h.cumulative())
    assert buckets[0.001] == 2  # 0 and exactly 1 ms (Prometheus' le: less than or equal)
    assert buckets[0.0025] == 3
    assert buckets[0.5] == 3 and buckets[0.75] == 4
    assert buckets[10.0] == 4 and buckets[math.inf] == 5
    assert h.count == 5


def test_each_ring_line_is_counted_once_and_a_new_ring_is_read_from_its_start() -> None:
    reader = RingReader()
    first = "bgt 10 1 blue 0 1 0 200\nbgt 10 2 green 0 2 0 200\n\n"
    assert reader.new_lines(first) == ["bgt 10 1 blue 0 1 0 200", "bgt 10 2 green 0 2 0 200"]
    assert reader.new_lines(first) == []  # nothing written since
    # Lines written since, and a notice that is not a request's.
    grown = first.rstrip("\n") + "\nProxy models_in started.\nbgt 10 3 green 0 3 0 200\n\n"
    assert reader.new_lines(grown) == ["bgt 10 3 green 0 3 0 200"]
    # The ring wrapped: the oldest lines are gone, the last one read is still there.
    wrapped = "bgt 10 3 green 0 3 0 200\nbgt 10 4 green 0 4 0 200\n\n"
    assert reader.new_lines(wrapped) == ["bgt 10 4 green 0 4 0 200"]
    # A reloaded HAProxy: a new process with an empty ring, then its first requests.
    assert reader.new_lines("\n") == []
    assert reader.new_lines("bgt 11 0 green 0 5 0 200\n\n") == ["bgt 11 0 green 0 5 0 200"]


def snapshot(server: tuple[tuple[float, float], ...], proxy: tuple[tuple[float, float], ...],
             responses: int = 0) -> analysis.Snapshot:
    return analysis.Snapshot(responses=responses, errors=0, buckets=server, proxy_buckets=proxy)


def test_without_a_server_histogram_the_step_is_judged_on_the_proxys_timings() -> None:
    before, after = Histogram(), Histogram()
    for _ in range(100):
        after.observe(0.704)
    verdict = analysis.judge(snapshot((), before.cumulative()), snapshot((), after.cumulative(), responses=100),
                             max_error_rate=0.01, max_p95_ms=500, min_requests=20)
    assert not verdict.ok
    assert verdict.p95_source == "proxy" and verdict.p95_timed == 100
    assert verdict.reasons == ["p95 latency 738ms (proxy) is above 500ms"]
    assert "p95 738ms (proxy)" in verdict.summary()
    early = analysis.conclusive_failure(snapshot((), before.cumulative()), snapshot((), after.cumulative()),
                                        0.01, 500, 0.99, 20)
    assert early == ["p95 latency 738ms (proxy) is above 500ms (100 requests)"]


def test_a_server_histogram_is_judged_when_it_has_the_requests_and_the_proxys_figure_is_shown_beside_it() -> None:
    server_before, server_after, proxy_after = Histogram(), Histogram(), Histogram()
    for _ in range(100):
        server_after.observe(0.004)
        proxy_after.observe(0.012)
    verdict = analysis.judge(snapshot(server_before.cumulative(), Histogram().cumulative()),
                             snapshot(server_after.cumulative(), proxy_after.cumulative(), responses=100),
                             max_error_rate=0.01, max_p95_ms=500, min_requests=20)
    assert verdict.ok and verdict.p95_source == "server histogram"
    assert verdict.p95_by_source == {"server histogram": verdict.p95_ms, "proxy": verdict.p95_by_source["proxy"]}
    assert "p95 5ms (server histogram), proxy 15ms" in verdict.summary()


def test_with_no_timings_at_all_the_p95_says_so() -> None:
    verdict = analysis.judge(snapshot((), ()), snapshot((), (), responses=30), 0.01, 500, 20)
    assert verdict.ok and verdict.p95_ms is None and verdict.p95_source == ""
    assert "p95 n/a" in verdict.summary()
