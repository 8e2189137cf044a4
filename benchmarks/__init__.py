"""Benchmarks of the dispatcher service (see ``bench_service.py``)."""
