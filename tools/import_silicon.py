"""Clean aiconfigurator's measured ``silicon_sample.csv`` into a placer measurement file.

The CSV ships in the aiconfigurator-core wheel (Apache-2.0) as
``aiconfigurator_core/systems/silicon_sample.csv``; fetch it with
``pip download --no-deps aiconfigurator-core`` and unzip. Usage::

    python tools/import_silicon.py silicon_sample.csv instances/measurements/silicon_sample.json

Cleaning (docs/cost-model.md, "Measurements"), each rule counted in the output's ``about``:

1. keep aggregated serving (``mode == agg``) of the MoE models placer has files for, on
   H100, H200 and B200; the GB200 "agg" rows (TP12-TP72 with EP 1, TTFT up to 150 s at flat
   TPOT) behave like disaggregated deployments and are dropped;
2. drop exact duplicates (same configuration and same measured values from several source
   files), keeping the first;
3. a missing ``attention_dp_size`` is recovered as ``moe_tp x moe_ep / tp`` when that is a
   whole number (the MoE spans the attention-DP x TP GPUs); rows where it is not are dropped;
4. drop layouts a converter multiplied out (``tp x dp x pp`` beyond the node's 8 GPUs, e.g. a
   "TP64" worker for an engine layout ``tp8 ep8``: the true layout is in the same file);
5. concurrency = ``batch_size x attention_dp x pp`` (``batch_size`` is per attention-DP rank).
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

MODELS = {
    "deepseek-ai/DeepSeek-R1": "deepseek-r1",
    "deepseek-ai/DeepSeek-V3": "deepseek-v3",
    "openai/gpt-oss-120b": "gpt-oss-120b",
    "Qwen/Qwen3-235B-A22B-FP8": "qwen3-235b-a22b",
}
SYSTEMS = {"h100_sxm": "dgx-h100", "h200_sxm": "dgx-h200", "b200_sxm": "dgx-b200"}
DTYPES = {"fp8": "fp8", "fp8_block": "fp8", "nvfp4": "fp4", "": "bf16"}
GPUS_PER_NODE = 8
SAME = (
    "backend", "backend_version", "model_path", "system", "precision", "isl", "osl",
    "gemm_quant_mode", "moe_quant_mode", "batch_size", "tp_size", "pp_size",
    "attention_dp_size", "moe_tp_size", "moe_ep_size", "silicon_ttft_ms", "silicon_tpot_ms",
)  # fmt: skip
WHEEL = "aiconfigurator-core 0.12.0, aiconfigurator_core/systems/silicon_sample.csv"


def clean(rows: list[dict[str, str]]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The cleaned rows as placer measurements, and how many rows each rule removed."""
    dropped: Counter[str] = Counter()
    seen: set[tuple[str, ...]] = set()
    out: list[dict[str, Any]] = []
    for r in rows:
        if r["mode"] != "agg":
            dropped["not aggregated serving"] += 1
            continue
        if r["model_path"] not in MODELS:
            dropped["model without a placer file"] += 1
            continue
        if r["system"] == "gb200":
            dropped["GB200 'agg' rows behaving like disaggregated serving"] += 1
            continue
        if r["system"] not in SYSTEMS:
            dropped["system without a placer file"] += 1
            continue
        key = tuple(r[k] for k in SAME)
        if key in seen:
            dropped["exact duplicate"] += 1
            continue
        seen.add(key)
        tp, pp = int(r["tp_size"]), int(r["pp_size"])
        moe_tp, ep = int(r["moe_tp_size"]), int(r["moe_ep_size"])
        if r["attention_dp_size"]:
            dp = int(r["attention_dp_size"])
        elif (moe_tp * ep) % tp == 0:
            dp = moe_tp * ep // tp
        else:
            dropped["attention-DP lost and not recoverable"] += 1
            continue
        if moe_tp * ep != tp * dp:
            dropped["MoE group does not match TP x DP"] += 1
            continue
        if tp * dp * pp > GPUS_PER_NODE:
            dropped["layout multiplied out beyond one node"] += 1
            continue
        out.append(
            {
                "id": r["id"],
                "source": f"{WHEEL}, id {r['id']}",
                "engine": r["backend"],
                "engine_version": r["backend_version"],
                "model": MODELS[r["model_path"]],
                "hardware": SYSTEMS[r["system"]],
                "gpus": tp * dp * pp,
                "tp": tp,
                "dp_attn": dp,
                "pp": pp,
                "ep": ep,
                "moe_tp": moe_tp,
                "weight_dtype": DTYPES[r["gemm_quant_mode"]],
                "expert_dtype": DTYPES[r["moe_quant_mode"]],
                "prompt_len": int(r["isl"]),
                "output_len": int(r["osl"]),
                "concurrency": int(r["batch_size"]) * dp * pp,
                "ttft_ms": float(r["silicon_ttft_ms"]),
                "tpot_ms": float(r["silicon_tpot_ms"]),
            }
        )
    return out, dropped


def main(src: str, dst: str) -> None:
    """Read the CSV at ``src``, write the cleaned measurement file to ``dst``."""
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    kept, dropped = clean(rows)
    about = (
        f"Measured TTFT/TPOT from {WHEEL} (Apache-2.0, NVIDIA), {len(rows)} rows, cleaned by "
        "tools/import_silicon.py to "
        f"{len(kept)} rows; removed: "
        + "; ".join(f"{n} {why}" for why, n in sorted(dropped.items()))
        + ". See docs/cost-model.md."
    )
    doc = {"format": "placer-measurements", "about": about, "rows": kept}
    Path(dst).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(about)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
