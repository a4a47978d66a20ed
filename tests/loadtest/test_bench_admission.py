"""The admission benchmark's pure parts: wrk output parsing and the run checks (no load)."""

from __future__ import annotations

import pytest

from loadtest.bench_admission import (
    ADMISSION_ON,
    REJECTION,
    WrkParseError,
    WrkResult,
    check_measurement,
    parse_wrk_output,
    ratios,
    wrk_command,
)

ALL_200 = """\
Running 5s test @ http://127.0.0.1:41235/ping
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.40ms    6.58ms 124.53ms   94.93%
    Req/Sec     7.38k     1.55k    9.34k    65.00%
  Latency Distribution
     50%    5.75ms
     75%    8.85ms
     90%   11.08ms
     99%   34.84ms
  36744 requests in 5.01s, 4.84MB read
Requests/sec:   7333.53
Transfer/sec:      0.97MB
"""

ALL_429 = """\
Running 5s test @ http://127.0.0.1:41237/ping
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   842.11us    1.96ms  21.27ms   80.94%
    Req/Sec    20.16k     3.72k   27.45k    60.00%
  Latency Distribution
     50%  612.00us
     75%    1.01ms
     90%    1.50ms
     99%    1.02s
  100243 requests in 5.01s, 25.86MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 100243
Requests/sec:  20008.58
Transfer/sec:      5.16MB
"""


def test_parses_a_run_without_non_2xx_line() -> None:
    result = parse_wrk_output(ALL_200)
    assert result.requests == 36744
    assert result.duration_s == pytest.approx(5.01)
    assert result.requests_per_s == pytest.approx(7333.53)
    assert result.non_2xx_3xx == 0
    assert result.socket_errors == {}
    assert result.latency_avg_ms == pytest.approx(7.40)
    assert result.latency_percentiles_ms == pytest.approx(
        {"p50": 5.75, "p75": 8.85, "p90": 11.08, "p99": 34.84}
    )


def test_parses_non_2xx_socket_errors_and_time_units() -> None:
    result = parse_wrk_output(ALL_429)
    assert result.requests == 100243
    assert result.non_2xx_3xx == 100243
    assert result.requests_per_s == pytest.approx(20008.58)
    assert result.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 1}
    assert result.socket_error_count == 4
    assert result.latency_avg_ms == pytest.approx(0.84211)
    assert result.latency_percentiles_ms["p50"] == pytest.approx(0.612)
    assert result.latency_percentiles_ms["p99"] == pytest.approx(1020.0)


def test_duration_in_minutes() -> None:
    text = ALL_200.replace("36744 requests in 5.01s", "36744 requests in 1.00m")
    assert parse_wrk_output(text).duration_s == pytest.approx(60.0)


def test_output_without_totals_is_an_error() -> None:
    with pytest.raises(WrkParseError):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_checks_accept_a_clean_admitted_run_and_flag_stray_statuses() -> None:
    clean = parse_wrk_output(ALL_200)
    assert check_measurement(ADMISSION_ON, clean, None, connections=50) == []
    stray = WrkResult(requests=100, duration_s=1.0, requests_per_s=100.0, non_2xx_3xx=2)
    assert check_measurement(ADMISSION_ON, stray, None, connections=50)


def test_checks_match_rejections_against_the_metric() -> None:
    result = WrkResult(requests=1000, duration_s=1.0, requests_per_s=1000.0, non_2xx_3xx=1000)
    # wrk drops up to one in-flight response per connection when it stops.
    assert check_measurement(REJECTION, result, 1000 + 50, connections=50) == []
    assert check_measurement(REJECTION, result, 1000 + 51, connections=50)
    assert check_measurement(REJECTION, result, 999, connections=50)
    partial = WrkResult(requests=1000, duration_s=1.0, requests_per_s=1000.0, non_2xx_3xx=990)
    assert check_measurement(REJECTION, partial, 990, connections=50)


def test_wrk_command_uses_one_thread_and_the_priority_header() -> None:
    command = wrk_command(
        "http://127.0.0.1:1/ping", REJECTION.headers, connections=64, duration_s=5.0
    )
    assert command[:5] == ["wrk", "-t1", "-c64", "-d5s", "--latency"]
    assert command[-3:] == ["-H", "X-Priority: sheddable", "http://127.0.0.1:1/ping"]


def test_ratios() -> None:
    got = ratios({"admission_on": 900.0, "admission_off": 1000.0, "rejection": 2700.0})
    assert got == pytest.approx({"admission_on_vs_off": 0.9, "rejection_vs_admitted": 3.0})
