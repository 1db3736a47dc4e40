"""Benchmarks: what the bridge costs per message, measured against the homeserver itself.

Run ``python -m bench`` (or ``scripts/bench.sh``); it writes ``docs/benchmarks.md``. The suite
reuses the end-to-end harness in ``tests/e2e`` (a real Synapse, the real bridge process, the
reference network) and is not part of the test suite.
"""
