"""Exports of serving plans: ``k`` identical instances, or ``x`` prefill and ``y`` decode
instances of a disaggregated plan (docs/engine-rules.md, "Serving plans").

Each instance is launched by the engine's own single-instance export (the same checks and
flags as any plan) on its own GPUs and port: instance ``i`` of ``g`` GPUs takes GPUs
``i x g .. (i+1) x g - 1`` of the cluster, in the order the plan was costed on. An instance
that fits one node runs there with ``CUDA_VISIBLE_DEVICES`` naming its GPUs (CUDA's own
variable, not an engine flag); an instance of whole nodes gets its own head address. An
instance that would straddle a node boundary exits 2: its links differ from the ones the
plan was costed on.

Then, where the release has one (placer/engine_facts.json, ``serving``), the router line
that spreads requests over the instances (SGLang's router, also in prefill/decode mode);
vLLM 0.34 ships none, which the notes say. Disaggregated plans add the engine's transfer
settings: vLLM's ``--kv-transfer-config`` with its KV connector and roles, SGLang's
``--disaggregation-mode`` with a bootstrap port per prefill server. TensorRT-LLM's
disaggregated serving is refused: placer has no checked facts for it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from placer.engine_facts import EngineRelease, ServingFacts
from placer.evaluate import evaluate
from placer.export.api import export_instance
from placer.export.common import Export, ExportError, _args
from placer.ledger import default_expert_map
from placer.plan import Plan, PlanLayout
from placer.report import plan_specs
from placer.rules import get_profile
from placer.serving.disagg import layout_from_text
from placer.serving.timing import instance_workload

#: Said in every serving export: the plan's concurrency is a figure to watch, not a flag.
_CONCURRENCY_NOTE = (
    "The plan serves {} concurrent requests per (decode) instance; no cap is written: how the "
    "engines' caps count requests per data-parallel rank is not in placer's facts."
)
#: Where the router listens (it runs on the head node, beside instance 0).
ROUTER_PORT = 8000


@dataclass(frozen=True)
class Slot:
    """One instance: its kind, index, GPUs (cluster ids), port and node address."""

    kind: str  # "instance", "prefill" or "decode"
    index: int
    gpu_ids: tuple[int, ...]
    port: int
    host: str


def _host(node: int, head: str) -> str:
    """The address of node ``node``: the head's for node 0, a placeholder otherwise."""
    base = head.rsplit(":", 1)[0] if head.count(":") == 1 else head
    return base if node == 0 else f"<node-{node}-ip>"


def pack(sizes: list[int], gpus: int, per_node: int) -> list[tuple[int, ...]] | None:
    """GPUs for instances of ``sizes`` on ``gpus`` GPUs of ``per_node`` per node, as the
    plan costed them: an instance of at most a node inside one node, a larger one on whole
    nodes. Largest first, each on the first node(s) with room; None if they do not fit."""
    nodes = -(-gpus // per_node)
    free = [list(range(k * per_node, min((k + 1) * per_node, gpus))) for k in range(nodes)]
    out: dict[int, tuple[int, ...]] = {}
    for i in sorted(range(len(sizes)), key=lambda j: (-sizes[j], j)):
        g = sizes[i]
        if g > per_node:
            if g % per_node:
                return None
            span = g // per_node
            start = next(
                (
                    k
                    for k in range(nodes - span + 1)
                    if all(len(free[k + m]) == per_node for m in range(span))
                ),
                None,
            )
            if start is None:
                return None
            out[i] = tuple(x for m in range(span) for x in free[start + m])
            for m in range(span):
                free[start + m] = []
            continue
        node = next((k for k in range(nodes) if len(free[k]) >= g), None)
        if node is None:
            return None
        out[i], free[node] = tuple(free[node][:g]), free[node][g:]
    return [out[i] for i in range(len(sizes))]


def _slots(
    kinds: list[tuple[str, int, int]], gpus: int, per_node: int, first_port: int, head: str
) -> list[Slot]:
    """Every instance's slot: (kind, count, GPUs per instance) in order, ports in order."""
    sizes = [g for _, count, g in kinds for _ in range(count)]
    placed = pack(sizes, gpus, per_node)
    if placed is None:
        shape = " + ".join(f"{count} x {g} GPUs" for _, count, g in kinds)
        raise ExportError(
            f"{shape} do not fit {gpus} GPUs of {per_node} per node with every instance "
            "inside one node or on whole nodes, as the plan costed them (docs/engine-rules.md)",
            field="serving",
        )
    out, n = [], 0
    for kind, count, _ in kinds:
        for i in range(count):
            ids = placed[n]
            out.append(Slot(kind, i, ids, first_port + n, _host(ids[0] // per_node, head)))
            n += 1
    return out


def _with_flags(command: str, flags: list[list[object]]) -> str:
    """``command`` (one or several per-node commands) with ``flags`` on each."""
    extra = " \\\n    " + " \\\n    ".join(" ".join(shlex.quote(str(t)) for t in f) for f in flags)
    return "\n\n".join(part + extra for part in command.split("\n\n"))


def _prefixed(command: str, env: str) -> str:
    """``env`` before the command line of one node's command (after its header line)."""
    if command.startswith("#"):
        header, _, rest = command.partition("\n")
        return f"{header}\n{env}{rest}"
    return env + command


def _launch(one: Export, slot: Slot, per_node: int, flags: list[list[object]], env: str) -> str:
    """The launch text of one instance: a header, then its command(s) on its GPUs."""
    body = _with_flags(one.command, flags)
    if len(slot.gpu_ids) <= per_node:
        ids = ",".join(str(g % per_node) for g in slot.gpu_ids)
        body = f"CUDA_VISIBLE_DEVICES={ids} {env}{body}"
        where = f"node {slot.gpu_ids[0] // per_node}, GPUs {ids}"
    else:
        where = f"nodes from {slot.host}, {len(slot.gpu_ids) // per_node} whole nodes"
        body = "\n\n".join(_prefixed(part, env) for part in body.split("\n\n"))
    return f"# {slot.kind} {slot.index} ({where}, port {slot.port})\n{body}"


def _serving(rel: EngineRelease) -> ServingFacts:
    if rel.serving is None:
        raise ExportError(f"{rel.label} records no serving facts", field="serving")
    return rel.serving


def _router(sf: ServingFacts, items: list[list[object]]) -> str:
    """The router's command line, or '' when the release ships none."""
    if sf.router is None:
        return ""
    lines: list[list[object]] = [list(sf.router.command), *items]
    lines += [sf.router_flag("--host", "0.0.0.0"), sf.router_flag("--port", ROUTER_PORT)]
    return "# router\n" + _args(lines)


def _replicated(plan: Plan, engine: str, model_ref: str, head: str, rel: EngineRelease) -> Export:
    """``k`` identical instances and the router over them."""
    s = plan.serving
    assert s is not None and plan.layout is not None
    assert s.instances is not None and s.gpus_per_instance is not None  # a plan with a layout
    sf = _serving(rel)
    cluster = plan_specs(plan).cluster
    per_node = cluster.gpus_per_node
    g = s.gpus_per_instance
    parts: list[str] = []
    notes: list[str] = []
    urls: list[object] = []
    for slot in _slots(
        [("instance", s.instances, g)], cluster.num_gpus, per_node, sf.first_port, head
    ):
        one = export_instance(plan, engine, model_ref, slot.host, rel)
        notes = notes or list(one.notes)
        flags = [rel.flag("--host", "0.0.0.0"), rel.flag("--port", slot.port)]
        parts.append(_launch(one, slot, per_node, flags, ""))
        urls.append(f"http://{slot.host}:{slot.port}")
    router = _router(sf, [[*sf.router_flag("--worker-urls"), *urls]]) if sf.router else ""
    notes.insert(
        0,
        f"{s.instances} identical instances of {g} GPUs, {s.concurrency} concurrent requests "
        f"each ({s.idle_gpus} of {s.cluster_gpus} GPUs idle), ports {sf.first_port}.."
        f"{sf.first_port + s.instances - 1}.",
    )
    notes.append(_CONCURRENCY_NOTE.format(s.concurrency))
    if not router:
        notes.append(
            f"{rel.label} ships no request router ({sf.sources.get('router', '')}): put an "
            "HTTP load balancer in front of the instances' ports."
        )
    return Export(
        command="\n\n".join(parts + ([router] if router else [])),
        env=one.env,
        files=one.files,
        notes=tuple(notes),
    )


def instance_plan(plan: Plan, layout_text: str, split: tuple[int, ...], concurrency: int) -> Plan:
    """``plan`` reduced to one prefill or decode instance: its layout and split, its memory
    ledger at ``concurrency`` and the engine's default (contiguous) expert map."""
    specs = plan_specs(plan)
    lay = layout_from_text(layout_text).model_copy(update={"layers_per_stage": split})
    emap = default_expert_map(specs.model, lay)
    wl = instance_workload(specs.workload, concurrency)
    profile = get_profile(plan.certificate.solver.profile)
    ev = evaluate(specs.model, specs.cluster, wl, lay, profile, emap)
    return plan.model_copy(
        update={
            "layout": PlanLayout.of(lay, split),
            "gpus": ev.gpus,
            "expert_map": emap,
            "estimates": ev.estimates,
            "serving": None,
        }
    )


def _disagg_flags(
    sf: ServingFacts, rel: EngineRelease, slot: Slot
) -> tuple[list[list[object]], str]:
    """The transfer flags and environment prefix of one prefill or decode instance."""
    flags: list[list[object]] = [rel.flag("--host", "0.0.0.0"), rel.flag("--port", slot.port)]
    env = ""
    if sf.disagg == "kv_connector":
        cfg = {"kv_connector": sf.kv_connector, "kv_role": sf.kv_roles[slot.kind]}
        flags.append(rel.flag("--kv-transfer-config", json.dumps(cfg, separators=(",", ":"))))
        assert sf.side_channel_env is not None and sf.first_side_channel_port is not None
        # Instances on one node need distinct side-channel ports; 100 apart leaves room for
        # the connector's per-rank offsets.
        order = slot.port - sf.first_port  # unique per instance
        env = f"{sf.side_channel_env}={sf.first_side_channel_port + 100 * order} "
    else:
        flags.append(rel.flag("--disaggregation-mode", slot.kind))
        flags.append(rel.flag("--disaggregation-transfer-backend", sf.transfer_backend))
        if slot.kind == "prefill":
            assert sf.first_bootstrap_port is not None
            port = sf.first_bootstrap_port + slot.index
            flags.append(rel.flag("--disaggregation-bootstrap-port", port))
    return flags, env


def _disaggregated(
    plan: Plan, engine: str, model_ref: str, head: str, rel: EngineRelease
) -> Export:
    """``x`` prefill and ``y`` decode instances, their transfer settings and the router."""
    s = plan.serving
    assert s is not None and s.disagg is not None
    d = s.disagg
    sf = _serving(rel)
    if sf.disagg is None:
        raise ExportError(
            f"{rel.label} cannot be given a disaggregated plan by placer: "
            f"{sf.sources.get('disagg', 'no checked facts')}; export it for vllm or sglang",
            field="serving.disagg",
        )
    cluster = plan_specs(plan).cluster
    per_node = cluster.gpus_per_node
    slots = _slots(
        [
            ("prefill", d.prefill_instances, d.prefill_gpus),
            ("decode", d.decode_instances, d.decode_gpus),
        ],
        cluster.num_gpus,
        per_node,
        sf.first_port,
        head,
    )
    kinds = [
        ("prefill", d.prefill_layout, d.prefill_split, 1, d.prefill_instances, d.prefill_gpus),
        (
            "decode",
            d.decode_layout,
            d.decode_split,
            d.concurrency,
            d.decode_instances,
            d.decode_gpus,
        ),
    ]
    parts: list[str] = []
    env: dict[str, str] = {}
    files: dict[str, str] = {}
    notes = [
        f"Disaggregated: {d.prefill_instances} x prefill {d.prefill_layout} + "
        f"{d.decode_instances} x decode {d.decode_layout} (concurrency {d.concurrency}), "
        f"{d.idle_gpus} of {s.cluster_gpus} GPUs idle; {d.verdict()} (split {d.status}).",
        "Each kind uses the engine's default expert placement (contiguous slots): the "
        "disaggregated search costs balanced slot counts, not a placement.",
    ]
    notes.append(_CONCURRENCY_NOTE.format(d.concurrency))
    router_items: list[list[object]] = []
    for kind, text, split, conc, _, _ in kinds:
        sub = instance_plan(plan, text, split, conc)
        for slot in (sl for sl in slots if sl.kind == kind):
            i = slot.index
            one = export_instance(sub, engine, model_ref, slot.host, rel)
            flags, prefix = _disagg_flags(sf, rel, slot)
            parts.append(_launch(one, slot, per_node, flags, prefix))
            env.update(one.env)
            for name, content in one.files.items():
                if files.setdefault(name, content) != content:
                    raise ExportError(
                        f"the prefill and decode instances need different {name} files",
                        field="serving.disagg",
                    )
            url = f"http://{slot.host}:{slot.port}"
            if sf.router is not None:
                item = sf.router_flag(f"--{kind}", url)
                if kind == "prefill":
                    item.append(sf.first_bootstrap_port + i if sf.first_bootstrap_port else "none")
                router_items.append(item)
        notes.append(f"{kind} instances: {describe(sub)}.")
        notes += [f"{kind}: {n}" for n in one.notes[1:]]  # [0] restates the layout
    if sf.router is not None:
        parts.append(_router(sf, [sf.router_flag("--pd-disaggregation"), *router_items]))
    else:
        notes.append(
            f"{rel.label} ships no prefill/decode router ({sf.sources.get('router', '')}): a "
            "proxy must send each request to a prefill instance, then to a decode instance."
        )
    return Export(command="\n\n".join(parts), env=env, files=files, notes=tuple(notes))


def describe(plan: Plan) -> str:
    """Layout and split of an instance plan, for the notes."""
    assert plan.layout is not None
    lay = plan.layout
    return (
        f"TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DPattn{lay.dp_attn}, layers per stage "
        f"{','.join(map(str, lay.layers_per_stage))}"
    )


def export_serving(
    plan: Plan, engine: str, model_ref: str, head: str, rel: EngineRelease
) -> Export:
    """The export of a serving plan with several instances or a deployed disaggregated
    split (module docstring)."""
    s = plan.serving
    assert s is not None
    if s.disagg is not None and s.disagg.deployed:
        return _disaggregated(plan, engine, model_ref, head, rel)
    return _replicated(plan, engine, model_ref, head, rel)
