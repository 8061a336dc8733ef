"""vLLM launch commands from a plan (docs/engine-rules.md, [V..] rules)."""

from __future__ import annotations

import json

from placer.export.checks import (
    _check_attention,
    _check_default_map_fits,
    _check_fp8_block,
    _check_launch,
    _check_vocab,
    _level_note,
    _stage_major,
)
from placer.export.common import (
    ExportError,
    _args,
    _Ctx,
    vllm_default_split,
)


# ------------------------------------------------------------------ vLLM
def _vllm(c: _Ctx) -> tuple[str, dict[str, str], dict[str, str]]:
    _vllm_checks(c)
    head, flags, env = _vllm_flags(c)
    return "\n\n".join(_vllm_commands(c, head, flags)), env, {}


def _vllm_checks(c: _Ctx) -> None:
    """What vLLM cannot run as planned raises ExportError [V1-V8]."""
    lay, model = c.lay, c.specs.model
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


def _vllm_flags(c: _Ctx) -> tuple[list[list[object]], list[list[object]], dict[str, str]]:
    """The command head, flags and environment of every node [V1, V4, V6, V9, V11]."""
    lay, model, workload = c.lay, c.specs.model, c.specs.workload
    r = lay.redundant_experts
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

    return head, flags, env


def _vllm_commands(c: _Ctx, head: list[list[object]], flags: list[list[object]]) -> list[str]:
    """One command, or one per node, as vLLM's launcher starts them [V11]."""
    lay = c.lay
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
    return commands
