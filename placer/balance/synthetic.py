"""Seeded synthetic routing counts shaped like a trained MoE router's (:func:`synthetic_loads`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from placer.balance.loads import LoadStats


def _cap_probabilities(p: NDArray[np.float64], cap: float) -> NDArray[np.float64]:
    """Normalise ``p`` to sum 1 with no entry above ``cap``, scaling the rest up to make room."""
    p = p / p.sum()
    capped = np.zeros(p.shape, dtype=bool)
    while True:
        over = (p > cap) & ~capped
        if not over.any():
            return p
        capped |= over
        free = 1.0 - cap * int(capped.sum())
        rest = p[~capped]
        p = p.copy()
        p[capped] = cap
        if rest.size:
            p[~capped] = rest * (free / rest.sum())


def synthetic_loads(
    layers: int | Sequence[int],
    experts: int,
    top_k: int,
    tokens: int,
    zipf_s_range: tuple[float, float],
    groups: int = 1,
    group_sigma: float = 0.0,
    seed: int = 0,
    *,
    noise_sigma: float = 0.2,
    name: str | None = None,
) -> LoadStats:
    """Seeded, skewed routing counts shaped like a trained MoE router's.

    Per layer, with one ``numpy.random.default_rng(seed)`` drawn in this order:

    1. a Zipf exponent ``s ~ U(zipf_s_range)``;
    2. a random permutation giving each expert its popularity rank ``1..experts``;
    3. one lognormal(0, ``group_sigma``) factor per group (``groups`` groups of consecutive
       experts; ``group_sigma = 0`` gives factors of exactly 1 and keeps the other draws);
    4. a lognormal(0, ``noise_sigma``) factor per expert.

    ``p_e ∝ rank_e^(-s) · group factor · noise``, capped at ``1/top_k`` (a token picks an
    expert at most once; the excess is spread over the others in proportion), then
    ``counts ~ Multinomial(tokens · top_k, p)``, clipped at ``tokens``.

    Parameters
    ----------
    layers
        A number of layers (ids ``0..n-1``) or the layer ids.
    experts, top_k, tokens
        Experts per layer, experts chosen per token, tokens routed.
    zipf_s_range
        ``(low, high)`` of the per-layer Zipf exponent.
    groups, group_sigma
        Expert groups and the spread of their lognormal skew.
    seed
        Seed of the generator; the same arguments give the same loads.
    """
    layer_ids = tuple(range(layers)) if isinstance(layers, int) else tuple(layers)
    if not layer_ids:
        raise ValueError("layers must be positive")
    if experts <= 0 or top_k <= 0 or tokens <= 0:
        raise ValueError("experts, top_k and tokens must be positive")
    if top_k > experts:
        raise ValueError(f"top_k ({top_k}) cannot exceed experts ({experts})")
    if groups <= 0 or experts % groups:
        raise ValueError(f"experts ({experts}) must be a positive multiple of groups ({groups})")
    lo, hi = zipf_s_range
    if not 0 <= lo <= hi:
        raise ValueError(f"zipf_s_range must satisfy 0 <= low <= high, got {zipf_s_range}")
    if group_sigma < 0 or noise_sigma < 0:
        raise ValueError("group_sigma and noise_sigma must be non-negative")
    rng = np.random.default_rng(seed)
    group_of = np.arange(experts) // (experts // groups)
    rows: list[tuple[float, ...]] = []
    for _ in layer_ids:
        s = rng.uniform(lo, hi)
        rank = rng.permutation(experts) + 1
        group_factor = rng.lognormal(0.0, group_sigma, groups)
        noise = rng.lognormal(0.0, noise_sigma, experts)
        p = rank.astype(np.float64) ** (-s) * group_factor[group_of] * noise
        p = _cap_probabilities(p, 1.0 / top_k)
        counts = np.minimum(rng.multinomial(tokens * top_k, p), tokens)
        rows.append(tuple(float(c) for c in counts))
    source = (
        f"synthetic: placer.balance.synthetic.synthetic_loads(experts={experts}, top_k={top_k}, "
        f"tokens={tokens}, zipf_s_range=({lo}, {hi}), groups={groups}, "
        f"group_sigma={group_sigma}, seed={seed}, noise_sigma={noise_sigma}) over "
        f"{len(layer_ids)} layers"
    )
    return LoadStats(
        name=name or f"synthetic-{experts}x{top_k}-seed{seed}",
        layers=layer_ids,
        load=tuple(rows),
        top_k=top_k,
        source=source,
    )
