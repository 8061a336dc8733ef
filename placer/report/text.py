"""Number formats and Markdown tables shared by the report's sections."""

from __future__ import annotations

from collections.abc import Sequence

from placer.plan import PlanLayout

GB = 1e9
#: Above this many instances, a constraint family is summarised in one row.
MAX_ROWS = 16


def gb(nbytes: float) -> str:
    """Bytes as GB (1e9 bytes) with two decimals."""
    return f"{nbytes / GB:.2f}"


def ms(seconds: float) -> str:
    """Seconds as milliseconds with three decimals."""
    return f"{seconds * 1e3:.3f}"


def pct(fraction: float) -> str:
    """A fraction as a percentage with three decimals."""
    return f"{100 * fraction:.3f} %"


def num(x: float) -> str:
    """A count with thousands separators, or a figure with six significant digits."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:.6g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table (``|`` and newlines inside cells escaped)."""

    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out.extend("| " + " | ".join(esc(c) for c in row) + " |" for row in rows)
    return out


def id_ranges(ids: Sequence[int]) -> str:
    """Integers as compact ranges: 0-3, 5, 7-8."""
    parts: list[str] = []
    items = sorted(ids)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ", ".join(parts)


def yes(ok: bool) -> str:
    """``yes``, or a bold ``no``."""
    return "yes" if ok else "**no**"


def describe_layout(lay: PlanLayout) -> str:
    """Degrees as text: ``TP2 PP1 EP8 ETP1 DPattn4``."""
    text = f"TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DPattn{lay.dp_attn}"
    if lay.redundant_experts:
        text += f" +{lay.redundant_experts} redundant slots"
    return text
