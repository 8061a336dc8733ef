"""Reading the fields of a Hugging Face ``config.json``: typed, located, recorded.

:class:`ConfigReader` remembers every field read and every value assumed (so ``placer
inspect`` can list them); the helpers read the blocks that several families share
(routed experts, grouped-query attention) with one clear error naming the file and
field. The per-family readers are in :mod:`placer.hf_config`.
"""

from __future__ import annotations

from typing import Any

from placer.exceptions import InvalidInputError
from placer.limits import MAX_CONFIG_INT
from placer.model import Assumption, AttentionSpec, LayerSpec, MoESpec


class ConfigReader:
    """Reads fields of one config, remembering what was read and what was assumed."""

    def __init__(self, raw: dict[str, Any], source: str, prefix: str = ""):
        self.raw = raw
        self.source = source
        self.prefix = prefix
        self.read: list[str] = []
        self.assumed: list[Assumption] = []

    def _loc(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def req(self, name: str, kind: type | str = int, at_most: int = MAX_CONFIG_INT) -> Any:
        """A required field of the given type (ints must be positive, and at most
        ``at_most``)."""
        if name not in self.raw or self.raw[name] is None:
            raise InvalidInputError("required field is missing", self.source, self._loc(name))
        return self._typed(name, self.raw[name], kind, at_most)

    def opt(self, name: str, default: Any, why: str, kind: type | str = int) -> Any:
        """An optional field; when absent, ``default`` is used and recorded as assumed."""
        if name in self.raw and self.raw[name] is not None:
            return self._typed(name, self.raw[name], kind)
        self.assumed.append(Assumption(field=self._loc(name), value=repr(default), why=why))
        return default

    def get(self, name: str, default: Any = None) -> Any:
        """An optional field whose absence is normal for the family (not an assumption)."""
        value = self.raw.get(name, default)
        if name in self.raw:
            self.read.append(self._loc(name))
        return value

    def _typed(
        self, name: str, value: Any, kind: type | str, at_most: int = MAX_CONFIG_INT
    ) -> Any:
        self.read.append(self._loc(name))
        if kind is int or kind == "index":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInputError(
                    f"must be an integer, got {value!r}", self.source, self._loc(name)
                )
            # Sizes must be positive; layer indices and offsets ("index") may be 0.
            if value < (0 if kind == "index" else 1):
                raise InvalidInputError(
                    f"must be {'non-negative' if kind == 'index' else 'positive'}, got {value}",
                    self.source,
                    self._loc(name),
                )
            # Checked before anything is built from it (a list of 1e30 layers would never end).
            if value > at_most:
                raise InvalidInputError(
                    f"must be at most {at_most}, got {value}", self.source, self._loc(name)
                )
        elif kind is bool:
            if not isinstance(value, bool):
                raise InvalidInputError(
                    f"must be true or false, got {value!r}", self.source, self._loc(name)
                )
        elif kind is int | None:  # pragma: no cover - not used
            pass
        return value


def layer_specs(
    n: int,
    is_moe: list[bool],
    mixers: list[str] | None = None,
    windows: list[int | None] | None = None,
) -> tuple[LayerSpec, ...]:
    return tuple(
        LayerSpec(
            mixer=("attention" if mixers is None else mixers[i]),
            ffn="moe" if is_moe[i] else "dense",
            window=None if windows is None else windows[i],
        )
        for i in range(n)
    )


def check_heads(
    heads_reader: ConfigReader,
    heads_key: str,
    heads: int,
    kv_reader: ConfigReader,
    kv_key: str,
    kv: int,
) -> None:
    """Query heads must be a multiple of KV heads; the error names the file's KV field."""
    if heads % kv:
        raise InvalidInputError(
            f"{heads_reader._loc(heads_key)} ({heads}) must be a multiple of "
            f"{kv_reader._loc(kv_key)} ({kv})",
            kv_reader.source,
            kv_reader._loc(kv_key),
        )


def check_top_k(
    k_reader: ConfigReader,
    k_key: str,
    top_k: int,
    e_reader: ConfigReader,
    e_key: str,
    experts: int,
) -> None:
    """Experts per token must not exceed the experts; the error names the file's top-k field."""
    if top_k > experts:
        raise InvalidInputError(
            f"top_k ({top_k}) exceeds num_experts ({experts}): {k_reader._loc(k_key)} "
            f"must be at most {e_reader._loc(e_key)}",
            k_reader.source,
            k_reader._loc(k_key),
        )


def read_moe(
    r: ConfigReader,
    experts_key: str,
    top_k_key: str = "num_experts_per_tok",
    k_reader: ConfigReader | None = None,
    **fields: Any,
) -> MoESpec:
    """Read the routed-expert count and top-k (checked against each other) into a MoESpec."""
    kr = k_reader or r
    experts = r.req(experts_key)
    top_k = kr.req(top_k_key)
    check_top_k(kr, top_k_key, top_k, r, experts_key, experts)
    n_group = fields.get("n_group")
    if n_group is not None:
        n_group = r._typed("n_group", n_group, int)
        if experts % n_group:
            raise InvalidInputError(
                f"n_group ({n_group}) must divide {r._loc(experts_key)} ({experts})",
                r.source,
                r._loc("n_group"),
            )
    topk_group = fields.get("topk_group")
    if topk_group is not None:
        r._typed("topk_group", topk_group, int)
    return MoESpec(num_experts=experts, top_k=top_k, **fields)


def read_gqa(
    r: ConfigReader,
    *,
    heads_key: str = "num_attention_heads",
    hidden: int,
    qkv_bias: bool = False,
    o_bias: bool = False,
    qk_norm: str = "none",
    sinks: bool = False,
) -> AttentionSpec:
    heads = r.req(heads_key)
    kv = r.opt("num_key_value_heads", heads, "absent means one KV head per query head (MHA)")
    head_dim = r.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise InvalidInputError(
                f"hidden_size ({hidden}) is not a multiple of {heads_key} ({heads}) and no "
                "head_dim is given",
                r.source,
                r._loc(heads_key),
            )
        head_dim = hidden // heads
    check_heads(r, heads_key, heads, r, "num_key_value_heads", kv)
    return AttentionSpec(
        kind="mha" if kv == heads else "gqa",
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        qk_norm=qk_norm,
        sinks=sinks,
    )
