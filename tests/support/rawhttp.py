"""The cheap load generator lives in the load-test package (benchmarks use it too);
tests import it from here by habit."""

from surgeguard_loadtest.rawhttp import Connection, LoadReport, Result, closed_loop, open_loop

__all__ = ["Connection", "LoadReport", "Result", "closed_loop", "open_loop"]
