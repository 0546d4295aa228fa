"""The sync engine: one pass over a source is list -> plan (pure) -> download -> record."""
