"""What ``placer balance`` returns and the sizes it accepts (see docs/balance.md).

:class:`LayerBalance` is one layer's quality (imbalance, bound, gap, proof);
:class:`BalanceResult` holds the maps in the EPLB / vLLM / SGLang conventions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from placer._base import Frozen
from placer.exceptions import InvalidInputError

Policy = Literal["global", "node"]

#: Largest number of GPUs (EP ranks) ``balance`` accepts.
MAX_GPUS = 1024

#: Largest number of physical expert slots per layer ``balance`` accepts.
MAX_SLOTS = 16_384

#: Largest number of experts per layer ``balance`` accepts.
MAX_EXPERTS = 4096

#: Largest ``--time-limit`` of ``balance``, seconds (a day).
MAX_TIME_LIMIT_S = 86_400.0


#: CP-SAT seconds per layer when no budget says otherwise (deterministic seconds).
DEFAULT_LAYER_SECONDS = 0.5

#: Default time limit of a whole ``balance`` call, seconds.
DEFAULT_TIME_LIMIT_S = 10.0


class LayerBalance(Frozen):
    """The placement of one layer and how good it is."""

    layer: int = Field(description="Layer id (from the load file).")
    imbalance: float = Field(description="Busiest GPU load / mean GPU load.")
    bound: float = Field(description="Lower bound on the imbalance of any placement.")
    bound_kind: str = Field(description="Which bound is tightest.")
    gap: float = Field(description="(imbalance - bound) / imbalance.")
    proven: bool = Field(description="The placement meets the bound: optimal.")
    method: str = Field(description="What produced the placement.")
    eplb_imbalance: float | None = Field(description="The EPLB baseline's, same policy.")
    unbalanced_imbalance: float = Field(description="Without balancing (slot p -> p % E).")
    cross_node_share: float = Field(
        description="Share of load on replicas outside the "
        "expert's home node (0 for the node policy)."
    )


class BalanceResult(Frozen):
    """Maps in the EPLB / vLLM / SGLang conventions, and per-layer quality."""

    physical_to_logical_map: tuple[tuple[int, ...], ...] = Field(
        description="[layers][slots]: logical expert in each physical slot; slot p is on GPU "
        "p // (slots / gpus)."
    )
    logical_to_physical_map: tuple[tuple[tuple[int, ...], ...], ...] = Field(
        description="[layers][experts][max replicas]: slots of each expert, -1 padded."
    )
    logical_replica_count: tuple[tuple[int, ...], ...] = Field(
        description="[layers][experts]: replicas of each expert."
    )
    layers: tuple[LayerBalance, ...] = Field(description="Per-layer quality.")
    gpus: int = Field(description="GPUs (EP ranks).")
    nodes: int = Field(description="Nodes.")
    slots: int = Field(description="Physical expert slots per layer.")
    groups: int | None = Field(description="Expert groups (node policy).")
    policy: Policy = Field(description="global or node.")
    allow_duplicates: bool = Field(
        default=False, description="Whether a GPU may hold two replicas of one expert."
    )
    wall_time_s: float = Field(description="Wall time of the whole balance.")
    time_limit_s: float | None = Field(default=None, description="The time limit, seconds.")
    deterministic: bool = Field(
        default=False, description="CP-SAT limits were deterministic time (reproducible)."
    )
    seed: int = Field(default=0, description="CP-SAT's random seed.")
    wall_clock_stop: bool = Field(
        default=False,
        description="The wall clock stopped a deterministic run: its map may then vary.",
    )
    source: str | None = Field(description="The load file.")

    def summary(self) -> str:
        """Totals over layers."""
        imb = np.array([x.imbalance for x in self.layers])
        bnd = np.array([x.bound for x in self.layers])
        gap = np.array([x.gap for x in self.layers])
        eplb = [x.eplb_imbalance for x in self.layers if x.eplb_imbalance is not None]
        lines = [
            f"layers      {len(self.layers)}, {self.slots} slots on {self.gpus} GPUs in "
            f"{self.nodes} nodes, policy {self.policy}",
            f"imbalance   mean {imb.mean():.4f}, worst {imb.max():.4f}",
            f"bound       mean {bnd.mean():.4f}; gap mean {100 * gap.mean():.3f} %, worst "
            f"{100 * gap.max():.3f} %; {sum(x.proven for x in self.layers)} layers proven",
        ]
        if eplb:
            lines.append(f"EPLB        mean {np.mean(eplb):.4f}, worst {np.max(eplb):.4f}")
        lines.append(f"time        {self.wall_time_s:.2f} s")
        return "\n".join(lines)


def check_sizes(experts: int, gpus: int, slots: int | None) -> None:
    """Refuse sizes beyond the documented limits before any work (exit 2 at the CLI): the
    work grows with GPUs x slots, and past these limits it would not end in useful time."""
    if gpus <= 0:
        raise InvalidInputError(f"must be positive, got {gpus}", field="--gpus")
    if gpus > MAX_GPUS:
        raise InvalidInputError(f"must be at most {MAX_GPUS}, got {gpus}", field="--gpus")
    if experts > MAX_EXPERTS:
        raise InvalidInputError(
            f"{experts} experts per layer; at most {MAX_EXPERTS} are supported", field="load"
        )
    if slots is not None and not 0 < slots <= MAX_SLOTS:
        raise InvalidInputError(f"must be between 1 and {MAX_SLOTS}, got {slots}", field="--slots")


def check_shape(
    experts: int, gpus: int, nodes: int, slots: int, groups: int | None, policy: Policy
) -> None:
    """Reject impossible settings with the option named (exit 2 at the CLI)."""
    if gpus <= 0:
        raise InvalidInputError(f"must be positive, got {gpus}", field="--gpus")
    if nodes <= 0:
        raise InvalidInputError(f"must be positive, got {nodes}", field="--nodes")
    if gpus % nodes:
        raise InvalidInputError(
            f"{gpus} GPUs do not split evenly over {nodes} nodes", field="--nodes"
        )
    if slots % gpus:
        raise InvalidInputError(
            f"{slots} slots do not divide over {gpus} GPUs (slots % gpus must be 0)",
            field="--slots",
        )
    if slots < experts:
        raise InvalidInputError(f"{slots} slots cannot hold {experts} experts", field="--slots")
    if groups is not None and (groups <= 0 or experts % groups):
        raise InvalidInputError(
            f"{groups} groups do not divide {experts} experts", field="--groups"
        )
    if policy == "node":
        if groups is None:
            raise InvalidInputError("the node policy needs --groups", field="--groups")
        if groups % nodes:
            raise InvalidInputError(
                f"{groups} groups do not split evenly over {nodes} nodes", field="--groups"
            )
        if slots % nodes:
            raise InvalidInputError(
                f"{slots} slots do not split evenly over {nodes} nodes", field="--slots"
            )
