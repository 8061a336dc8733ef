"""The documented bounds on every number placer reads, and the check on their products.

Each field of a model, hardware or workload file and each command-line option has a range far
beyond any real deployment (see docs/inputs.md for every bound and why it is there). Bounded
alone, numbers can still multiply into counts no 64-bit integer holds (a batch of ten million
requests of a hundred million tokens each), so :func:`check_scale` also bounds the products
placer computes with, before any work starts: the bytes one GPU would hold if it held
everything, and (:data:`MAX_ENTRY_NS`) the time of one step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from placer.exceptions import InvalidInputError

if TYPE_CHECKING:
    from placer.model import ModelSpec
    from placer.workload import Workload

# -- model files ----------------------------------------------------------------------------
#: Decoder layers (the deepest published MoE models have under 100; the search is per layer).
MAX_LAYERS = 4096
#: Any width: hidden size, head width, intermediate sizes, LoRA ranks, Mamba widths.
MAX_WIDTH = 2**20
#: Attention heads, query or key/value.
MAX_HEADS = 2**16
#: Routed experts of a layer, and redundant expert slots of a layout.
MAX_EXPERTS = 2**16
#: Vocabulary entries.
MAX_VOCAB = 2**24
#: Positions, tokens of a sliding window.
MAX_POSITIONS = 2**31
#: Any integer of a published (Hugging Face) config: each is a width, a count or a position.
MAX_CONFIG_INT = MAX_POSITIONS
#: Extra normalisation layers per decoder layer.
MAX_EXTRA_NORMS = 64
#: Parameters of one module of a module list, and its FLOPs per token.
MAX_MODULE_PARAMS = 2**50
#: Modules of a module list.
MAX_MODULES = 2**20
#: KV-cache elements one token stores in one module of a module list.
MAX_MODULE_KV_ELEMENTS = 2**32

# -- workload files ---------------------------------------------------------------------------
#: Concurrent requests.
MAX_BATCH = 10_000_000
#: Tokens of a prompt, an output, a context or a prefill chunk.
MAX_TOKENS = 100_000_000
#: Smallest memory utilisation: below 1 % no model fits, and a vanishing fraction would round
#: every GPU's capacity to zero.
MIN_MEMORY_UTILIZATION = 0.01

# -- solver settings ------------------------------------------------------------------------
#: CP-SAT's random seed is a 32-bit signed integer (``random_seed`` in sat_parameters.proto).
MAX_SEED = 2**31 - 1
#: Longest time limit: one week.
MAX_TIME_LIMIT_S = 7 * 24 * 3600.0
#: CP-SAT search workers.
MAX_WORKERS = 1024
#: Local worker processes (balance layers, sweep cases): each costs about 90 MB, and more
#: processes than cores only cost memory; thousands of them exhaust a machine.
MAX_PROCESSES = 64

#: Cases of one sweep (models x hardware x GPU counts x workloads x profiles).
MAX_SWEEP_CASES = 100_000

# -- products -------------------------------------------------------------------------------
#: Bytes one GPU could hold in any layout (1 EiB). Every byte count of the ledger and of the
#: solver's memory rows is at most this, far inside int64 (and CP-SAT's 2^62 domains).
MAX_GPU_BYTES = 2**60
#: Largest time of one table entry in nanoseconds (about 13 days); the solver sums entries of
#: at most MAX_LAYERS layers, times pp, which stays inside CP-SAT's 2^62 domain limit.
MAX_ENTRY_NS = 2**50


def check_scale(model: ModelSpec, workload: Workload, redundant_experts: int = 0) -> None:
    """Refuse a model and workload whose byte counts would not fit in 64 bits.

    The bound is on one GPU holding the whole model with no parallelism (every layout holds
    at most that): all weights at 4 bytes a parameter, the KV cache of every request, the
    activations of a step and ``redundant_experts`` extra copies of the largest expert in
    every MoE layer.

    Raises
    ------
    InvalidInputError
        Naming the model (or the workload) and the quantity that is too large.
    """
    from placer.layout import Layout
    from placer.ledger import activation_bytes, kv_bytes_for_layer

    source = model.source or model.name
    weights = 4 * model.total_params()
    largest_expert = max((b.params for b in model.blocks if b.kind == "expert"), default=0)
    weights += 4 * redundant_experts * largest_expert * len(model.moe_layers)
    if weights > MAX_GPU_BYTES:
        raise InvalidInputError(
            f"the model's weights ({weights:.3g} bytes) exceed the {MAX_GPU_BYTES:.3g} bytes "
            "placer can count; check the sizes in the file",
            source,
        )
    one = Layout()
    kv = sum(kv_bytes_for_layer(model, workload, one, i) for i in range(model.num_layers))
    act = activation_bytes(model, workload, one, last=True)
    if weights + kv + act > MAX_GPU_BYTES:
        raise InvalidInputError(
            f"the KV cache and activations of batch {workload.batch} x "
            f"{workload.kv_tokens} tokens ({kv + act:.3g} bytes) exceed the "
            f"{MAX_GPU_BYTES:.3g} bytes placer can count; lower batch or context",
            "workload",
            "batch",
        )
