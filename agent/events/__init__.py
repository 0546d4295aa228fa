"""Telling applications what changed: the journal's entries as JSON and CloudEvents, signed
webhook deliveries from each endpoint's outbox, and the local `on_change` command."""
