"""The verdict after a load run: each phase SURVIVED, DEGRADED or FAILED against the
SLO, and why. Pure: numbers in, a verdict out; no clock, no I/O.

A phase is judged on four things, each on its own, and gets the worst of them:

- **windows within the SLO**: the share of its one-second server windows whose admitted
  p99 is within the SLO (windows without an admitted request are not counted);
- **goodput against the baseline**: requests per second answered within the SLO,
  against what the service did in the baseline phase, before the load changed (not
  judged for the baseline itself, nor where there is no baseline);
- **deliberate 503s**: the share of admitted requests answered 503 on purpose (a
  saturated or switched-off dependency): admitted, then refused all the same;
- **/healthz**: probes that failed (an error, not 200, or slower than a liveness
  probe's timeout) and the probes' p99.

The bounds are ``Thresholds``; the README's load-test section states the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from surgeguard_loadtest.load.watch import Probe, Window
from surgeguard_loadtest.scenarios import PhaseSpan

SURVIVED, DEGRADED, FAILED = "SURVIVED", "DEGRADED", "FAILED"
LEVELS = (SURVIVED, DEGRADED, FAILED)  # best first


@dataclass(frozen=True)
class Thresholds:
    """What a phase needs to survive (``*_survived``) or at least to be only degraded
    (``*_degraded``); worse than the second is FAILED. Shares are 0..1."""

    windows_survived: float = 0.9  # share of windows within the SLO, at least
    windows_degraded: float = 0.5
    goodput_survived: float = 0.9  # goodput / the baseline's, at least
    goodput_degraded: float = 0.5
    deliberate_503_survived: float = 0.05  # deliberate 503s / admitted, at most
    deliberate_503_degraded: float = 0.5
    healthz_p99_survived_ms: float = 500.0  # the probes' p99, at most
    healthz_p99_degraded_ms: float = 1000.0
    # A probe slower than this failed (a kubelet's default liveness timeout is 1 s).
    healthz_timeout_ms: float = 1000.0
    # This many failed probes in a row is FAILED (a kubelet's default failureThreshold:
    # the replica would be restarted); fewer, but any, is DEGRADED.
    healthz_failed_in_a_row: int = 3

    def __post_init__(self) -> None:
        for name in ("windows", "goodput", "deliberate_503"):
            good, bad = getattr(self, f"{name}_survived"), getattr(self, f"{name}_degraded")
            for which, value in (("survived", good), ("degraded", bad)):
                if not 0 <= value <= 1:
                    raise ValueError(f"{name}_{which} must be in [0, 1], got {value}")
            # The degraded bound is the looser one: lower for "at least", higher for "at most".
            if (bad > good) if name != "deliberate_503" else (bad < good):
                raise ValueError(
                    f"{name}_degraded must be no stricter than {name}_survived ({good}), got {bad}"
                )
        if not 0 < self.healthz_p99_survived_ms <= self.healthz_p99_degraded_ms:
            raise ValueError(
                "healthz_p99_survived_ms must be in (0, healthz_p99_degraded_ms "
                f"{self.healthz_p99_degraded_ms:g}], got {self.healthz_p99_survived_ms:g}"
            )
        if self.healthz_timeout_ms <= 0:
            raise ValueError(f"healthz_timeout_ms must be > 0, got {self.healthz_timeout_ms:g}")
        if self.healthz_failed_in_a_row < 1:
            raise ValueError(
                f"healthz_failed_in_a_row must be >= 1, got {self.healthz_failed_in_a_row}"
            )


@dataclass(frozen=True)
class PhaseNumbers:
    """What a phase is judged on. Seconds into the run (Locust's clock); rates per
    second; counts of requests; ``healthz_p99_ms`` None without probes."""

    name: str
    start_s: float
    end_s: float
    windows: int  # one-second server windows in the phase
    judged: int  # of them, with admitted requests (a p99)
    within_slo: int  # of those, p99 within the SLO
    goodput_per_s: float  # mean over the windows
    admitted: float
    deliberate_503: float
    healthz_probes: int
    healthz_failed: int
    healthz_failed_in_a_row: int  # the longest run of failed probes
    healthz_p99_ms: float | None

    @property
    def within_slo_share(self) -> float | None:
        return self.within_slo / self.judged if self.judged else None

    @property
    def deliberate_503_share(self) -> float | None:
        return self.deliberate_503 / self.admitted if self.admitted > 0 else None

    def to_json(self, baseline: PhaseNumbers | None) -> dict[str, Any]:
        ratio = goodput_ratio(self, baseline)
        return {
            **asdict(self),
            "within_slo_share": _round(self.within_slo_share),
            "goodput_ratio": _round(ratio),
            "deliberate_503_share": _round(self.deliberate_503_share),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PhaseNumbers:
        """Back from ``to_json`` (the derived shares are computed again, not read)."""
        return cls(**{f.name: raw[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Verdict:
    phase: str
    level: str  # SURVIVED | DEGRADED | FAILED
    reasons: tuple[str, ...]

    @property
    def line(self) -> str:
        """ "spike: DEGRADED: 14 of 20 windows within the SLO (70%, needs 90%); ..." """
        return f"{self.phase}: {self.level}: {'; '.join(self.reasons)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "level": self.level,
            "reasons": list(self.reasons),
            "line": self.line,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def goodput_ratio(phase: PhaseNumbers, baseline: PhaseNumbers | None) -> float | None:
    """The phase's goodput over the baseline's (None: no baseline, the baseline itself,
    or a baseline that served nothing within the SLO)."""
    if baseline is None or baseline.name == phase.name or baseline.goodput_per_s <= 0:
        return None
    return phase.goodput_per_s / baseline.goodput_per_s


# -- measuring -------------------------------------------------------------------------


def _in(span: PhaseSpan, at: float) -> bool:
    return span.start_s <= at < span.end_s


def measure(
    span: PhaseSpan,
    windows: Sequence[Window],
    probes: Sequence[Probe],
    slo_ms: float,
    thresholds: Thresholds | None = None,
) -> PhaseNumbers:
    """The numbers of one phase. A window (``at``: its end) belongs to the phase of its
    middle; a probe to the phase it was sent in."""
    t = thresholds or Thresholds()
    mine = [w for w in windows if _in(span, w.at - 0.5)]
    judged = [w for w in mine if w.p99_ms is not None]
    # Windows are one second each: a sum of rates is a count.
    admitted = sum(w.admitted_per_s for w in mine)
    ours = [p for p in probes if _in(span, p.at)]
    failed = [not p.ok or p.ms > t.healthz_timeout_ms for p in ours]
    in_a_row = longest = 0
    for bad in failed:
        in_a_row = in_a_row + 1 if bad else 0
        longest = max(longest, in_a_row)
    return PhaseNumbers(
        name=span.name,
        start_s=span.start_s,
        end_s=span.end_s,
        windows=len(mine),
        judged=len(judged),
        within_slo=sum(1 for w in judged if w.p99_ms is not None and w.p99_ms <= slo_ms),
        goodput_per_s=round(sum(w.good_per_s for w in mine) / len(mine), 1) if mine else 0.0,
        admitted=round(admitted, 1),
        deliberate_503=round(sum(w.unavailable_per_s for w in mine), 1),
        healthz_probes=len(ours),
        healthz_failed=sum(failed),
        healthz_failed_in_a_row=longest,
        healthz_p99_ms=_p99([p.ms for p in ours]),
    )


def _p99(values: Sequence[float]) -> float | None:
    """The nearest-rank 99th percentile (None: no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)], 1)


# -- judging ---------------------------------------------------------------------------


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _at_least(value: float, survived: float, degraded: float) -> str:
    return SURVIVED if value >= survived else DEGRADED if value >= degraded else FAILED


def _at_most(value: float, survived: float, degraded: float) -> str:
    return SURVIVED if value <= survived else DEGRADED if value <= degraded else FAILED


def _needs(level: str, survived: str, degraded: str) -> str:
    """What the next level up needs ("" when survived)."""
    if level == DEGRADED:
        return f"needs {survived}"
    return f"needs {degraded} for DEGRADED" if level == FAILED else ""


def _criteria(
    phase: PhaseNumbers, baseline: PhaseNumbers | None, t: Thresholds
) -> list[tuple[str, str]]:
    """(level, reason) per criterion that applies to the phase."""
    out: list[tuple[str, str]] = []
    share = phase.within_slo_share
    if phase.windows == 0:
        out.append((FAILED, "no 1 s windows from the server (its /metrics was not read)"))
    elif share is None:
        out.append((FAILED, f"none of {phase.windows} windows admitted a request"))
    else:
        level = _at_least(share, t.windows_survived, t.windows_degraded)
        needs = _needs(level, _pct(t.windows_survived), _pct(t.windows_degraded))
        out.append(
            (
                level,
                f"{phase.within_slo} of {phase.judged} windows within the SLO "
                f"({_pct(share)}{', ' + needs if needs else ''})",
            )
        )
    ratio = goodput_ratio(phase, baseline)
    if ratio is not None and baseline is not None:
        level = _at_least(ratio, t.goodput_survived, t.goodput_degraded)
        needs = _needs(level, _pct(t.goodput_survived), _pct(t.goodput_degraded))
        # "3710% of the baseline's" says less than "37.1x" (a spike's baseline is small)
        times = f"{ratio:,.1f}x" if ratio >= 2 else _pct(ratio) + " of"
        of = f"{times} the baseline's {baseline.goodput_per_s:,.0f}/s"
        out.append(
            (
                level,
                f"goodput {phase.goodput_per_s:,.0f}/s, {of} ({needs})"
                if needs
                else f"goodput {phase.goodput_per_s:,.0f}/s ({of})",
            )
        )
    if (deliberate := phase.deliberate_503_share) is not None:
        level = _at_most(deliberate, t.deliberate_503_survived, t.deliberate_503_degraded)
        needs = _needs(
            level,
            f"at most {_pct(t.deliberate_503_survived)}",
            f"at most {_pct(t.deliberate_503_degraded)}",
        )
        out.append(
            (
                level,
                f"{_pct(deliberate)} of admitted were deliberate 503s"
                + (f" ({needs})" if needs else ""),
            )
        )
    if phase.healthz_probes:
        out.append(_healthz(phase, t))
    return out


def _healthz(phase: PhaseNumbers, t: Thresholds) -> tuple[str, str]:
    p99 = phase.healthz_p99_ms
    p99_text = "-" if p99 is None else f"{p99:,.0f} ms"
    if phase.healthz_failed_in_a_row >= t.healthz_failed_in_a_row:
        return (
            FAILED,
            f"{phase.healthz_failed_in_a_row} healthz probes failed in a row "
            f"({phase.healthz_failed} of {phase.healthz_probes} in all; a liveness probe "
            f"restarts the replica after {t.healthz_failed_in_a_row})",
        )
    level = SURVIVED
    if p99 is not None:
        level = _at_most(p99, t.healthz_p99_survived_ms, t.healthz_p99_degraded_ms)
    if phase.healthz_failed:
        return (
            DEGRADED if level == SURVIVED else level,
            f"{phase.healthz_failed} of {phase.healthz_probes} healthz probes failed "
            f"(needs none), p99 {p99_text}",
        )
    needs = _needs(
        level,
        f"at most {t.healthz_p99_survived_ms:,.0f} ms",
        f"at most {t.healthz_p99_degraded_ms:,.0f} ms",
    )
    return level, f"healthz p99 {p99_text}" + (f" ({needs})" if needs else ", none failed")


def judge(
    phase: PhaseNumbers, baseline: PhaseNumbers | None, thresholds: Thresholds | None = None
) -> Verdict:
    """The phase's verdict: the worst level of its criteria. The reasons are the
    criteria that kept it from a better level, worst first (all of them when it
    survived)."""
    criteria = _criteria(phase, baseline, thresholds or Thresholds())
    level = max((lvl for lvl, _ in criteria), key=LEVELS.index, default=SURVIVED)
    if level == SURVIVED:
        reasons = [reason for _, reason in criteria]
    else:
        short = [(lvl, r) for lvl, r in criteria if lvl != SURVIVED]
        reasons = [r for _, r in sorted(short, key=lambda c: -LEVELS.index(c[0]))]
    return Verdict(phase.name, level, tuple(reasons))


def judge_all(
    phases: Sequence[PhaseNumbers], baseline_name: str | None, thresholds: Thresholds | None = None
) -> list[Verdict]:
    """A verdict per phase, each against the named baseline phase."""
    baseline = next((p for p in phases if p.name == baseline_name), None)
    return [judge(p, baseline, thresholds) for p in phases]


def judge_summary(summary: Mapping[str, Any]) -> list[Verdict]:
    """The verdicts again from a run's ``summary.json`` (its phases, baseline and
    thresholds): what ``surgeguard load`` printed at the end."""
    slo = summary["slo"]
    thresholds = Thresholds(**slo["thresholds"])
    phases = [PhaseNumbers.from_json(p) for p in summary["phases"]]
    return judge_all(phases, slo.get("baseline_phase"), thresholds)


def lines(summary: Mapping[str, Any], indent: str = "") -> str:
    """What a run prints at its end: the SLO, then one line per phase (its verdict and
    why), from the summary's recorded verdicts."""
    head = f"{indent}verdict against the SLO (admitted p99 <= {summary['slo']['p99_ms']:g} ms):"
    return "\n".join([head, *(f"{indent}  {v['line']}" for v in summary["verdicts"])])
