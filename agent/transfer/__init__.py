"""Streaming downloads: resume, verification, durability, retries and pacing."""
