"""Prefect flows and the `cordwatch` command line: thin wrappers over `pipelines`."""
