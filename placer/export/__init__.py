"""Engine launch commands from a plan: vLLM, SGLang and TensorRT-LLM (PyTorch backend).

Every flag, environment variable and file key is one the chosen engine release
records in :mod:`placer.engine_facts` (docs/engine-rules.md); the older source key
of each rule ([V11], [S1], [T5] ...) is cited in a comment next to it. Multi-node
commands are written only for layouts the engine's launcher starts rank for rank
on the nodes the plan uses. A plan an engine cannot run as planned raises
:class:`ExportError` naming the part (attention DP, expert parallelism, expert
slots, ...); a plan it can run with a difference the plan did not assume (a
default expert placement, a different GPU order) exports with a note saying so.

How placer's layout maps onto each engine (docs/engine-rules.md):

- placer: a stage of ``tp x dp_attn`` GPUs; attention TP ``tp`` in ``dp_attn``
  groups; experts over ``ep`` ranks of ``etp`` GPUs, ``edp`` copies.
- vLLM: ``-tp`` = attention TP, ``--data-parallel-size`` = ``dp_attn``; experts
  are TP-split over the whole stage (``ep == 1``) or, with
  ``--enable-expert-parallel``, ``ep = tp x dp`` and expert TP 1 [V1, V4].
- SGLang: ``--tp-size`` = the stage width; attention ``tp = dp x attn_tp``
  (``--enable-dp-attention --dp-size``), MoE ``tp = moe_dp x ep x moe_tp`` [S2, S5].
- TensorRT-LLM: ``--tp_size`` = the stage width; attention TP = tp, or 1 on every
  rank with ``enable_attention_dp``; MoE ``moe_tp x moe_ep == tp`` [T1, T3].

The package: :mod:`placer.export.common` (the result record, context and shared helpers),
:mod:`placer.export.checks` (checks every engine shares), one module per engine
(:mod:`placer.export.vllm`, :mod:`placer.export.sglang`, :mod:`placer.export.trtllm`),
:mod:`placer.export.serving` (replicated and disaggregated serving plans) and
:mod:`placer.export.api` (:func:`export_plan`).
"""

from placer.export.api import export_plan
from placer.export.common import (
    ENGINES,
    FP8_BLOCK,
    HF_REPOS,
    SGLANG_DIST_PORT,
    SGLANG_MAP_FILE,
    TRTLLM_CONFIG_FILE,
    VOCAB_PAD,
    Engine,
    Export,
    ExportError,
    model_reference,
    sglang_default_split,
    trtllm_default_split,
    vllm_default_split,
)

__all__ = [
    "ENGINES",
    "FP8_BLOCK",
    "HF_REPOS",
    "SGLANG_DIST_PORT",
    "SGLANG_MAP_FILE",
    "TRTLLM_CONFIG_FILE",
    "VOCAB_PAD",
    "Engine",
    "Export",
    "ExportError",
    "export_plan",
    "model_reference",
    "sglang_default_split",
    "trtllm_default_split",
    "vllm_default_split",
]
