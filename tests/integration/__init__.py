"""Integration tests: components wired with their real dependencies.

Anvil, PostgreSQL, Redis, C2PA and the in-process API, all real, started by the tests.
"""
