"""Replica tests reuse the state layer's fixtures: a store on SQLite and on PostgreSQL."""

from tests.state.conftest import clock, state_url, store

__all__ = ["clock", "state_url", "store"]
