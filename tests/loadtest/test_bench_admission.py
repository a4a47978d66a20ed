"""The admission benchmark's pure parts: wrk output parsing, checks and the summary (no load)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from surgeguard_loadtest.admission.measure import (
    Measurement,
    check_measurement,
    check_sample,
    process_cpu_s,
)
from surgeguard_loadtest.admission.report import (
    cpu_ratios,
    format_table,
    median_measured,
    ratios,
    summarize,
)
from surgeguard_loadtest.admission.targets import ADMISSION_ON, REJECTION
from surgeguard_loadtest.wrk import WrkParseError, WrkResult, parse_wrk_output, wrk_command

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


def test_server_cpu_per_request() -> None:
    wrk = WrkResult(requests=10_000, duration_s=5.0, requests_per_s=2000.0)
    measured = Measurement("admission_on", wrk, 0.9, 4.5, None, [])
    assert measured.cpu_us_per_request == pytest.approx(90.0)
    assert measured.server_cores == pytest.approx(0.18)
    assert measured.wrk_cores == pytest.approx(0.9)
    assert Measurement("admission_on", wrk, None, 1.0, None, []).cpu_us_per_request is None
    own = process_cpu_s(os.getpid())
    assert own is not None and own > 0


def _round(number: int, on: float, off: float, rejection: float) -> dict[str, Any]:
    rps = {"admission_on": on, "admission_off": off, "rejection": rejection}
    return {
        "round": number,
        "requests_per_s": rps,
        "ratios": ratios(rps),
        "measurements": [
            {
                "variant": name,
                "server_cpu_us_per_request": 1e6 / value,
                "server_cores": 1.0,
                "wrk_cores": 0.5,
            }
            for name, value in rps.items()
        ],
    }


def test_summary_uses_medians_and_the_table_shows_the_verdicts() -> None:
    rounds = [_round(1, 950, 1000, 3000), _round(2, 900, 1000, 2000), _round(3, 990, 990, 2600)]
    medians, med_ratios = summarize(rounds)
    assert medians == {"admission_on": 950, "admission_off": 1000, "rejection": 2600}
    assert med_ratios == pytest.approx(
        {"admission_on_vs_off": 0.95, "rejection_vs_admitted": 2600 / 950}
    )
    cpu = median_measured(rounds, "server_cpu_us_per_request")
    assert cpu["admission_off"] == pytest.approx(1000.0)
    report = {
        "rounds": rounds,
        "median_rps": medians,
        "ratios": med_ratios,
        "median_server_cpu_us_per_request": cpu,
        "median_server_cores": median_measured(rounds, "server_cores"),
        "median_wrk_cores": median_measured(rounds, "wrk_cores"),
        "ratios_from_server_cpu": cpu_ratios(cpu),
        "problems": ["round 2 rejection: 3 non-2xx/3xx of 4 responses, expected 4"],
    }
    table = format_table(report)
    assert "admission_on_vs_off       0.950  (goal >= 0.93)  PASS" in table
    assert "rejection_vs_admitted     2.737  (goal >= 2.5)  PASS" in table
    assert "checks: 1 FAILED" in table
    assert "2,600" in table
    assert "from server CPU/request: 0.950" in table
    assert "note:" not in table
    rounds[1]["measurements"][0]["server_cores"] = 0.5
    rounds[2]["measurements"][2].update(server_cores=0.7, wrk_cores=0.98)
    notes = [line for line in format_table(report).splitlines() if line.startswith("note:")]
    assert len(notes) == 2
    assert "rejection@3: wrk kept its own core busy" in notes[0]
    assert "admission_on@2: other load on the machine" in notes[1]


def test_cpu_ratios_invert_cost_per_request() -> None:
    got = cpu_ratios({"admission_on": 100.0, "admission_off": 90.0, "rejection": 25.0})
    assert got == pytest.approx({"admission_on_vs_off": 0.9, "rejection_vs_admitted": 4.0})
    assert cpu_ratios({"admission_on": None, "admission_off": 90.0, "rejection": 25.0}) is None


def test_the_sample_rejection_must_come_from_the_mode() -> None:
    assert check_sample(REJECTION, {"status": 429, "x_surgeguard_reason": "mode"}) == []
    assert check_sample(REJECTION, {"status": 429, "x_surgeguard_reason": "queue_full"})
    assert check_sample(REJECTION, {"status": 200, "x_surgeguard_reason": None})
    assert check_sample(ADMISSION_ON, {"status": 200, "x_surgeguard_reason": None}) == []
