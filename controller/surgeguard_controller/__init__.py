"""The feedback controller: signals from metrics, limit algorithms, the loop, its API."""
