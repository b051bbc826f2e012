"""End-to-end tests: separate processes as a user runs them.

The CLI, `provenance serve`, Chromium, the installed package and the OpenAPI fuzzer.
"""
