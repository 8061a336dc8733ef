"""Fuzz campaign: the properties of ``tests/test_fuzz_inputs.py`` at scale.

Usage::

    python benchmarks/fuzz_campaign.py --cases 10000 --seed 0 --out fuzz-failures

The cases are split over the properties by the shares in ``PROPERTIES`` (loaders,
``placer inspect``/``evaluate`` in-process, round trips, ``solve`` against a brute
force, ``placer solve`` then ``placer verify``). Each property runs under Hypothesis
with a fixed seed, counting every case; a failing case is recorded rather than
stopping the run. Failures are grouped by signature (exception type, where it was
raised, the message without its numbers); for the first few signatures of each
property the case is shrunk by Hypothesis and the minimal reproducer written to
``--out`` as JSON (the record, plus the input file itself where there is one). Cases
that hit a bug already listed in ``KNOWN_BUGS`` are counted apart.

The summary table is printed at the end; the exit code is 1 if any new failure was
found, else 0.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests import strategies as S  # noqa: E402
from tests.test_fuzz_inputs import PROPERTIES  # noqa: E402


@dataclass
class Outcome:
    """What one property's run found."""

    name: str
    cases: int = 0
    failures: int = 0
    known: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    signatures: dict[str, tuple[Any, str]] = field(default_factory=dict)  # first case, error
    by_signature: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    saved: list[str] = field(default_factory=list)


def signature(exc: BaseException) -> str:
    """Exception type, where it was raised (innermost frame in placer/, else the last), and
    the message's first line with numbers and quoted text blanked out."""
    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if "/placer/" in f.filename] or frames[-1:]
    where = f"{Path(inner[-1].filename).name}:{inner[-1].name}" if inner else "?"
    cause = exc.__cause__
    if isinstance(exc, AssertionError) and cause is not None:  # "X instead of ..." wrappers
        where += " <- " + signature(cause).split(" | ")[0]
    first = (str(exc).splitlines() or [""])[0]
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
    first = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", first)
    return f"{type(exc).__name__} at {where} | {first[:90]}"


def jsonable(x: Any) -> Any:
    """A JSON-able form of a drawn value (cases, instances, bytes, tuples)."""
    if isinstance(x, S.Case | S.SolveInstance):
        return x.to_json()
    if isinstance(x, bytes):
        return {"bytes_base64": base64.b64encode(x).decode(), "text": x.decode("utf-8", "replace")}
    if isinstance(x, tuple | list):
        return [jsonable(v) for v in x]
    return x


def input_files(x: Any) -> dict[str, str]:
    """The input files a reproducer consists of, by suffix, to replay it with the CLI."""
    if isinstance(x, S.Case):
        return {f"{x.kind}.json": S.dumps(x.data)}
    if isinstance(x, S.SolveInstance):
        return {"model.json": S.dumps(x.model), "hardware.json": S.dumps(x.hardware),
                "workload.json": S.dumps(x.workload)}
    if isinstance(x, tuple):
        out: dict[str, str] = {}
        for v in x:
            if isinstance(v, bytes):
                out["file.json"] = v.decode("utf-8", "replace")
            else:
                out.update(input_files(v))
        return out
    return {}


def _settings(n: int, phases: list[Phase]) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=False,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


def run_property(
    name: str,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any, Path], str],
    n: int,
    seed: int,
) -> Outcome:
    """Run ``check`` on ``n`` drawn cases, recording failures instead of stopping."""
    out = Outcome(name)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)

        def body(x: Any) -> None:
            out.cases += 1
            try:
                result = check(x, folder)
            except Exception as exc:
                sig = signature(exc)
                out.failures += 1
                out.by_signature[sig] += 1
                if sig not in out.signatures:
                    out.signatures[sig] = (x, "".join(traceback.format_exception(exc))[-4000:])
                return
            if result.startswith("known:"):
                out.known[result.removeprefix("known:")] += 1
            out.outcomes[result] += 1

        test = hypothesis_seed(seed)(_settings(n, [Phase.generate])(given(strategy)(body)))
        start = time.monotonic()
        test()
        out.seconds = time.monotonic() - start
    return out


def shrink(
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any, Path], str],
    sig: str,
    n: int,
    seed: int,
    budget_s: float,
) -> Any | None:
    """The minimal case failing with signature ``sig``: replays the run (same seed, so the
    same cases) until that failure, then lets Hypothesis shrink it within ``budget_s``."""
    last: list[Any] = []
    deadline = time.monotonic() + budget_s
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)

        def body(x: Any) -> None:
            try:
                check(x, folder)
            except Exception as exc:
                if signature(exc) == sig:
                    last.append(x)
                    if time.monotonic() > deadline and len(last) > 1:
                        return  # out of time: stop shrinking further (keeps the last)
                    raise

        test = hypothesis_seed(seed)(
            _settings(n, [Phase.generate, Phase.shrink])(given(strategy)(body))
        )
        with contextlib.suppress(Exception):
            test()
    return last[-1] if last else None


def save(out_dir: Path, prop: str, k: int, sig: str, case: Any, error: str) -> list[str]:
    """Write a reproducer's record and its input files; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{prop}-{k}"
    record = {"property": prop, "signature": sig, "error": error, "case": jsonable(case)}
    paths = [out_dir / f"{stem}.json"]
    paths[0].write_text(json.dumps(record, indent=1, allow_nan=True, default=str) + "\n")
    for suffix, text in input_files(case).items():
        p = out_dir / f"{stem}.{suffix}"
        p.write_text(text)
        paths.append(p)
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> int:
    """Run the campaign and print the summary table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10000, help="Cases in all (default 10000).")
    ap.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0).")
    ap.add_argument("--out", type=Path, default=Path("fuzz-failures"),
                    help="Folder for minimal reproducers (JSON).")
    ap.add_argument("--keep", type=int, default=3,
                    help="Reproducers shrunk and saved per property (default 3).")
    ap.add_argument("--only", action="append", default=None, choices=sorted(PROPERTIES),
                    help="Run only this property (repeatable).")
    ap.add_argument("--shrink-budget", type=float, default=120.0,
                    help="Seconds of shrinking per reproducer (default 120).")
    args = ap.parse_args(argv)
    if args.cases <= 0:
        ap.error("--cases must be positive")

    names = args.only or list(PROPERTIES)
    total_share = sum(PROPERTIES[p][2] for p in names)
    results: list[Outcome] = []
    start = time.monotonic()
    for i, name in enumerate(names):
        strategy, check, share = PROPERTIES[name]
        n = max(1, round(args.cases * share / total_share))
        seed = args.seed * 1000 + i
        print(f"[fuzz] {name}: {n} cases (seed {seed}) ...", file=sys.stderr, flush=True)
        res = run_property(name, strategy, check, n, seed)
        for k, (sig, (case, error)) in enumerate(res.signatures.items()):
            if k >= args.keep:
                break
            print(f"[fuzz]   shrinking: {sig}", file=sys.stderr, flush=True)
            small = shrink(strategy, check, sig, n, seed, args.shrink_budget)
            written = save(args.out, name, k, sig, small if small is not None else case, error)
            res.saved.append(written[0])
        print(f"[fuzz]   {res.cases} cases, {res.failures} failures, {res.seconds:.1f} s "
              f"{dict(res.outcomes)}", file=sys.stderr, flush=True)
        results.append(res)
    elapsed = time.monotonic() - start

    print()
    print(f"fuzz campaign: seed {args.seed}, {sum(r.cases for r in results)} cases")
    header = f"{'property':<22} {'cases':>7} {'failures':>9} {'distinct':>9} {'known':>6} " \
             f"{'time':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:<22} {r.cases:>7} {r.failures:>9} {len(r.signatures):>9} "
              f"{sum(r.known.values()):>6} {r.seconds:>8.1f}s")
    print("-" * len(header))
    print(f"{'total':<22} {sum(r.cases for r in results):>7} "
          f"{sum(r.failures for r in results):>9} "
          f"{sum(len(r.signatures) for r in results):>9} "
          f"{sum(sum(r.known.values()) for r in results):>6} {elapsed:>8.1f}s")
    known = Counter[str]()
    for r in results:
        known.update(r.known)
    if known:
        print("known bugs hit: " + ", ".join(f"{k} x{v}" for k, v in sorted(known.items())))
    for r in results:
        for sig, count in r.by_signature.most_common():
            print(f"FAIL {r.name}: {count} x {sig}")
        for p in r.saved:
            print(f"     reproducer: {p}")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
