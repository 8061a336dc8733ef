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
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from placer._base import Frozen
from placer.engine_facts import (
    EngineRelease,
    architecture,
    launch_violation,
    node_counts,
    release,
)
from placer.exceptions import InvalidInputError
from placer.layout import Layout
from placer.ledger import ExpertMap, default_expert_map, memory_ledger
from placer.plan import Plan, PlanLayout
from placer.report import (
    PlanSpecs,
    communication_levels,
    describe_layout,
    id_ranges,
    plan_phys,
    plan_specs,
)

Engine = Literal["vllm", "sglang", "trtllm"]
ENGINES: tuple[str, ...] = ("vllm", "sglang", "trtllm")

#: Hugging Face repositories of the bundled models (models/README.md, "Sources").
HF_REPOS: dict[str, str] = {
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1",
    "mixtral-8x22b": "mistralai/Mixtral-8x22B-v0.1",
    "deepseek-v2-lite": "deepseek-ai/DeepSeek-V2-Lite",
    "deepseek-v2": "deepseek-ai/DeepSeek-V2",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
    "deepseek-r1": "deepseek-ai/DeepSeek-R1",
    "qwen1.5-moe-a2.7b": "Qwen/Qwen1.5-MoE-A2.7B",
    "qwen2-57b-a14b": "Qwen/Qwen2-57B-A14B",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
    "dbrx": "databricks/dbrx-instruct",
    "olmoe-1b-7b-0924": "allenai/OLMoE-1B-7B-0924",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "llama-4-scout-17b-16e": "meta-llama/Llama-4-Scout-17B-16E-Instruct",
    "llama-4-maverick-17b-128e": "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
    "kimi-k2": "moonshotai/Kimi-K2-Instruct",
    "glm-4.5": "zai-org/GLM-4.5",
    "grok-1": "xai-org/grok-1",
    "phi-3.5-moe": "microsoft/Phi-3.5-MoE-instruct",
    "jamba-v0.1": "ai21labs/Jamba-v0.1",
}

#: File names the exports write (relative to where the command runs).
SGLANG_MAP_FILE = "expert_location.json"
TRTLLM_CONFIG_FILE = "extra.yaml"
#: Port appended to ``nodes_addr`` for SGLang's ``--dist-init-addr host:port``.
SGLANG_DIST_PORT = 50000
#: vLLM and SGLang pad the vocabulary to a multiple of this before splitting it.
VOCAB_PAD = 64
#: FP8 block-quantized checkpoints need per-rank MoE widths in multiples of this.
FP8_BLOCK = 128


class ExportError(InvalidInputError):
    """The plan cannot be expressed in the engine's launch arguments; the message names
    the part (attention DP, expert parallelism, expert slots ...) and the engine's rule."""


class Export(Frozen):
    """What to run: the command line(s), environment, files to write, and caveats."""

    command: str = Field(description="Shell command line(s); one per node when multi-node.")
    env: dict[str, str] = Field(description="Environment variables for every node.")
    files: dict[str, str] = Field(description="File name -> content, written beside the run.")
    notes: tuple[str, ...] = Field(description="What differs from the plan, and why.")

    def render(self) -> str:
        """All of it as one text: env exports, files, the command, notes.

        Returns
        -------
        str
            Sections ``# env``, ``# file: NAME``, ``# command`` and ``# notes``; the
            golden files of the tests are this text.
        """
        out: list[str] = []
        if self.env:
            out.append("# env")
            out += [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
            out.append("")
        for name, content in sorted(self.files.items()):
            out.append(f"# file: {name}")
            out.append(content.rstrip("\n"))
            out.append("")
        out.append("# command")
        out.append(self.command)
        if self.notes:
            out.append("")
            out.append("# notes")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


# ------------------------------------------------------------------ context
@dataclass
class _Ctx:
    plan: Plan
    lay: PlanLayout
    specs: PlanSpecs
    model_ref: str
    addr: str
    rel: EngineRelease
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> list[int]:
        """GPUs the plan uses on each node, node by node."""
        return node_counts([g.id for g in self.plan.gpus], self.per_node)

    @property
    def arch(self) -> str | None:
        """HF architecture of the plan's model, when placer knows it."""
        name = str(self.plan.inputs.model.get("name", ""))
        by_repo = {repo: key for key, repo in HF_REPOS.items()}
        return architecture(by_repo.get(name, name))

    def flag(self, name: str, value: object = None) -> list[object]:
        """A launch flag the release has (see placer.engine_facts)."""
        return self.rel.flag(name, value)

    @property
    def width(self) -> int:
        return self.lay.tp * self.lay.dp_attn

    @property
    def edp(self) -> int:
        return self.width // (self.lay.ep * self.lay.etp)

    @property
    def experts(self) -> int:
        return self.specs.model.max_experts

    @property
    def slots(self) -> int:
        return self.experts + self.lay.redundant_experts

    @property
    def gpus(self) -> int:
        return self.lay.gpus_used

    @property
    def per_node(self) -> int:
        return self.specs.cluster.gpus_per_node

    def layout(self) -> Layout:
        lay = self.lay
        return lay.to_layout()


def model_reference(plan: Plan, model_ref: str | None = None) -> str:
    """The model argument of a launch command.

    Parameters
    ----------
    plan
        The plan.
    model_ref
        An explicit reference (local path or repository); wins when given.

    Returns
    -------
    str
        ``model_ref``; else the Hugging Face repository when the model's name is one
        (``owner/name``) or a bundled model of :data:`HF_REPOS`; else the file the model
        was read from; else its name.
    """
    if model_ref:
        return model_ref
    name = str(plan.inputs.model.get("name", ""))
    if "/" in name and not name.startswith(("/", ".")):
        return name
    if name in HF_REPOS:
        return HF_REPOS[name]
    source = plan.inputs.sources.get("model") or plan.inputs.model.get("source")
    return str(source or name)


def _args(lines: Sequence[Sequence[object]]) -> str:
    """Shell text: the first group on the first line, each further group continued."""
    parts = [" ".join(shlex.quote(str(tok)) for tok in grp) for grp in lines]
    return " \\\n    ".join(parts)


def _floor3(x: float) -> float:
    return math.floor(x * 1000 + 1e-9) / 1000


# ------------------------------------------------------------------ splits
def vllm_default_split(layers: int, pp: int) -> tuple[int, ...]:
    """vLLM's default pipeline split: extra layers go to the ranks before the last [V9]."""
    base, rem = divmod(layers, pp)
    parts = [base] * pp
    for i in range(2, rem + 2):
        parts[-i] += 1
    return tuple(parts)


def sglang_default_split(layers: int, pp: int) -> tuple[int, ...]:
    """SGLang's default pipeline split: extra layers go to the last ranks [S8]."""
    base, rem = divmod(layers, pp)
    return tuple(base + (1 if s >= pp - rem else 0) for s in range(pp))


def trtllm_default_split(layers: int, pp: int) -> tuple[int, ...]:
    """TensorRT-LLM's default pipeline split: the first ``layers % pp`` ranks get one more
    [T1]."""
    base, rem = divmod(layers, pp)
    return tuple(base + (1 if s < rem else 0) for s in range(pp))


# ------------------------------------------------------------------ expert maps
def _linear_map(experts: int, slots: int, ep: int, layers: Sequence[int]) -> ExpertMap:
    """Slot p holds logical p % E; ranks hold contiguous blocks, the first slots % ep one
    more (vLLM ``linear`` [V5], SGLang ``trivial`` [S7], TensorRT-LLM's default [T4])."""
    base, extra = divmod(slots, ep)
    ranks: list[tuple[int, ...]] = []
    start = 0
    for r in range(ep):
        n = base + (1 if r < extra else 0)
        ranks.append(tuple(p % experts for p in range(start, start + n)))
        start += n
    row = tuple(ranks)
    return dict.fromkeys(layers, row)


def _is_default_map(c: _Ctx) -> bool:
    default = _linear_map(c.experts, c.slots, c.lay.ep, sorted(c.plan.expert_map))
    return all(tuple(c.plan.expert_map[k]) == v for k, v in default.items())


def _check_default_map_fits(c: _Ctx, engine: str, why: str) -> None:
    """The engine places experts its own way: check the plan still fits, or raise."""
    if not c.plan.expert_map or _is_default_map(c):
        return
    model, cluster, workload = c.specs.model, c.specs.cluster, c.specs.workload
    layout = c.layout()
    led = memory_ledger(
        model,
        cluster,
        workload,
        layout,
        default_expert_map(model, layout),
        gpu_ids=[g.id for g in c.plan.gpus],
    )
    used, cap = led.used, led.capacity
    worst = int((used - cap).argmax())
    plan_peak = max(g.used_bytes for g in c.plan.gpus)
    if not led.fits:
        raise ExportError(
            f"{engine} cannot take the plan's expert map ({why}); under its default "
            f"placement GPU {int(led.gpu_ids[worst])} would need {used[worst] / 1e9:.2f} GB of "
            f"{cap[worst] / 1e9:.2f} GB usable"
        )
    c.notes.append(
        f"{engine} cannot take the plan's expert map ({why}); its default placement "
        f"(slot p holds expert p % {c.experts}, the first ranks one slot more) still fits: "
        f"peak {int(used.max()) / 1e9:.2f} GB per GPU vs the plan's {plan_peak / 1e9:.2f} GB, "
        f"{int(cap.min()) / 1e9:.2f} GB usable."
    )


def _slot_rows(c: _Ctx, engine: str, part: str) -> dict[int, list[int]]:
    """Per MoE layer, the logical expert of every slot in rank order; every rank must hold
    (E + R) / ep slots, since slot p sits on rank p // ((E + R) / ep)."""
    per = c.slots // c.lay.ep
    rows: dict[int, list[int]] = {}
    for layer, ranks in sorted(c.plan.expert_map.items()):
        counts = [len(r) for r in ranks]
        if any(n != per for n in counts):
            raise ExportError(
                f"{engine} {part} puts (E + R) / ep = {per} slots on every EP rank; the plan's "
                f"layer {layer} has {counts}"
            )
        rows[layer] = [e for r in ranks for e in r]
    return rows


# ------------------------------------------------------------------ common checks
def _check_attention(c: _Ctx, engine: str, attn_tp: int, source: str, kv_source: str) -> None:
    a = c.specs.model.attention
    if a is None:
        return
    if a.num_heads % attn_tp:
        raise ExportError(
            f"{engine} needs attention heads divisible by attention TP {source}: "
            f"{a.num_heads} heads over TP {attn_tp}"
        )
    k = a.num_kv_heads
    if a.kind != "mla" and k % attn_tp and attn_tp % k:
        raise ExportError(
            f"{engine} needs KV heads and attention TP to divide one another {kv_source}: "
            f"{k} KV heads, TP {attn_tp}"
        )


def _check_vocab(c: _Ctx, engine: str, tp: int, source: str) -> None:
    vocab = c.specs.model.vocab_size
    if not vocab:
        return
    padded = -(-vocab // VOCAB_PAD) * VOCAB_PAD
    if padded % tp:
        raise ExportError(
            f"{engine} pads the vocabulary to a multiple of {VOCAB_PAD} and splits it over "
            f"TP {source}: {padded} (from {vocab}) is not divisible by TP {tp}"
        )


def _check_fp8_block(c: _Ctx, engine: str, per_rank: int, source: str) -> None:
    model, workload = c.specs.model, c.specs.workload
    if model.moe is None or model.expert_dtype != "fp8":
        return
    if workload.expert_dtype not in (None, "fp8") or workload.weight_dtype not in (None, "fp8"):
        return
    if per_rank % FP8_BLOCK:
        raise ExportError(
            f"{engine} loads the FP8 block-quantized experts only when the per-rank MoE width is "
            f"a multiple of {FP8_BLOCK} {source}: {model.moe.expert_intermediate_size} split "
            f"gives {per_rank}"
        )


def _common_notes(c: _Ctx) -> None:
    model, workload = c.specs.model, c.specs.workload
    if workload.kv_dtype == "fp32":
        raise ExportError("the engines take no fp32 KV cache (docs/engine-rules.md lists none)")
    w = workload.weight_dtype
    if w is not None and w != model.dtype:
        c.notes.append(
            f"The plan assumes {w} weights but the checkpoint is {model.dtype}: serve a {w} "
            "checkpoint (no quantization flag is emitted: docs/engine-rules.md lists none)."
        )
    ex = workload.expert_dtype
    if ex is not None and ex != model.expert_dtype and ex != w:
        c.notes.append(
            f"The plan assumes {ex} experts but the checkpoint's are {model.expert_dtype}: serve "
            "a matching checkpoint."
        )
    limit = model.max_position_embeddings
    if limit is not None and workload.kv_tokens > limit:
        c.notes.append(
            f"The workload's context ({workload.kv_tokens} tokens) exceeds the model's "
            f"max_position_embeddings ({limit}); the engine will refuse it."
        )
    if workload.kv_dtype in ("bf16", "fp16") and workload.kv_dtype != workload.activation_dtype:
        c.notes.append(
            f"KV cache left at the engine's default ('auto', the model dtype): the same 2 bytes "
            f"per element as the planned {workload.kv_dtype}."
        )


def _check_launch(c: _Ctx, tp: int, dp: int) -> None:
    """The engine's launcher must start every rank on the node the plan puts it on."""
    why = launch_violation(c.rel, tp, c.lay.pp, dp, c.counts)
    if why is not None:
        raise ExportError(f"{why}; {c.rel.label} cannot run this plan as planned")


def _check_architecture(c: _Ctx) -> None:
    """The release must have a model class for the plan's architecture (when known)."""
    name = str(c.plan.inputs.model.get("name", ""))
    arch = c.arch
    if arch is None:
        c.notes.append(
            f"placer does not know the model class of {name!r}: whether {c.rel.label} has "
            "one is not checked (docs/engine-rules.md)."
        )
        return
    if arch not in c.rel.architectures:
        raise ExportError(
            f"{c.rel.label} has no model class for {arch} ({name}); source: "
            f"{c.rel.sources['architectures']}"
        )


def _level_note(
    c: _Ctx, engine: str, phys: Callable[[int, int], int], moe_ep_inner: bool, why: str
) -> None:
    cluster, lay = c.specs.cluster, c.lay
    planned = communication_levels(cluster, lay, plan_phys(c.plan))
    actual = communication_levels(cluster, lay, phys, moe_ep_inner)
    names = {
        "attention_tp": "attention TP",
        "expert_parallel": "EP all-to-all",
        "expert_tp": "expert TP",
        "handoff": "hand-off",
    }
    diffs = [
        f"stage {s} {name} at {ac[key]} instead of {pl[key]}"
        for s, (pl, ac) in enumerate(zip(planned, actual, strict=True))
        for key, name in names.items()
        if pl[key] != ac[key]
    ]
    if diffs:
        shown = "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")
        c.notes.append(
            f"{engine} {why}, so its GPU groups span other links than the plan's: {shown}. "
            "The plan's estimates assumed its own levels."
        )


def _stage_major(c: _Ctx, nodes: int) -> Callable[[int, int], int]:
    """Rank ``stage x width + position`` on node ``rank // (gpus / nodes)``."""
    k = c.gpus // nodes
    per_node = c.per_node

    def phys(stage: int, pos: int) -> int:
        rank = stage * c.width + pos
        return (rank // k) * per_node + rank % k

    return phys


# ------------------------------------------------------------------ vLLM
def _vllm(c: _Ctx) -> tuple[str, dict[str, str], dict[str, str]]:
    lay, model, workload = c.lay, c.specs.model, c.specs.workload
    w = c.width
    if c.experts:
        fills = lay.ep == w and lay.etp == 1
        split = lay.ep == 1 and lay.etp == w
        if not (fills or split):
            raise ExportError(
                "vLLM runs experts either TP-split over the stage (ep=1, etp = tp x dp_attn) "
                f"or with ep = tp x dp_attn and etp = 1 [V4]; this plan has ep={lay.ep}, "
                f"etp={lay.etp} on a stage of {w} GPUs (tp {lay.tp} x dp_attn {lay.dp_attn})"
            )
    r = lay.redundant_experts
    if r:
        if lay.ep == 1:
            raise ExportError(
                "vLLM's redundant experts need EPLB, which needs expert parallelism [V1]; "
                f"this plan has {r} redundant slots with ep=1"
            )
        if c.slots % lay.ep:
            raise ExportError(
                f"vLLM needs (experts + redundant) % ep == 0 with EPLB [V1, V6]: "
                f"({c.experts} + {r}) % {lay.ep} != 0"
            )
    _check_attention(c, "vLLM", lay.tp, "[V2]", "[V3]")
    _check_vocab(c, "vLLM", lay.tp, "[V8]")
    if model.moe is not None:
        width_i = model.moe.expert_intermediate_size
        _check_fp8_block(c, "vLLM", width_i if lay.ep > 1 else width_i // w, "[V7]")

    head: list[list[object]] = [["vllm", "serve", c.model_ref]]  # [V11]
    flags: list[list[object]] = [
        c.flag("--tensor-parallel-size", lay.tp),  # [V11] attention TP in each DP rank [V1]
        c.flag("--pipeline-parallel-size", lay.pp),  # [V11]
    ]
    if lay.dp_attn > 1:
        flags.append(c.flag("--data-parallel-size", lay.dp_attn))  # [V1, V11] DP attention
    if lay.ep > 1:
        flags.append(c.flag("--enable-expert-parallel"))  # [V4, V11] EP = TP x DP, MoE-TP 1
    if r:
        flags.append(c.flag("--enable-eplb"))  # [V1, V11]
        flags.append(
            c.flag(
                "--eplb-config", json.dumps({"num_redundant_experts": r}, separators=(",", ":"))
            )
        )  # [V6, V11]
    flags.append(
        c.flag("--gpu-memory-utilization", f"{workload.memory_utilization:g}")
    )  # [V11]; section 5: util x total = weights + activations + KV + non-torch
    flags.append(c.flag("--max-model-len", workload.kv_tokens))  # [V11]
    if workload.kv_dtype == "fp8":
        flags.append(c.flag("--kv-cache-dtype", "fp8"))  # [V11]

    env: dict[str, str] = {}
    if lay.pp > 1 and tuple(lay.layers_per_stage) != vllm_default_split(model.num_layers, lay.pp):
        env["VLLM_PP_LAYER_PARTITION"] = ",".join(map(str, lay.layers_per_stage))  # [V9]
    if lay.pp > 1:
        c.notes.append(
            "Pipeline parallelism in vLLM needs a model class implementing SupportsPP [V2]."
        )
    _check_default_map_fits(c, "vLLM", "it has no initial-map input [V11]")
    if r:
        c.notes.append(
            f"EPLB starts from logical experts 0..{c.experts - 1} then replicas i % "
            f"{c.experts}, {c.slots // lay.ep} contiguous slots per rank, and rearranges them "
            "online [V11]; the plan's static placement is only its starting point."
        )

    host, _, port = c.addr.rpartition(":") if ":" in c.addr else (c.addr, "", "")
    _check_launch(c, lay.tp, lay.dp_attn)
    counts = c.counts
    nodes = len(counts)
    commands: list[str] = []
    if nodes == 1:
        commands.append(_args(head + flags))
        if lay.dp_attn > 1:
            e = lay.tp * lay.pp

            def phys_local(stage: int, pos: int) -> int:
                d, t = divmod(pos, lay.tp)
                return d * e + stage * lay.tp + t

            _level_note(
                c,
                "vLLM",
                phys_local,
                False,
                "gives each data-parallel engine (tp x pp GPUs) consecutive GPUs",
            )
    elif lay.dp_attn == 1:
        for i in range(nodes):
            extra: list[list[object]] = [
                c.flag("--nnodes", nodes),  # [V1, V11] world > local GPUs needs --nnodes (mp)
                c.flag("--node-rank", i),  # [V11]
                c.flag("--master-addr", host),  # [V11]
            ]
            if port:
                extra.append(c.flag("--master-port", port))  # [V11]
            if i > 0:
                extra.append(c.flag("--headless"))  # [V11] non-head nodes
            label = "head" if i == 0 else "headless"
            commands.append(f"# node {i} ({label})\n" + _args(head + flags + extra))
        _level_note(
            c,
            "vLLM",
            _stage_major(c, nodes),
            False,
            f"runs {c.gpus // nodes} GPUs on each of {nodes} nodes",
        )
    else:
        # Whole data-parallel engines (tp x pp GPUs) per node, as many as the plan puts
        # there (section 6.10; launch_violation checked the counts).
        e = lay.tp * lay.pp
        first_rank = 0
        engine_slot: list[tuple[int, int]] = []  # per DP rank: (node index, slot on node)
        for i, count in enumerate(counts):
            n_local = count // e
            extra = [
                c.flag("--data-parallel-size-local", n_local),  # [V11]
                c.flag("--data-parallel-address", host),  # [V11]
            ]
            if port:
                extra.append(c.flag("--data-parallel-rpc-port", port))  # [V11]
            if i > 0:
                extra.append(c.flag("--data-parallel-start-rank", first_rank))  # [V11]
                extra.append(c.flag("--headless"))  # [V11] non-head nodes
            label = "head" if i == 0 else "headless"
            commands.append(f"# node {i} ({label})\n" + _args(head + flags + extra))
            engine_slot += [(i, k) for k in range(n_local)]
            first_rank += n_local
        node_ids = sorted({g.id // c.per_node for g in c.plan.gpus})

        def phys_dp(stage: int, pos: int) -> int:
            d, t = divmod(pos, lay.tp)
            node, slot = engine_slot[d]
            return node_ids[node] * c.per_node + slot * e + stage * lay.tp + t

        _level_note(
            c,
            "vLLM",
            phys_dp,
            False,
            f"places whole data-parallel engines (tp x pp = {e} GPUs) on each node",
        )
    return "\n\n".join(commands), env, {}


# ------------------------------------------------------------------ SGLang
def _sglang(c: _Ctx) -> tuple[str, dict[str, str], dict[str, str]]:
    lay, model, workload = c.lay, c.specs.model, c.specs.workload
    w, edp = c.width, c.edp
    if c.experts:
        if edp > 1 and not c.rel.expert_dp:
            raise ExportError(
                f"{c.rel.label} runs MoE data parallelism (moe_dp > 1) only together with "
                "attention context parallelism (docs/engine-rules.md); this plan keeps "
                f"{edp} expert-DP copies (ep {lay.ep} x etp {lay.etp} of {w} GPUs)"
            )
        if c.slots % lay.ep:
            raise ExportError(
                f"SGLang needs (experts + redundant) % ep == 0 [S6, S7]: "
                f"({c.experts} + {lay.redundant_experts}) % {lay.ep} != 0"
            )
        if model.moe is not None:
            width_i = model.moe.expert_intermediate_size
            if width_i % lay.etp:
                raise ExportError(
                    f"SGLang needs the MoE width divisible by moe_tp [S6]: {width_i} % "
                    f"{lay.etp} != 0"
                )
            _check_fp8_block(c, "SGLang", width_i // lay.etp, "[S6]")
    _check_attention(c, "SGLang", lay.tp, "[S12]", "(section 2, KV heads)")
    _check_vocab(c, "SGLang", lay.tp, "(section 6.8)")
    _check_launch(c, w, 1)
    arch = c.arch
    takes_map = arch is not None and c.rel.architectures[arch].expert_map
    if lay.redundant_experts and arch is not None and not takes_map:
        raise ExportError(
            f"SGLang places redundant expert slots through its expert-location metadata, which "
            f"the {arch} model class does not provide (docs/engine-rules.md); this plan "
            f"has {lay.redundant_experts} redundant slots"
        )

    head: list[list[object]] = [
        ["python", "-m", "sglang.launch_server"],  # [S1]
        c.flag("--model-path", c.model_ref),  # [S1]
    ]
    flags: list[list[object]] = [
        c.flag("--tp-size", w),  # [S1, S5] GPUs of one PP stage
        c.flag("--pp-size", lay.pp),  # [S1]
    ]
    if lay.dp_attn > 1:
        # Attention tp = attn_dp x attn_tp [S2]; --attn-dp-size replaces the deprecated
        # --dp-size N --enable-dp-attention (docs/engine-rules.md).
        flags.append(c.flag("--attn-dp-size", lay.dp_attn))
    if lay.ep > 1:
        flags.append(c.flag("--ep-size", lay.ep))  # [S1, S5] moe_tp = tp / ep
    dense = any(layer.ffn == "dense" for layer in model.layers) and model.modules is None
    if dense and lay.dp_attn > 1:
        if lay.tp == 1:
            flags.append(c.flag("--moe-dense-tp-size", 1))  # [S10] dense MLPs not split
        else:
            c.notes.append(
                f"SGLang splits dense MLP layers over the whole stage ({w} GPUs) or not at all "
                f"(--moe-dense-tp-size in {{None, 1}} [S10]); the plan splits them over "
                f"attention TP {lay.tp}. Left at the default (the stage): each GPU holds less "
                "dense-MLP weight than planned, and their timing differs from the estimates."
            )
    # [S1]; section 5: f = (weights + KV pool) / GPU memory. Chosen so that the weights, KV,
    # activations and reserve placer planned fit memory x utilization on every GPU.
    fracs = [
        (g.capacity_bytes - g.breakdown["activations"] - g.breakdown["reserve"]) / g.memory_bytes
        for g in c.plan.gpus
    ]
    need = [
        (g.used_bytes - g.breakdown["activations"] - g.breakdown["reserve"]) / g.memory_bytes
        for g in c.plan.gpus
    ]
    frac = _floor3(min(fracs))
    flags.append(c.flag("--mem-fraction-static", f"{frac:g}"))
    c.notes.append(
        f"--mem-fraction-static {frac:g} = (memory x {workload.memory_utilization:g} - "
        "activations - runtime reserve) / memory on the tightest GPU, rounded down: SGLang's "
        "static pool is weights + KV cache (section 5)."
    )
    if max(need) > frac:
        c.notes.append(
            f"On some GPU the planned weights + KV need {max(need):.4f} of memory, above the "
            f"single fraction {frac:g}: its KV pool will be smaller than planned."
        )
    flags.append(c.flag("--context-length", workload.kv_tokens))  # [S1]
    if workload.kv_dtype == "fp8":
        flags.append(c.flag("--kv-cache-dtype", "fp8_e4m3"))  # [S1] (SGLang's name for fp8)
    if lay.redundant_experts:
        flags.append(c.flag("--ep-num-redundant-experts", lay.redundant_experts))  # [S1]

    files: dict[str, str] = {}
    if c.experts and c.plan.expert_map and not _is_default_map(c):
        if arch is not None and not takes_map:
            _check_default_map_fits(
                c,
                "SGLang",
                f"the {arch} model class has no expert-location hook, so "
                "--init-expert-location would be ignored (docs/engine-rules.md)",
            )
        else:
            _sglang_map_file(c, files, flags)
            if arch is None:
                c.notes.append(
                    "SGLang applies --init-expert-location only for model classes with an "
                    "expert-location hook; placer does not know this model's class: check the "
                    "start-up log for 'init_expert_location from init_by_mapping'."
                )
    if lay.redundant_experts:
        c.notes.append(
            "The redundant slots are placed statically; --enable-eplb [S1] would let SGLang "
            "rearrange them online (not set)."
        )
    if model.moe is not None and model.moe.num_shared_experts and lay.ep > 1:
        c.notes.append(
            "SGLang counts fused shared experts in the slots per EP rank "
            "((E + R [+ fused shared experts]) % ep [S6]); the plan treats the shared expert as "
            "TP-split dense weights. Check the start-up log for the fused count."
        )

    env: dict[str, str] = {}
    if lay.pp > 1:
        if tuple(lay.layers_per_stage) != sglang_default_split(model.num_layers, lay.pp):
            env["SGLANG_PP_LAYER_PARTITION"] = ",".join(map(str, lay.layers_per_stage))  # [S8]
        c.notes.append("pp > 1 disables SGLang's overlap scheduler [S4, S10].")

    commands: list[str] = []
    nodes = len(c.counts)
    if nodes == 1:
        commands.append(_args(head + flags))
    else:
        host = c.addr if ":" in c.addr else f"{c.addr}:{SGLANG_DIST_PORT}"
        for i in range(nodes):
            extra: list[list[object]] = [
                c.flag("--nnodes", nodes),  # [S1]
                c.flag("--node-rank", i),  # [S1]
                c.flag("--dist-init-addr", host),  # [S1, S10]
            ]
            commands.append(f"# node {i}\n" + _args(head + flags + extra))
        if ":" not in c.addr:
            c.notes.append(
                f"--dist-init-addr uses port {SGLANG_DIST_PORT}; pass nodes_addr as host:port to "
                "choose another."
            )
        _level_note(
            c,
            "SGLang",
            _stage_major(c, nodes),
            False,
            f"runs {c.gpus // nodes} GPUs on each of {nodes} nodes (GPU order stage by stage "
            "assumed)",
        )
    return "\n\n".join(commands), env, files


def _sglang_map_file(c: _Ctx, files: dict[str, str], flags: list[list[object]]) -> None:
    """The plan's map as SGLang's ``physical_to_logical_map`` file, and the flag reading it."""
    model = c.specs.model
    rows = _slot_rows(c, "SGLang", "(slot p on EP rank p // ((E + R) / ep) [S7])")
    trivial = [p % c.experts for p in range(c.slots)]
    # [S7]: int[num_layers][E + R], one row per hidden layer, dense layers included.
    table = [rows.get(i, trivial) for i in range(model.num_layers)]
    files[SGLANG_MAP_FILE] = _json_rows({"physical_to_logical_map": table})
    flags.append(c.flag("--init-expert-location", SGLANG_MAP_FILE))  # [S7]
    dense_layers = [i for i in range(model.num_layers) if i not in rows]
    if dense_layers:
        c.notes.append(
            f"{SGLANG_MAP_FILE} has one row per hidden layer (SGLang's num_layers [S7]); "
            f"layer(s) {id_ranges(dense_layers)} have no routed experts and get "
            "the trivial row (slot p -> p % E), which SGLang does not use."
        )


def _json_rows(data: dict[str, list[list[int]]]) -> str:
    """JSON with one line per row of each table (readable, and stable for goldens)."""
    parts = []
    for key, rows in data.items():
        body = ",\n".join("    " + json.dumps(row, separators=(", ", ": ")) for row in rows)
        parts.append(f"  {json.dumps(key)}: [\n{body}\n  ]")
    return "{\n" + ",\n".join(parts) + "\n}\n"


# ------------------------------------------------------------------ TensorRT-LLM
def _yaml(data: dict[str, Any], indent: int = 0) -> list[str]:
    """A small YAML writer: nested mappings, flow-style lists of scalars, scalars."""

    def scalar(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return f"{v:g}" if isinstance(v, float) else str(v)
        return json.dumps(str(v))

    out: list[str] = []
    pad = "  " * indent
    for k, v in data.items():
        if isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out += _yaml(v, indent + 1)
        elif isinstance(v, list | tuple):
            out.append(f"{pad}{k}: [{', '.join(scalar(x) for x in v)}]")
        else:
            out.append(f"{pad}{k}: {scalar(v)}")
    return out


def _trtllm(c: _Ctx) -> tuple[str, dict[str, str], dict[str, str]]:
    lay, model, workload = c.lay, c.specs.model, c.specs.workload
    w = c.width
    attention_dp = lay.dp_attn > 1
    if attention_dp and lay.tp != 1:
        raise ExportError(
            "TensorRT-LLM's attention DP runs attention with TP 1 on every rank (dp = tp) "
            f"[T1, T3]; this plan has attention tp={lay.tp} x dp_attn={lay.dp_attn}"
        )
    if c.experts and c.edp > 1:
        raise ExportError(
            "TensorRT-LLM splits every stage's GPUs between expert TP and EP "
            f"(moe_tp x moe_ep == tp [T1]); this plan has ep={lay.ep} x etp={lay.etp} = "
            f"{lay.ep * lay.etp} of {w} GPUs ({c.edp} expert-DP copies)"
        )
    _check_attention(c, "TensorRT-LLM", 1 if attention_dp else lay.tp, "[T3]", "[T3]")

    keys = c.rel.trtllm
    assert keys is not None, f"{c.rel.label} records no TensorRT-LLM YAML keys"
    head: list[list[object]] = [["trtllm-serve", c.model_ref]]  # [T5]
    flags: list[list[object]] = [
        c.flag("--backend", "pytorch"),  # [T5]
        c.flag("--tp_size", w),  # [T1, T5] world = tp x pp
        c.flag("--pp_size", lay.pp),  # [T5]
        c.flag("--ep_size", lay.ep),  # [T5] moe_ep
        c.flag("--max_seq_len", workload.kv_tokens),  # [T5]
    ]
    # [T5]; section 5: a fraction of the memory still free after weights and buffers. Chosen
    # so that the KV cache ends within memory x utilization on every GPU, as planned.
    fracs = []
    for g in c.plan.gpus:
        before_kv = g.used_bytes - g.breakdown["kv_cache"]
        fracs.append((g.capacity_bytes - before_kv) / (g.memory_bytes - before_kv))
    frac = _floor3(min(fracs))
    flags.append(c.flag("--kv_cache_free_gpu_memory_fraction", f"{frac:g}"))  # [T5]
    c.notes.append(
        f"kv_cache_free_gpu_memory_fraction {frac:g} = (memory x "
        f"{workload.memory_utilization:g} - everything planned but KV) / (memory - everything "
        "planned but KV) on the tightest GPU, rounded down (section 5)."
    )
    flags.append(c.flag("--config", TRTLLM_CONFIG_FILE))  # [T5] alias --extra_llm_api_options

    # Every key below is a field of the release's llm_args.py (placer/engine_facts.json,
    # checked by tests/test_export.py).
    extra: dict[str, Any] = {
        "enable_attention_dp": attention_dp,  # [T1, T2]
        "moe_expert_parallel_size": lay.ep,  # [T2]
        "moe_tensor_parallel_size": lay.etp,  # [T1, T2] moe_tp x moe_ep == tp
    }
    if lay.pp > 1 and tuple(lay.layers_per_stage) != trtllm_default_split(
        model.num_layers, lay.pp
    ):
        if not keys.pp_partition:
            raise ExportError(
                f"{c.rel.label} has no pp_partition key, so its layer split is the default "
                f"{trtllm_default_split(model.num_layers, lay.pp)}; the plan splits "
                f"{tuple(lay.layers_per_stage)}"
            )
        extra["pp_partition"] = list(lay.layers_per_stage)  # [T2] prototype
        c.notes.append(
            f"pp_partition is a prototype field (status 'prototype') in {c.rel.label}'s "
            "llm_args.py."
        )
    kv: dict[str, Any] = {"free_gpu_memory_fraction": frac}  # [T2]
    if workload.kv_dtype == "fp8":
        kv["dtype"] = "fp8"  # [T2]
    extra["kv_cache_config"] = kv  # [T2]
    if c.experts:
        default = lay.redundant_experts == 0 and c.experts % lay.ep == 0 and _is_default_map(c)
        if not default:
            if c.slots % lay.ep:
                raise ExportError(
                    f"TensorRT-LLM needs the expert slots divisible by moe_ep [T2, T4]: "
                    f"{c.experts} experts + {lay.redundant_experts} redundant over ep {lay.ep}"
                )
            if keys.load_balancer_required:
                raise ExportError(
                    f"{c.rel.label} requires moe_config.load_balancer keys placer does not "
                    f"know how to fill: {', '.join(keys.load_balancer_required)}"
                )
            rows = _slot_rows(c, "TensorRT-LLM", "(slot s on EP rank s // (num_slots / ep) [T7])")
            # No moe_config.backend: the release's default (AUTO) picks the MoE backend for
            # the model, GPU and EP size; WIDEEP is no longer an allowed value
            # (docs/engine-rules.md).
            extra["moe_config"] = {
                "load_balancer": {  # [T2, T7]
                    "num_slots": c.slots,  # [T2, T4] num_slots >= E, % moe_ep == 0
                    "layer_updates_per_iter": 0,  # [T7] 0 = static placement
                    "initial_global_assignments": rows,  # [T7] keyed by MoE layer index
                },
            }
            c.notes.append(
                "The expert map goes in moe_config.load_balancer.initial_global_assignments "
                "(static, layer_updates_per_iter 0) [T7]; moe_config.backend is left at the "
                "release's default (AUTO), which chooses the MoE backend for the GPU and EP size."
            )
    yaml_lines = _yaml(extra)
    files = {TRTLLM_CONFIG_FILE: "\n".join(yaml_lines) + "\n"}

    counts = c.counts
    if len(counts) == 1:
        command = _args(head + flags)
    else:
        nodes = len(counts)
        srun: list[object] = ["srun", "--nodes", nodes, "--ntasks", c.gpus]
        if len(set(counts)) == 1:
            srun += ["--ntasks-per-node", counts[0]]
        launcher: list[list[object]] = [
            srun,
            ["trtllm-llmapi-launch"],  # section 3: multi-node via mpirun/srun + this
        ]
        command = _args(
            launcher + head + flags + [c.flag("--gpus_per_node", c.per_node)]  # [T5]
        )
        c.notes.append(
            "Multi-node TensorRT-LLM takes its ranks from Slurm or MPI (no nnodes flag, section "
            f"3): one srun line starts every rank, {counts} per node as planned; with mpirun "
            f"use -np {c.gpus} and a host file with those slot counts."
        )

    def phys(stage: int, pos: int) -> int:
        return stage * w + pos

    _level_note(
        c,
        "TensorRT-LLM",
        phys,
        True,
        "numbers EP ranks tp_rank % moe_ep [T1] (expert-TP groups strided)",
    )
    return command, {}, files


# ------------------------------------------------------------------ entry
_BUILDERS: dict[str, Callable[[_Ctx], tuple[str, dict[str, str], dict[str, str]]]] = {
    "vllm": _vllm,
    "sglang": _sglang,
    "trtllm": _trtllm,
}


def export_plan(
    plan: Plan,
    engine: Engine,
    model_ref: str | None = None,
    nodes_addr: str = "<head-node-ip>",
    engine_version: str | None = None,
) -> Export:
    """Launch arguments, environment and files that run ``plan`` on an inference engine.

    Parameters
    ----------
    plan
        A plan with a layout (status ``optimal`` or ``feasible``).
    engine
        ``vllm``, ``sglang`` or ``trtllm`` (TensorRT-LLM's PyTorch backend).
    model_ref
        The model argument (local path or repository); default: the Hugging Face
        repository when known, else the model file the plan was solved for
        (see :func:`model_reference`).
    nodes_addr
        Address of the head node for multi-node launches (``host`` or, for SGLang,
        ``host:port``).
    engine_version
        The engine version to target; its facts (flags, launcher, model classes) come
        from :mod:`placer.engine_facts`. Default: the newest range placer knows.

    Returns
    -------
    Export
        ``command`` (one per node when the engine launches per node), ``env``,
        ``files`` (SGLang's ``expert_location.json``, TensorRT-LLM's ``extra.yaml``)
        and ``notes`` on every difference from the plan.

    Raises
    ------
    ExportError
        If the plan has no layout, the version is unknown, or the chosen release
        cannot run the plan as planned; the message names the part and the rule's source.
    """
    if engine not in _BUILDERS:
        raise ExportError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if plan.layout is None:
        why = f": {plan.infeasibility.reason}" if plan.infeasibility is not None else ""
        raise ExportError(
            f"the plan has no layout to export (status {plan.status}){why}", field="layout"
        )
    rel = release(engine, engine_version)
    c = _Ctx(
        plan=plan,
        lay=plan.layout,
        specs=plan_specs(plan),
        model_ref=model_reference(plan, model_ref),
        addr=nodes_addr,
        rel=rel,
    )
    c.notes.append(
        f"Plan {plan.status}: {describe_layout(plan.layout)} on {plan.layout.gpus_used} GPUs, "
        f"layers per stage {','.join(map(str, plan.layout.layers_per_stage))}."
    )
    c.notes.append(f"Engine facts: {rel.label}, read from {rel.checked} (docs/engine-rules.md).")
    _common_notes(c)
    _check_architecture(c)
    if (
        model_ref is None
        and c.model_ref not in HF_REPOS.values()
        and "/" not in str(plan.inputs.model.get("name", ""))
    ):
        c.notes.append(
            f"MODEL is {c.model_ref!r}, the file placer read, not a checkpoint the engine can "
            "load: pass model_ref."
        )
    command, env, files = _BUILDERS[engine](c)
    return Export(command=command, env=env, files=files, notes=tuple(c.notes))
