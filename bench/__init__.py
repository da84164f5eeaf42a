"""Benchmarks: each prints figures measured in one run; none asserts a timing."""
