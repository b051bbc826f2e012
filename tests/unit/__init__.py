"""Unit tests: one component on real data, no services started."""
