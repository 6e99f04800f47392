"""Benchmarks: our BentoML service against `mlflow models serve` and a plain FastAPI server.

    python -m bench.run    # make bench: throughput, latency, memory, cold start, pass/fail
    python -m bench.soak   # make soak: 60 s at concurrency 64, errors and memory growth
"""
