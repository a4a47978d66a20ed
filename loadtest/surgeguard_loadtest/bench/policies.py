"""The admission policies ``surgeguard bench`` compares, and what each one runs.

A policy is a replica's settings plus, for surgeguard's own loops and the controller's
other algorithm, a controller. The peers are what users would pick instead of
surgeguard: no limit, a static limit (the default 64, and the best one a short sweep
finds on the same stack), and the published in-process limiters (Envoy's adaptive
concurrency, Netflix's Vegas, AIMD and Gradient2), each run by the replica itself
(``SURGEGUARD_INNER_LOOP``) with no controller. Like their originals (Envoy's filter,
Netflix's ``SimpleLimiter``) they refuse a request over the limit at once: no queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from surgeguard.settings import ReplicaSettings, SettingsError

UNLIMITED = 10_000  # the "none" policy's limit: no limit at all


@dataclass(frozen=True)
class Policy:
    """``inner_loop``: the replica's ``SURGEGUARD_INNER_LOOP`` (None: not set, the
    replica's default); ``controller``: the controller's ``--algorithm`` (None: no
    controller); ``settings``: more replica settings (``SURGEGUARD_<NAME>``);
    ``surgeguard``: one of surgeguard's own (the ratio table compares these with the
    best of the others); ``tuned``: the limit comes from the sweep before the run."""

    name: str
    inner_loop: str | None = None
    controller: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    surgeguard: bool = False
    tuned: bool = False


NO_QUEUE = {"queue_limit": "0"}
# Netflix's AIMD cuts when a window's mean passes its timeout: tuned fairly, that is the
# target surgeguard steers to (the SLO of 250 ms less 20%).
NETFLIX_AIMD = {**NO_QUEUE, "inner_params": "timeout_s=0.2"}
# Envoy's minRTT interval has no default (60 s is common): 10 s re-measures within each
# phase of a run, so a minRTT taken on a cold replica does not stand for the whole run.
ENVOY = {**NO_QUEUE, "inner_params": "interval_s=10"}
POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("none", settings={"concurrency_limit": str(UNLIMITED), **NO_QUEUE}),
        Policy("static"),  # the replica's defaults: limit 64, queue 128
        Policy("static-best", settings=NO_QUEUE, tuned=True),
        Policy("aimd", controller="aimd", surgeguard=True),
        Policy("inner", inner_loop="aimd", controller="aimd", surgeguard=True),
        Policy("gradient", controller="gradient"),
        Policy("envoy", inner_loop="envoy-gradient", settings=ENVOY),
        Policy("vegas", inner_loop="vegas", settings=NO_QUEUE),
        # AIMDLimit's published timeout (5 s) is meant to be tuned: the same target.
        Policy("netflix-aimd", inner_loop="netflix-aimd", settings=NETFLIX_AIMD),
        Policy("gradient2", inner_loop="gradient2", settings=NO_QUEUE),
    )
}
INNER_LOOP_FIELD = "inner_loop"  # ReplicaSettings' field for SURGEGUARD_INNER_LOOP


def inner_loop_known(fields: Sequence[str] | None = None) -> bool:
    """Whether this replica has the ``SURGEGUARD_INNER_LOOP`` setting at all (``fields``:
    its settings' names, default ``ReplicaSettings``'). Settings ignore variables they
    do not know, so without this check a peer would silently run as the default."""
    names = ReplicaSettings.model_fields if fields is None else fields
    return INNER_LOOP_FIELD in names


def parse_policies(raw: str, *, inner_known: bool | None = None) -> list[str]:
    """The comma-separated policy names, checked before anything starts. Raises
    ``SettingsError`` naming an unknown one, or one that needs an inner loop this
    replica does not have (``inner_known``: default ``inner_loop_known()``)."""
    policies = [p.strip() for p in raw.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise SettingsError(
            f"unknown policy {unknown[0] if unknown else '(none given)'}: "
            f"choose from {', '.join(POLICIES)}"
        )
    needing = [p for p in policies if POLICIES[p].inner_loop is not None]
    if needing and not (inner_loop_known() if inner_known is None else inner_known):
        raise SettingsError(
            f"policy {needing[0]} needs the replica setting SURGEGUARD_INNER_LOOP, "
            "which this surgeguard does not have yet"
        )
    return policies


def replica_settings(policy: Policy, tuned_limit: int | None = None) -> dict[str, str]:
    """The policy's replica settings (names without the prefix); ``tuned_limit``: the
    sweep's limit for a tuned policy."""
    settings = dict(policy.settings)
    if policy.inner_loop is not None:
        settings[INNER_LOOP_FIELD] = policy.inner_loop
    if policy.tuned:
        if tuned_limit is None:
            raise ValueError(f"policy {policy.name} needs the tuned limit")
        settings["concurrency_limit"] = str(tuned_limit)
    return settings
