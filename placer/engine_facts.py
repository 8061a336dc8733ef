"""Engine facts as versioned data: what each engine release accepts, and how it starts ranks.

The facts live in ``placer/engine_facts.json``, one entry per engine and version
range, each fact with its source (see docs/engine-rules.md). Both the rules
profiles (:mod:`placer.rules`) and the exports (:mod:`placer.export`) read them
through this module, so a new engine release is a data change.

Launcher geometry (which ranks each node starts) is code, one function per
launcher kind named in the data:

- ``even_split`` (vLLM ``--nnodes``): every node runs world / nnodes ranks, node
  ``r`` ranks ``r x local`` onwards (vLLM ``vllm/engine/arg_utils.py``).
- ``sglang_rank_ranges``: node ``r`` runs pipeline ranks
  ``pp_per_node x (r // nodes_per_pp_rank)`` onwards and TP ranks
  ``tp_per_node x (r % nodes_per_pp_rank)`` onwards, with
  ``pp_per_node = max(pp // nnodes, 1)``, ``nodes_per_pp_rank = max(nnodes // pp, 1)``
  and ``tp_per_node = tp // nodes_per_pp_rank`` (SGLang
  ``entrypoints/engine.py`` ``_calculate_rank_ranges``). Layouts whose ranks
  this does not cover (TP4 x PP3 on two nodes starts 8 of 12 ranks) never start.
- ``mpi`` (TensorRT-LLM): Slurm or MPI starts every rank; no constraint here.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from importlib import resources
from typing import Literal

from packaging.version import InvalidVersion, Version
from pydantic import Field

from placer._base import Frozen
from placer.exceptions import InvalidInputError

EngineName = Literal["vllm", "sglang", "trtllm"]
LauncherKind = Literal["even_split", "sglang_rank_ranges", "mpi"]
#: Engine names, and how the facts spell them in messages.
ENGINE_LABELS: dict[str, str] = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM"}


class ArchitectureFact(Frozen):
    """What an engine does with one model architecture (HF ``architectures[0]``)."""

    expert_map: bool = Field(
        description="The model class applies an initial expert map given at launch."
    )


class TrtllmKeys(Frozen):
    """TensorRT-LLM ``--config`` YAML keys and values, from the release's ``llm_args.py``."""

    llm_args_keys: tuple[str, ...] = Field(description="Top-level keys placer may write.")
    kv_cache_config_keys: tuple[str, ...] = Field(description="Keys of kv_cache_config.")
    kv_cache_dtypes: tuple[str, ...] = Field(description="Values kv_cache_config.dtype takes.")
    moe_config_keys: tuple[str, ...] = Field(description="Keys of moe_config.")
    moe_backends: tuple[str, ...] = Field(description="Values moe_config.backend takes.")
    load_balancer_keys: tuple[str, ...] = Field(description="Keys of moe_config.load_balancer.")
    load_balancer_required: tuple[str, ...] = Field(
        description="load_balancer keys the release requires (none known in placer's range)."
    )
    pp_partition: bool = Field(description="The release has the pp_partition key.")


class RouterFacts(Frozen):
    """A request router that ships with (or beside) an engine release."""

    command: tuple[str, ...] = Field(description="How the router starts, before its flags.")
    version: str = Field(description="The router release the flags were read from.")
    flags: dict[str, tuple[str, ...] | None] = Field(
        description="Router flags placer writes -> allowed values (null: any value)."
    )


class ServingFacts(Frozen):
    """How an engine release serves several instances and disaggregated prefill/decode
    (docs/engine-rules.md, "Serving plans")."""

    first_port: int = Field(description="The server's default HTTP port; instance i uses +i.")
    router: RouterFacts | None = Field(
        description="The engine's request router (null: the release ships none)."
    )
    disagg: Literal["kv_connector", "pd_mode"] | None = Field(
        description="kv_connector: vLLM's --kv-transfer-config; pd_mode: SGLang's "
        "--disaggregation-mode; null: placer has no checked facts for this release."
    )
    kv_connector: str | None = Field(
        default=None, description="The KV connector placer names (kv_connector form)."
    )
    kv_roles: dict[str, str] = Field(
        default_factory=dict, description="prefill/decode -> kv_role (kv_connector form)."
    )
    transfer_backend: str | None = Field(
        default=None, description="The KV transfer backend placer names (pd_mode form)."
    )
    first_bootstrap_port: int | None = Field(
        default=None, description="Default bootstrap port of a prefill server (pd_mode)."
    )
    side_channel_env: str | None = Field(
        default=None,
        description="Environment variable of the KV connector's side-channel port, which "
        "must differ between instances on one node (kv_connector form).",
    )
    first_side_channel_port: int | None = Field(
        default=None, description="Default side-channel port (kv_connector form)."
    )
    sources: dict[str, str] = Field(description="Fact -> file and version it was read in.")

    def router_flag(self, name: str, value: object = None) -> list[object]:
        """A router flag the facts record (KeyError otherwise: a bug in placer)."""
        assert self.router is not None
        if name not in self.router.flags:
            raise KeyError(f"{name} is not recorded for {self.router.version}")
        return [name] if value is None else [name, value]


class EngineRelease(Frozen):
    """One engine over a version range: flags, launcher, architectures, with sources."""

    engine: EngineName = Field(description="vllm, sglang or trtllm.")
    first: str = Field(description="First version the entry covers.")
    below: str = Field(description="The entry covers versions below this one.")
    checked: str = Field(description="The release (or commit) the facts were read from.")
    sources: dict[str, str] = Field(description="Fact group -> file and version it was read in.")
    flags: dict[str, tuple[str, ...] | None] = Field(
        description="Launch flags placer writes -> allowed values (null: any value)."
    )
    deprecated_flags: dict[str, str] = Field(description="Deprecated flag -> its replacement.")
    env: tuple[str, ...] = Field(description="Environment variables placer may set.")
    launcher: LauncherKind = Field(description="How the launcher assigns ranks to nodes.")
    tp_across_nodes: bool = Field(description="A TP group may span nodes.")
    expert_dp: bool = Field(
        description="Experts may be replicated inside a stage (MoE data parallelism) in a "
        "layout placer can express."
    )
    expert_map_input: Literal["none", "init_expert_location", "load_balancer"] = Field(
        description="How an initial expert map reaches the engine."
    )
    architectures: dict[str, ArchitectureFact] = Field(
        description="Architectures the engine has a model class for."
    )
    trtllm: TrtllmKeys | None = Field(description="TensorRT-LLM YAML facts (else null).")
    serving: ServingFacts | None = Field(
        default=None, description="Several instances and disaggregated serving (else null)."
    )

    @property
    def label(self) -> str:
        """Engine and range, e.g. ``SGLang 0.5.23 .. <0.6``."""
        return f"{ENGINE_LABELS[self.engine]} {self.first} .. <{self.below}"

    def covers(self, version: Version) -> bool:
        """Whether ``version`` lies in this entry's range."""
        return Version(self.first) <= version < Version(self.below)

    def flag(self, name: str, value: object = None) -> list[object]:
        """``[name]`` or ``[name, value]``, after checking the release has the flag.

        Raises
        ------
        KeyError
            If the flag is not recorded for this release (a bug in placer, not an input
            error: every flag an export writes must be in the facts).
        ValueError
            If the value is not one the release accepts.
        """
        if name not in self.flags:
            raise KeyError(f"{name} is not recorded for {self.label}")
        allowed = self.flags[name]
        if allowed is not None and value is not None and str(value) not in allowed:
            raise ValueError(f"{name} {value} is not accepted by {self.label}: {allowed}")
        return [name] if value is None else [name, value]


class EngineFacts(Frozen):
    """Every engine release placer knows, and the architectures of its bundled models."""

    about: str = Field(description="What the file holds.")
    model_architectures: dict[str, str] = Field(
        description="Bundled model id -> HF architectures[0]."
    )
    releases: tuple[EngineRelease, ...] = Field(description="One entry per engine and range.")


@cache
def load_facts() -> EngineFacts:
    """The facts shipped with placer (``placer/engine_facts.json``)."""
    text = resources.files("placer").joinpath("engine_facts.json").read_text(encoding="utf-8")
    return EngineFacts.model_validate(json.loads(text))


@cache
def releases(engine: str) -> tuple[EngineRelease, ...]:
    """The known ranges of one engine, newest first."""
    found = [r for r in load_facts().releases if r.engine == engine]
    return tuple(sorted(found, key=lambda r: Version(r.first), reverse=True))


def release(engine: str, version: str | None = None) -> EngineRelease:
    """The facts for ``engine`` at ``version`` (default: the newest range known).

    Raises
    ------
    InvalidInputError
        (field ``--engine-version``) if the version does not parse or no known range
        holds it; the message lists the known ranges.
    """
    known = releases(engine)
    if not known:
        raise InvalidInputError(f"no facts recorded for engine {engine!r}", field="--engine")
    if version is None:
        return known[0]
    try:
        v = Version(version)
    except InvalidVersion:
        raise InvalidInputError(
            f"{version!r} is not a version number", field="--engine-version"
        ) from None
    for r in known:
        if r.covers(v):
            return r
    ranges = "; ".join(r.label for r in known)
    raise InvalidInputError(
        f"placer has no facts for {ENGINE_LABELS[engine]} {version}; known: {ranges} "
        "(docs/engine-rules.md)",
        field="--engine-version",
    )


def architecture(model_name: str) -> str | None:
    """HF ``architectures[0]`` of a bundled model id, else None (not known to placer)."""
    return load_facts().model_architectures.get(model_name)


# ------------------------------------------------------------------ launcher geometry
def sglang_rank_ranges(tp: int, pp: int, nnodes: int, node: int) -> tuple[range, range]:
    """Pipeline and TP ranks SGLang's launcher starts on ``node`` (``_calculate_rank_ranges``)."""
    pp_per_node = max(pp // nnodes, 1)
    nodes_per_pp_rank = max(nnodes // pp, 1)
    tp_per_node = tp // nodes_per_pp_rank
    pp_ranks = range(
        pp_per_node * (node // nodes_per_pp_rank), pp_per_node * (node // nodes_per_pp_rank + 1)
    )
    tp_ranks = range(
        tp_per_node * (node % nodes_per_pp_rank), tp_per_node * (node % nodes_per_pp_rank + 1)
    )
    return pp_ranks, tp_ranks


def node_counts(gpu_ids: list[int], gpus_per_node: int) -> list[int]:
    """GPUs used on each node, in node order (nodes without a used GPU left out)."""
    per = Counter(g // gpus_per_node for g in gpu_ids)
    return [per[n] for n in sorted(per)]


def launch_violation(
    rel: EngineRelease, tp: int, pp: int, dp: int, counts: list[int]
) -> str | None:
    """Why the engine's launcher cannot start this layout on nodes holding ``counts`` GPUs.

    Parameters
    ----------
    rel
        The engine release.
    tp, pp
        The engine's own TP degree (GPUs per stage for SGLang and TensorRT-LLM, attention TP
        for vLLM) and pipeline degree.
    dp
        vLLM's data-parallel size (1 for the other engines).
    counts
        GPUs the plan uses on each node, node by node.

    Returns
    -------
    str or None
        None when every rank starts on the node the plan puts it on; else the reason.
    """
    nodes = len(counts)
    if nodes <= 1 or rel.launcher == "mpi":
        return None
    name = ENGINE_LABELS[rel.engine]
    if rel.launcher == "even_split":
        if dp > 1:
            # vLLM's multi-node DP: whole engines (tp x pp GPUs) per node, any number each.
            engine = tp * pp
            bad = [c for c in counts if c % engine]
            if bad:
                return (
                    f"{name}'s multi-node data-parallel launch places whole engines of tp x pp "
                    f"= {engine} GPUs on each node; the plan uses {counts} GPUs per node"
                )
            return None
        if len(set(counts)) > 1:
            return (
                f"{name}'s --nnodes launcher starts world / nnodes ranks on every node; the plan "
                f"uses {counts} GPUs per node (docs/engine-rules.md)"
            )
        return None
    # sglang_rank_ranges
    if (tp * pp) % nodes:
        return f"{name} needs (tp x pp) % nnodes == 0: tp {tp} x pp {pp} over {nodes} nodes"
    started: list[tuple[int, int]] = []
    for node in range(nodes):
        pp_ranks, tp_ranks = sglang_rank_ranges(tp, pp, nodes, node)
        local = len(pp_ranks) * len(tp_ranks)
        if local != counts[node]:
            return (
                f"{name}'s launcher starts {local} ranks on node {node} (pipeline ranks "
                f"{pp_ranks.start}..{pp_ranks.stop - 1}, TP ranks {tp_ranks.start}.."
                f"{tp_ranks.stop - 1}); the plan uses {counts[node]} GPUs there "
                "(docs/engine-rules.md)"
            )
        started += [(p, t) for p in pp_ranks for t in tp_ranks]
    missing = tp * pp - len(set(started))
    if missing:
        return (
            f"{name}'s launcher starts {len(set(started))} of {tp * pp} ranks for tp {tp} x pp "
            f"{pp} on {nodes} nodes; {missing} ranks never start and the server hangs"
        )
    return None
