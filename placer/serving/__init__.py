"""The serving search: the most output tokens/s per GPU within latency targets, proven.

- :mod:`placer.serving.timing`: TTFT, TPOT and instance throughput from the cost model's
  per-step times (the one place those formulas live);
- :mod:`placer.serving.probe`: one layout at one concurrency, achievable and bound figures;
- :mod:`placer.serving.search`: concurrency cap and branch and bound per layout;
- :mod:`placer.serving.layouts`: the search over layouts against the incumbent plan;
- :mod:`placer.serving.tail`: the bound on instances larger than the searched ones;
- :mod:`placer.serving.solve`: the serving objectives' entry point and the plan;
- :mod:`placer.serving.figures`: the plan's instance figures and serving constraints;
- :mod:`placer.serving.latency`: objective latency (lowest TPOT carrying a concurrency);
- :mod:`placer.serving.unreachable`: why no plan exists;
- :mod:`placer.serving.check`, :mod:`placer.serving.latency_check`: ``placer verify``'s
  re-check (numpy only);
- :mod:`placer.serving.record`: the plan's serving record.

See docs/serving.md.
"""
