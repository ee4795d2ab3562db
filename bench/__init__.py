"""Benchmarks of tap-mailgun and target-brevo: throughput, API calls and memory, side by side."""
