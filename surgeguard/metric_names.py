"""Every metric a guarded replica (or the demo's worker) exports, named once.

The exporters (the library, the demo app and its worker) create their families with
these names and the controller reads them back with the same constants, so renaming
one is a change here that every side follows, never a string retyped in two places.

Each name is what a reader sees in a scrape. A counter's name ends in ``_total``:
prometheus_client strips that suffix when a counter is created and puts it back on
the sample, so passing these names to ``Counter`` (or ``CounterMetricFamily``) gives
exactly this sample name. A histogram's name is its family's: readers see it with
``_bucket``, ``_sum`` and ``_count`` appended.
"""

from __future__ import annotations

PREFIX = "surgeguard_"  # every family of ours starts with it

# -- the door: admission middleware and limiter (surgeguard.metrics) ------------------
# histogram {route, outcome}: admission to end of response, seconds (admitted requests)
REQUEST_DURATION_SECONDS = "surgeguard_request_duration_seconds"
# histogram, no labels: wait for a limiter slot, seconds (0 when none was needed)
QUEUE_WAIT_SECONDS = "surgeguard_queue_wait_seconds"
# counter {route, priority, outcome}: requests (outcome "rejected" for the turned away)
REQUESTS_TOTAL = "surgeguard_requests_total"
# counter {reason, priority}: requests turned away before any work
REJECTIONS_TOTAL = "surgeguard_rejections_total"
# gauge, no labels: admitted requests in flight now
INFLIGHT = "surgeguard_inflight"
# gauge, no labels: highest in-flight count over the last 1-2 s, requests
INFLIGHT_PEAK = "surgeguard_inflight_peak"
# gauge, no labels: requests waiting for a slot now
QUEUE_DEPTH = "surgeguard_queue_depth"
# (What the door enforces; with the inner loop on, its ceiling: INNER_LIMIT is then
# what is enforced.)
# gauge, no labels: the concurrency_limit knob now, requests
CONCURRENCY_LIMIT = "surgeguard_concurrency_limit"
# gauge, no labels: how many may wait now (the shed threshold), requests
QUEUE_LIMIT = "surgeguard_queue_limit"
# gauge, no labels: longest allowed wait for a slot now, seconds
QUEUE_TIMEOUT_SECONDS = "surgeguard_queue_timeout_seconds"

# -- the inner loop (surgeguard.inner.loop; SURGEGUARD_INNER_LOOP) ---------------------
# (The inner loop's, within the concurrency_limit knob; the knob's when it is off or
# the knob is pinned.)
# gauge, no labels: the concurrency limit the door enforces now, requests
INNER_LIMIT = "surgeguard_inner_limit"
# counter {direction}: changes of the inner loop's limit (cut|grow)
INNER_MOVES_TOTAL = "surgeguard_inner_moves_total"

# -- the penalty box (surgeguard.metrics) ----------------------------------------------
# gauge, no labels: requests held now (their client came back before its Retry-After)
PENALTY_BOX_HELD = "surgeguard_penalty_box_held"
# gauge, no labels: clients remembered with a Retry-After deadline
PENALTY_BOX_CLIENTS = "surgeguard_penalty_box_clients"
# gauge, no labels: most requests held at once before 429 + Connection: close
PENALTY_BOX_MAX_HELD = "surgeguard_penalty_box_max_held"
# counter, no labels: requests that were held
PENALTY_BOX_HOLDS_TOTAL = "surgeguard_penalty_box_holds_total"

# -- bulkheads (surgeguard.bulkhead) ---------------------------------------------------
# gauge {dependency}: calls in flight to a dependency now
DEPENDENCY_INFLIGHT = "surgeguard_dependency_inflight"
# gauge {dependency}: the bulkhead's limit now, calls
DEPENDENCY_LIMIT = "surgeguard_dependency_limit"
# gauge {dependency}: calls waiting for a bulkhead slot now
DEPENDENCY_WAITING = "surgeguard_dependency_waiting"
# histogram {dependency, outcome}: one call after its wait, seconds
DEPENDENCY_DURATION_SECONDS = "surgeguard_dependency_duration_seconds"
# counter {dependency, reason}: calls refused (full) or cut off (timeout)
DEPENDENCY_REJECTIONS_TOTAL = "surgeguard_dependency_rejections_total"
# The budget the controller divides; no sample for a dependency without one.
# gauge {dependency}: calls in flight the dependency honours across ALL replicas
DEPENDENCY_BUDGET = "surgeguard_dependency_budget"

# -- the event loop (surgeguard.loop_lag) ----------------------------------------------
# histogram, no labels: how late the loop's timer fired, seconds
EVENT_LOOP_LAG_SECONDS = "surgeguard_event_loop_lag_seconds"

# -- the control plane, as a replica applies it ----------------------------------------
# gauge, no labels: seconds since the replica last read the control plane
CONTROL_PLANE_STALENESS_SECONDS = "surgeguard_control_plane_staleness_seconds"
# gauge, no labels: version of the control document applied (-1: none yet)
CONTROL_PLANE_VERSION = "surgeguard_control_plane_version"
# gauge {replica}: always 1; names the replica (its key in the control plane)
REPLICA_INFO = "surgeguard_replica_info"
# gauge {mode}: 1 while a degradation mode is on, else 0
MODE_ACTIVE = "surgeguard_mode_active"
# gauge {knob}: 1 while the applied document pins the knob (to restore a lost document)
CONTROL_PINNED = "surgeguard_control_pinned"
# gauge, no labels: 1 while the applied document has the autopilot on
CONTROL_AUTOPILOT = "surgeguard_control_autopilot"

# -- what the app declares (surgeguard.control_metrics); the controller's catalogue ----
# gauge, no labels: the admitted p99 objective the replica's buckets are cut at, seconds
SLO_SECONDS = "surgeguard_slo_seconds"
# gauge {mode, description, door, auto_degrade, order}: always 1; a mode the app knows
MODE_INFO = "surgeguard_mode_info"
# gauge {knob, unit, description}: always 1; a knob the replica has
KNOB_INFO = "surgeguard_knob_info"
# gauge {knob}: lowest value the knob may take (its unit: KNOB_INFO's)
KNOB_MINIMUM = "surgeguard_knob_minimum"
# gauge {knob}: highest value the knob may take
KNOB_MAXIMUM = "surgeguard_knob_maximum"
# gauge {knob}: the knob's value at start, before any control document
KNOB_DEFAULT = "surgeguard_knob_default"
# gauge {knob}: the knob's value now, as applied
KNOB_VALUE = "surgeguard_knob_value"

# -- background jobs, as a replica samples its queues (the demo) -----------------------
# gauge {stream}: unfinished jobs (waiting plus in progress)
JOBS_PENDING = "surgeguard_jobs_pending"
# gauge {stream}: age of the oldest unfinished job, seconds (0 when empty)
JOBS_OLDEST_PENDING_AGE_SECONDS = "surgeguard_jobs_oldest_pending_age_seconds"
# gauge, no labels: entries in the dead-letter stream
JOBS_DEAD_LETTERS = "surgeguard_jobs_dead_letters"
# gauge, no labels: backlog past which signups get X-Degraded: jobs_backlog, jobs
JOBS_BACKLOG_LIMIT = "surgeguard_jobs_backlog_limit"

# -- the demo's worker (its own /metrics; also exports the four job gauges above) ------
# gauge, no labels: failed jobs waiting out their backoff
JOBS_RETRY_SCHEDULED = "surgeguard_jobs_retry_scheduled"
# counter {task}: jobs finished with their effect
JOBS_PROCESSED_TOTAL = "surgeguard_jobs_processed_total"
# counter {task}: failed attempts (each retried or given up)
JOBS_FAILED_TOTAL = "surgeguard_jobs_failed_total"
# counter {task}: jobs moved to the dead letters ("malformed": no job)
JOBS_DEAD_TOTAL = "surgeguard_jobs_dead_total"
# counter {task}: runs whose effect had already happened
JOBS_DUPLICATE_TOTAL = "surgeguard_jobs_duplicate_total"
# histogram {task}: one attempt's run time, seconds
JOB_DURATION_SECONDS = "surgeguard_job_duration_seconds"
# counter, no labels: entries taken over from a worker that held them too long
JOBS_RECLAIMED_TOTAL = "surgeguard_jobs_reclaimed_total"
# gauge, no labels: jobs running now in this worker
WORKER_CONCURRENCY_IN_USE = "surgeguard_worker_concurrency_in_use"
# gauge, no labels: jobs this worker may run at once
WORKER_CONCURRENCY_LIMIT = "surgeguard_worker_concurrency_limit"

# -- not ours: prometheus_client's ProcessCollector ------------------------------------
# counter, no labels: CPU the process used, seconds (the controller reads its rate)
PROCESS_CPU_SECONDS_TOTAL = "process_cpu_seconds_total"

# What the controller reads from a replica's scrape (sensing/signals.py, its loop and
# the Prometheus source): a replica that exports none of these cannot be steered.
CONTROLLER_READS: tuple[str, ...] = (
    REQUEST_DURATION_SECONDS,
    QUEUE_WAIT_SECONDS,
    REJECTIONS_TOTAL,
    INFLIGHT,
    INFLIGHT_PEAK,
    QUEUE_DEPTH,
    CONCURRENCY_LIMIT,
    QUEUE_LIMIT,
    QUEUE_TIMEOUT_SECONDS,
    INNER_LIMIT,
    PENALTY_BOX_HELD,
    PENALTY_BOX_HOLDS_TOTAL,
    DEPENDENCY_INFLIGHT,
    DEPENDENCY_LIMIT,
    DEPENDENCY_DURATION_SECONDS,
    DEPENDENCY_REJECTIONS_TOTAL,
    DEPENDENCY_WAITING,
    DEPENDENCY_BUDGET,
    EVENT_LOOP_LAG_SECONDS,
    CONTROL_PLANE_VERSION,
    MODE_ACTIVE,
    KNOB_VALUE,
    CONTROL_PINNED,
    CONTROL_AUTOPILOT,
    REPLICA_INFO,
    SLO_SECONDS,
    MODE_INFO,
    KNOB_INFO,
    KNOB_MINIMUM,
    KNOB_MAXIMUM,
    KNOB_DEFAULT,
    JOBS_PENDING,
    JOBS_OLDEST_PENDING_AGE_SECONDS,
    JOBS_DEAD_LETTERS,
    JOBS_BACKLOG_LIMIT,
    PROCESS_CPU_SECONDS_TOTAL,
)

# Every name of ours above (the ``surgeguard_*`` families a replica or worker exports).
EXPORTED: tuple[str, ...] = tuple(
    value
    for key, value in sorted(globals().items())
    if key.isupper() and key != "PREFIX" and isinstance(value, str) and value.startswith(PREFIX)
)

# -- the controller's own (surgeguard_controller.metrics), after EXPORTED: no replica
# exports these --------------------------------------------------------------------------
# gauge, no labels: replicas the controller tunes now (read at least once; an announced
# one until it leaves)
CONTROLLER_REPLICAS = "surgeguard_controller_replicas"

# The controller's budgets (surgeguard_controller.metrics; no replica exports these).
# gauge {dependency}: calls in flight the dependency honours across all replicas
CONTROLLER_BUDGET_TOTAL = "surgeguard_controller_budget_total"
# gauge {dependency, replica}: a replica's share of the budget as published, calls
CONTROLLER_BUDGET_SHARE = "surgeguard_controller_budget_share"
