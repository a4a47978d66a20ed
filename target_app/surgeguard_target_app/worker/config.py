"""How one worker runs: its consumer name, concurrency, retry policy and timings,
checked when built (``surgeguard_target_app.worker.server`` builds it from the settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from surgeguard_target_app.worker.retry_policy import RetryPolicy


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker runs. Times in seconds unless the name says ms."""

    consumer: str
    concurrency: int = 64
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    job_timeout_s: float = 10.0
    reclaim_idle_ms: int = 30_000
    shutdown_timeout_s: float = 5.0
    block_ms: int = 1_000  # longest XREADGROUP wait; well under the socket timeout
    promote_period_s: float = 0.05
    sample_period_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.consumer:
            raise ValueError("consumer must be a non-empty name")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.job_timeout_s <= 0:
            raise ValueError(f"job_timeout_s must be > 0 seconds, got {self.job_timeout_s}")
        # A job still running must not look abandoned, or another worker runs it too.
        if self.reclaim_idle_ms <= self.job_timeout_s * 1000:
            raise ValueError(
                f"reclaim idle ({self.reclaim_idle_ms} ms) must exceed the job timeout "
                f"({self.job_timeout_s * 1000:g} ms), or running jobs would be taken over"
            )

    @property
    def capacity(self) -> int:
        """Entries a worker holds at most: running, waiting for a slot, or settling.
        Twice the concurrency keeps every slot busy while finished jobs settle."""
        return 2 * self.concurrency

    @property
    def reclaim_period_s(self) -> float:
        """Seconds between reclaims: half the reclaim idle time, within [0.05, 5]."""
        return min(5.0, max(0.05, self.reclaim_idle_ms / 2000.0))
