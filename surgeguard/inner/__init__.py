"""The inner loop: a fast limit algorithm in each replica, bounded by the controller.

Every ``SURGEGUARD_INNER_WINDOW_MS`` (100 ms) the runtime (``loop.InnerLoop``) sums up
the admitted requests that finished (``samples.WindowSamples``, filled by the door),
steps the algorithm chosen by ``SURGEGUARD_INNER_LOOP`` (``algorithms``: pure, one
window in, one limit out) and sets the limiter's concurrency limit. The controller's
``concurrency_limit`` knob is the ceiling and its declared minimum the floor; a pinned
knob turns the inner loop off. ``off`` (the default) is the replica without it.
"""
