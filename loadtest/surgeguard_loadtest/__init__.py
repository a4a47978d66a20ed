"""Load generators and micro-benchmarks that drive the demo service on loopback."""
