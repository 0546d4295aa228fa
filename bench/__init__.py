"""Benchmarks: sync-agent against rclone, aria2c and cp on the same files."""
