"""TensorRT-LLM (PyTorch backend) launch commands and YAML from a plan
(docs/engine-rules.md, [T..] rules)."""

from __future__ import annotations

import json
from typing import Any

from placer.export.checks import (
    _check_attention,
    _is_default_map,
    _level_note,
    _slot_rows,
)
from placer.export.common import (
    TRTLLM_CONFIG_FILE,
    ExportError,
    _args,
    _Ctx,
    _floor3,
    trtllm_default_split,
)


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
    _trtllm_checks(c)
    head, flags, frac = _trtllm_flags(c)
    files = {TRTLLM_CONFIG_FILE: "\n".join(_yaml(_trtllm_config(c, frac))) + "\n"}
    return _trtllm_command(c, head, flags), {}, files


def _trtllm_checks(c: _Ctx) -> None:
    """What TensorRT-LLM cannot run as planned raises ExportError [T1, T3]."""
    lay = c.lay
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


def _trtllm_flags(c: _Ctx) -> tuple[list[list[object]], list[list[object]], float]:
    """The command head, its flags and the KV memory fraction [T5]."""
    lay, workload = c.lay, c.specs.workload
    w = c.width
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
    return head, flags, frac


def _trtllm_config(c: _Ctx, frac: float) -> dict[str, Any]:
    """The ``--config`` YAML as a mapping [T2, T4, T7]."""
    lay, model, workload = c.lay, c.specs.model, c.specs.workload
    attention_dp = lay.dp_attn > 1
    keys = c.rel.trtllm
    assert keys is not None
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
    return extra


def _trtllm_command(c: _Ctx, head: list[list[object]], flags: list[list[object]]) -> str:
    """One command, or one srun line over every node (section 3) [T5]."""
    w = c.width
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
    return command
