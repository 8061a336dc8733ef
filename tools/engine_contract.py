"""Engine contract check: every export of a fixed set of plans, through the engine's own code.

For a given vLLM or SGLang version this tool

1. creates a throwaway virtual environment outside the repository (a temporary
   folder, or ``--venv DIR`` to reuse one) and installs that engine version from
   the package index: the engine itself, then its requirements except GPU kernel
   packages the argument parser and configuration resolution never import
   (``KERNEL_PACKAGES``; some of them are not on the package index at all);
2. exports each plan of the fixed set (the golden plans in
   ``tests/data/golden/*.plan.json``) with placer, for the engine and version;
3. for every node command of every export, runs the engine's own command-line
   parser and configuration resolution in that environment with a stand-in GPU
   (no GPU, no weights; a model folder holding the model's real ``config.json``
   from placer's bundled ``models/``), and reads back the degrees, the node's
   ranks, the layer split and whether the expert map is applied;
4. prints a table (plan, engine, version, parsed, resolved degrees vs plan, GPUs
   per node, layer split, expert map) and, with ``--out``, writes it as Markdown.

A plan placer refuses to export (exit 2) is listed with the reason, not as a
mismatch. The tool is not part of the test suite (an engine install is several
GB); see docs/engine-contract/README.md for how to run it and the recorded results.

Usage::

    python tools/engine_contract.py --engine sglang --version 0.5.23 \\
        --out docs/engine-contract/sglang-0.5.23.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placer.engine_facts import release
from placer.export import ExportError, export_plan
from placer.plan import Plan

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "tests" / "data" / "golden"
MODELS = ROOT / "models"
PROBES = Path(__file__).resolve().parent / "engine_probes"

#: Requirements skipped when installing an engine: GPU kernels and media codecs that its
#: parser and configuration resolution never import (some pins are not on the index).
KERNEL_PACKAGES = frozenset(
    {
        "flashinfer-python",
        "flashinfer-cubin",
        "flashinfer-jit-cache",
        "pynvvideocodec",
        "tilelang",
        "nvidia-cutlass-dsl",
        "quack-kernels",
        "tokenspeed-mla",
        "humming-kernels",
        "instanttensor",
        "fastsafetensors",
        "torchcodec",
        "torchaudio",
        "apache-tvm-ffi",
        "nvidia-cudnn-frontend",
        "nvtx",
    }
)
#: Seconds one probe may take before it counts as a hang.
PROBE_TIMEOUT_S = 600


# ------------------------------------------------------------------ environment
def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def engine_venv(engine: str, version: str, venv: Path | None) -> Path:
    """A virtual environment with ``engine==version``; returns its python."""
    if venv is None:
        venv = Path(tempfile.mkdtemp(prefix=f"engine-contract-{engine}-{version}-"))
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    check = [str(python), "-c", f"import importlib.metadata as m; print(m.version({engine!r}))"]
    found = subprocess.run(check, text=True, capture_output=True)
    if found.returncode == 0 and found.stdout.strip() == version:
        return python
    pip = [str(python), "-m", "pip", "install", "-q"]
    _run([*pip, "--no-deps", f"{engine}=={version}"])
    reqs = _run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json; "
            f"print(json.dumps(m.requires({engine!r}) or []))",
        ]
    )
    keep = [r for r in json.loads(reqs.stdout) if _wanted(r)]
    _run([*pip, *keep])
    return python


def _wanted(requirement: str) -> bool:
    """A requirement the parser may need: not an extra, not a GPU kernel package."""
    if "extra ==" in requirement:
        return False
    name = requirement.split(";")[0]
    for sep in "<>=!~[ ":
        name = name.split(sep)[0]
    return name.strip().lower().replace("_", "-") not in KERNEL_PACKAGES


# ------------------------------------------------------------------ plans and exports
def fixed_plans() -> dict[str, Plan]:
    """The golden plans of the export tests, by case name."""
    out = {}
    for path in sorted(PLANS.glob("*.plan.json")):
        out[path.name.removesuffix(".plan.json")] = Plan.model_validate_json(
            path.read_text(encoding="utf-8")
        )
    return out


def model_folder(plan: Plan, where: Path) -> Path:
    """A model folder with the bundled model's real config.json (no weights)."""
    name = str(plan.inputs.model["name"])
    folder = where / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        (MODELS / f"{name}.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    return folder


def node_commands(command: str) -> list[list[str]]:
    """Each node's argv after the launcher (``vllm serve`` / ``sglang.launch_server``)."""
    import shlex

    out = []
    for block in command.split("\n\n"):
        text = "\n".join(line for line in block.splitlines() if not line.startswith("#"))
        argv = shlex.split(text.replace("\\\n", " "))
        if argv[:2] == ["vllm", "serve"]:
            out.append(argv[2:])
        elif argv[:3] == ["python", "-m", "sglang.launch_server"]:
            out.append(argv[3:])
        else:
            raise ValueError(f"not a vLLM or SGLang command: {argv[:3]}")
    return out


# ------------------------------------------------------------------ expectations
@dataclass
class Expected:
    """What the plan says each node must resolve to."""

    degrees: dict[str, int]
    per_node: list[int]
    split: list[int]
    expert_map: dict[int, list[int]] | None  # MoE layer -> logical expert per slot


@dataclass
class Row:
    """One export: the plan's expectation, and what the engine's code resolved."""

    plan: str
    engine: str
    version: str
    parsed: str = ""
    degrees: str = ""
    per_node: str = ""
    split: str = ""
    expert_map: str = ""
    mismatches: list[str] = field(default_factory=list)
    refused: str = ""


def expected(plan: Plan, engine: str) -> Expected:
    """The plan's degrees in the engine's own terms (see the placer.export package)."""
    lay = plan.layout
    assert lay is not None
    per_node: dict[int, int] = {}
    gpn = int(plan.inputs.cluster["gpus_per_node"])
    for g in plan.gpus:
        per_node[g.id // gpn] = per_node.get(g.id // gpn, 0) + 1
    if engine == "vllm":
        degrees = {"tp": lay.tp, "pp": lay.pp, "dp": lay.dp_attn}
        if lay.ep > 1:
            degrees["ep"] = lay.ep
    else:
        degrees = {"tp": lay.tp * lay.dp_attn, "pp": lay.pp, "attn_dp": lay.dp_attn}
        degrees["ep"] = lay.ep
    rows = None
    if plan.expert_map:
        rows = {k: [e for rank in ranks for e in rank] for k, ranks in plan.expert_map.items()}
    counts = [per_node[n] for n in sorted(per_node)]
    return Expected(degrees, counts, list(lay.layers_per_stage), rows)


# ------------------------------------------------------------------ probing
def probe(python: Path, engine: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the engine-side probe script on one node command; its JSON answer."""
    script = PROBES / f"{engine}_probe.py"
    try:
        res = subprocess.run(
            [str(python), str(script), json.dumps(payload)],
            text=True,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no answer in {PROBE_TIMEOUT_S} s"}
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("PROBE "):
            answer: dict[str, Any] = json.loads(line[len("PROBE ") :])
            return answer
    tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit {res.returncode}"}


def check_plan(python: Path, engine: str, version: str, case: str, plan: Plan, work: Path) -> Row:
    """Export one plan and probe every node command."""
    row = Row(plan=case, engine=engine, version=version)
    try:
        folder = model_folder(plan, work)
        exp = export_plan(
            plan,
            engine,  # type: ignore[arg-type]
            model_ref=str(folder),
            engine_version=version,
        )
    except ExportError as err:
        row.refused = str(err)
        return row
    out = work / f"{case}-{engine}"
    out.mkdir(exist_ok=True)
    for name, content in exp.files.items():
        (out / name).write_text(content, encoding="utf-8")
    want = expected(plan, engine)
    answers = []
    for argv in node_commands(exp.command):
        answers.append(
            probe(
                python,
                engine,
                {
                    "argv": argv,
                    "env": exp.env,
                    "cwd": str(out),
                    "gpus_per_node": int(plan.inputs.cluster["gpus_per_node"]),
                },
            )
        )
    compare(row, want, answers)
    return row


def compare(row: Row, want: Expected, answers: list[dict[str, Any]]) -> None:
    """Fill the row from the probes' answers and list every difference from the plan."""
    errors = [a["error"] for a in answers if "error" in a]
    if errors:
        row.parsed = "no"
        row.mismatches.append(f"engine error: {errors[0]}")
        return
    row.parsed = f"yes ({len(answers)} node{'s' if len(answers) > 1 else ''})"
    got = answers[0]["degrees"]
    row.degrees = " ".join(f"{k}{got.get(k)}" for k in want.degrees)
    for k, v in want.degrees.items():
        if got.get(k) != v:
            row.mismatches.append(f"{k}: engine {got.get(k)}, plan {v}")
    per_node = [a["ranks_on_node"] for a in answers]
    row.per_node = ",".join(map(str, per_node))
    if per_node != want.per_node:
        row.mismatches.append(f"GPUs per node: engine {per_node}, plan {want.per_node}")
    split = answers[0]["split"]
    row.split = ",".join(map(str, split))
    if split != want.split:
        row.mismatches.append(f"layer split: engine {split}, plan {want.split}")
    applied = answers[0].get("expert_map")
    if want.expert_map is None:
        row.expert_map = "n/a"
    elif applied is None:
        trivial = all(
            row_ == [p % len(set(row_)) for p in range(len(row_))]
            for row_ in want.expert_map.values()
        )
        row.expert_map = (
            "engine default = plan" if trivial else "engine default (placer checked it fits)"
        )
    else:
        ok = all(applied.get(str(k)) == v for k, v in want.expert_map.items())
        row.expert_map = "applied, equal to plan" if ok else "applied, differs"
        if not ok:
            row.mismatches.append("expert map differs from the plan")


# ------------------------------------------------------------------ report
def table(rows: list[Row]) -> str:
    """Markdown table of all rows."""
    head = (
        "| plan | engine | version | parsed | degrees (engine = plan) | GPUs per node | "
        "layer split | expert map | result |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = []
    for r in rows:
        if r.refused:
            result = f"exit 2: {r.refused}"
        else:
            result = "match" if not r.mismatches else "MISMATCH: " + "; ".join(r.mismatches)
        body.append(
            f"| {r.plan} | {r.engine} | {r.version} | {r.parsed or '-'} | {r.degrees or '-'} | "
            f"{r.per_node or '-'} | {r.split or '-'} | {r.expert_map or '-'} | {result} |"
        )
    return head + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["vllm", "sglang"], required=True)
    ap.add_argument("--version", required=True, help="Engine version to install and check.")
    ap.add_argument("--venv", type=Path, default=None, help="Reuse this environment folder.")
    ap.add_argument("--out", type=Path, default=None, help="Write the table as Markdown here.")
    ap.add_argument("--only", default=None, help="Check only this plan case.")
    args = ap.parse_args(argv)
    rel = release(args.engine, args.version)
    python = engine_venv(args.engine, args.version, args.venv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="engine-contract-") as tmp:
        for case, plan in fixed_plans().items():
            if args.only and case != args.only:
                continue
            rows.append(check_plan(python, args.engine, args.version, case, plan, Path(tmp)))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    bad = sum(1 for r in rows if r.mismatches)
    refused = sum(1 for r in rows if r.refused)
    summary = (
        f"{rel.label} (installed {args.version}), {datetime.date.today().isoformat()}: "
        f"{len(rows)} plans, {len(rows) - bad - refused} match, {refused} refused by placer "
        f"(exit 2), {bad} mismatches."
    )
    print(text + "\n" + summary)
    if args.out is not None:
        args.out.write_text(
            f"# Engine contract: {args.engine} {args.version}\n\n{summary}\n\n"
            f"Produced by `python tools/engine_contract.py --engine {args.engine} --version "
            f"{args.version}` (docs/engine-contract/README.md).\n\n{text}",
            encoding="utf-8",
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
