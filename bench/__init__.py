"""Benchmarks of the event processor and the decision store (run ``python -m bench.processor``)."""
