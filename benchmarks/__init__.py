"""The benchmarks: ``make bench`` (``python -m benchmarks.run_all``); each script runs as
``python -m benchmarks.<name>`` from the repository root."""
