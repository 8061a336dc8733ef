"""``export_plan``: pick the engine's builder and run it on a plan."""

from __future__ import annotations

from collections.abc import Callable

from placer.engine_facts import EngineRelease, release
from placer.export.checks import (
    _check_architecture,
    _common_notes,
)
from placer.export.common import (
    ENGINES,
    HF_REPOS,
    Engine,
    Export,
    ExportError,
    _Ctx,
    model_reference,
)
from placer.export.sglang import (
    _sglang,
)
from placer.export.trtllm import (
    _trtllm,
)
from placer.export.vllm import (
    _vllm,
)
from placer.plan import Plan
from placer.report import (
    describe_layout,
    plan_specs,
)

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
    s = plan.serving
    if s is not None and ((s.instances or 0) > 1 or (s.disagg is not None and s.disagg.deployed)):
        from placer.export.serving import export_serving

        return export_serving(plan, engine, model_reference(plan, model_ref), nodes_addr, rel)
    return export_instance(plan, engine, model_ref, nodes_addr, rel)


def export_instance(
    plan: Plan, engine: str, model_ref: str | None, nodes_addr: str, rel: EngineRelease
) -> Export:
    """The launch of one instance of ``plan``'s layout on its GPUs (see :func:`export_plan`)."""
    assert plan.layout is not None
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
