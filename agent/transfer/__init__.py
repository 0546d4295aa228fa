"""Downloads for every source: the contract with sources, retries, pacing, durable files."""
