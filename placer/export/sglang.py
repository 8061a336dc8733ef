"""SGLang launch commands from a plan (docs/engine-rules.md, [S..] rules)."""

from __future__ import annotations

import json

from placer.export.checks import (
    _check_attention,
    _check_default_map_fits,
    _check_fp8_block,
    _check_launch,
    _check_vocab,
    _is_default_map,
    _level_note,
    _slot_rows,
    _stage_major,
)
from placer.export.common import (
    SGLANG_DIST_PORT,
    SGLANG_MAP_FILE,
    ExportError,
    _args,
    _Ctx,
    _floor3,
    sglang_default_split,
)
from placer.report import (
    id_ranges,
)


# ------------------------------------------------------------------ SGLang
def _sglang(c: _Ctx) -> tuple[str, dict[str, str], dict[str, str]]:
    _sglang_checks(c)
    head, flags = _sglang_flags(c)
    files = _sglang_files(c, flags)
    command, env = _sglang_commands(c, head, flags)
    return command, env, files


def _sglang_checks(c: _Ctx) -> None:
    """What SGLang cannot run as planned raises ExportError [S1-S12]."""
    lay, model = c.lay, c.specs.model
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


def _sglang_flags(c: _Ctx) -> tuple[list[list[object]], list[list[object]]]:
    """The command head and the flags of every node [S1, S2, S5, S10]."""
    lay, model, workload = c.lay, c.specs.model, c.specs.workload
    w = c.width
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
    return head, flags


def _sglang_files(c: _Ctx, flags: list[list[object]]) -> dict[str, str]:
    """The expert-location file (and its flag) when the plan's map is not the default [S7]."""
    lay, model = c.lay, c.specs.model
    arch = c.arch
    takes_map = arch is not None and c.rel.architectures[arch].expert_map
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

    return files


def _sglang_commands(
    c: _Ctx, head: list[list[object]], flags: list[list[object]]
) -> tuple[str, dict[str, str]]:
    """The environment and one command, or one per node [S1, S8, S10]."""
    lay, model = c.lay, c.specs.model
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
    return "\n\n".join(commands), env


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
