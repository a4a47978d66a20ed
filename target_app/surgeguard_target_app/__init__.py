"""The demo service built on surgeguard: routes, simulated dependencies, worker."""
