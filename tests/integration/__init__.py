"""Integration tests: real PostgreSQL, Redis, API and worker processes."""
