"""Systematic plan mutations through ``placer verify``: every field of a stored plan replaced
by each of a set of awkward values (and deleted), counted by exit code.

Run from the repository root::

    python benchmarks/verify_mutations.py [PLAN] [--limit N]

Prints one table: exit code, count, share, slowest case; then every case that ended in a
traceback (exit 1) or ran past 60 s. The target is 0 of both (see docs/certificate.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from placer.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PLAN = ROOT / "tests" / "data" / "plans" / "seed-toy-8gpus.plan.json"

#: Replacement values: the types and magnitudes a hand edit or a broken tool produces.
VALUES: tuple[Any, ...] = (
    0,
    -1,
    1,
    9,
    2**31,
    10**30,
    1e30,
    -1e30,
    0.5,
    True,
    False,
    None,
    "",
    "x",
    [],
    {},
    [1, 2],
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every location inside a JSON value (long lists: first two and last items only)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        idx = range(len(value)) if len(value) <= 3 else [0, 1, len(value) - 1]
        for i in idx:
            yield from paths(value[i], (*prefix, i))


def mutated(plan: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    """A copy of ``plan`` with the item at ``path`` replaced by ``value`` (or deleted)."""
    out = copy.deepcopy(plan)
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def run(plan_path: Path, limit: int | None) -> int:
    """Run the campaign; returns the number of tracebacks and overlong runs."""
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    cases = [(p, v, False) for p in paths(plan) if p for v in VALUES]
    cases += [(p, None, True) for p in paths(plan) if p]
    if limit is not None:
        cases = cases[:: max(1, len(cases) // limit)][:limit]
    codes: Counter[int] = Counter()
    slowest = (0.0, "")
    failures: list[str] = []
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "plan.json"
        for path, value, delete in cases:
            target.write_text(json.dumps(mutated(plan, path, value, delete)), encoding="utf-8")
            label = ".".join(map(str, path)) + (" deleted" if delete else f" = {value!r}")
            start = time.perf_counter()
            res = runner.invoke(main, ["verify", str(target)])
            took = time.perf_counter() - start
            code = res.exit_code
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                code = 1
                tb = "".join(traceback.format_exception(res.exception))[-400:]
                failures.append(f"traceback: {label}\n{tb}")
            elif took > 60:
                failures.append(f"{took:.1f} s: {label}")
            codes[code] += 1
            if took > slowest[0]:
                slowest = (took, label)
    total = sum(codes.values())
    print(f"{total} mutations of {plan_path.name}")
    print(f"{'exit':>4}  {'count':>6}  {'share':>6}")
    for code in sorted(codes):
        print(f"{code:>4}  {codes[code]:>6}  {codes[code] / total:>6.1%}")
    print(f"slowest: {slowest[0]:.2f} s ({slowest[1]})")
    for line in failures:
        print(line)
    return len(failures)


def cli() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", nargs="?", type=Path, default=DEFAULT_PLAN)
    ap.add_argument("--limit", type=int, default=None, help="Run about this many cases.")
    args = ap.parse_args()
    sys.exit(1 if run(args.plan, args.limit) else 0)


if __name__ == "__main__":
    cli()
