"""Shared parts of the engine exports: the result record, the plan context, the model
reference, shell quoting and the engines' default layer splits (docs/engine-rules.md)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from placer._base import Frozen
from placer.engine_facts import (
    EngineRelease,
    architecture,
    node_counts,
)
from placer.exceptions import InvalidInputError
from placer.layout import Layout
from placer.plan import Plan, PlanLayout
from placer.report import (
    PlanSpecs,
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
