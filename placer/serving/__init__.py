"""The serving search: the most output tokens/s per GPU within latency targets, proven.

- :mod:`placer.serving.timing`: TTFT, TPOT and instance throughput from the cost model's
  per-step times (the one place those formulas live);
- :mod:`placer.serving.probe`: one layout at one concurrency, achievable and bound figures;
- :mod:`placer.serving.search`: concurrency cap and branch and bound per layout;
- :mod:`placer.serving.solve`: the search over layouts and instance counts, and the plan;
- :mod:`placer.serving.check`: ``placer verify``'s re-check (numpy only);
- :mod:`placer.serving.record`: the plan's serving record.

See docs/serving.md.
"""
