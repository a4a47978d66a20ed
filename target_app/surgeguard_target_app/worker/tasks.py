"""The tasks a worker knows: task name -> the coroutine that runs one job of it.

A handler does the slow part (a send, a call) and returns the ``Effect`` to record;
it raises to fail the attempt. Which fields each task needs is ``job.TASK_FIELDS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from surgeguard_target_app.jobs.job import Effect, Job
from surgeguard_target_app.jobs.streams import ANALYTICS_COUNTS_KEY
from surgeguard_target_app.worker.mailer import Mailer

Handler = Callable[[Job], Awaitable[Effect]]


async def count_event(job: Job) -> Effect:
    """An analytics event adds one to its counter in ``surgeguard:analytics:counts``."""
    return Effect("hincrby", ANALYTICS_COUNTS_KEY, (job.fields["event"], "1"))


def build_handlers(mailer: Mailer) -> Mapping[str, Handler]:
    return {"welcome_email": mailer.send, "analytics": count_event}
