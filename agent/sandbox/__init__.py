"""Local stand-ins for the remote document APIs, used by tests, benchmarks and `sync-agent demo`."""
