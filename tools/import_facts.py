"""Regenerate models/ and instances/hardware/ from the project's shared facts.

Usage: python tools/import_facts.py FACTS_DIR

FACTS_DIR holds models.json and hardware.json (collected with sources, November
2026). Model files are the published config.json as found (``raw_config``);
hardware files are placer's hardware format with the sources carried along.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3

#: Where the facts give no byte count, the driver-visible size is taken as the
#: marketed GB read as GiB (how nvidia-smi/rocm-smi report these parts).
ASSUMED_MEMORY = {
    "dgx-2-v100-32gb": 32 * GIB,
    "dgx-a100-40gb": 40 * GIB,
    "mi300x-platform": 192 * GIB,
}

#: One-way message latencies are not in the facts; these are typical published
#: figures (NVLink/NVSwitch ~ 1-3 us, InfiniBand ~ 2-5 us including software),
#: marked as assumed in every file.
SCALE_UP_LATENCY_US = 2.0
SCALE_OUT_LATENCY_US = 5.0


def _source_line(src: dict) -> str:
    where = src.get("where", "")
    path = src.get("path")
    return f"{where} {path}" if path else where


def import_models(facts: Path) -> None:
    models = json.loads((facts / "models.json").read_text())
    rows = []
    for m in models:
        out = ROOT / "models" / f"{m['id']}.json"
        out.write_text(json.dumps(m["raw_config"], indent=2) + "\n")
        srcs = "; ".join(_source_line(s) for s in m["source"][:2])
        pub = m["published_params_source"][0]
        total = m["published_total_params"] / 1e9
        active = m["published_active_params"]
        active_txt = f"{active / 1e9:g}B" if active else "not published"
        rows.append(
            f"| `{m['id']}` | {m.get('hf_repo', '')} | {srcs} | {total:g}B / {active_txt} "
            f"({_source_line(pub)}) |"
        )
    table = "\n".join(rows)
    text = (ROOT / "tools" / "models_README.head.md").read_text() + table + "\n"
    (ROOT / "models" / "README.md").write_text(text)


def import_hardware(facts: Path) -> None:
    systems = json.loads((facts / "hardware.json").read_text())
    for x in systems:
        tflops = {
            k: x[f"dense_{k}_tflops"]
            for k in ("bf16", "fp16", "fp8", "fp4")
            if x.get(f"dense_{k}_tflops")
        }
        memory = x.get("hbm_capacity_bytes") or ASSUMED_MEMORY[x["id"]]
        node = x["node"]
        notes = [x.get("notes", "")] if x.get("notes") else []
        if not x.get("hbm_capacity_bytes"):
            notes.append(f"memory_bytes assumed: {x['hbm_capacity_GB']} GB read as GiB")
        notes.append(
            f"latencies assumed: scale-up {SCALE_UP_LATENCY_US} us, scale-out "
            f"{SCALE_OUT_LATENCY_US} us (typical published figures, not measured)"
        )
        domain = x["scaleup"]["domain_size_gpus"]
        per_node = node["gpus_per_node"]
        doc = {
            "format": "placer-hardware",
            "name": x["id"],
            "system": x["system"],
            "gpu": {
                "name": x["gpu"],
                "memory_bytes": memory,
                "hbm_bandwidth_gbps": x["hbm_bandwidth_GBps"],
                "tflops": tflops,
            },
            "gpus_per_node": per_node,
            "nodes": max(1, domain // per_node),
            "scale_up_domain": domain,
            "scale_up": {
                "name": x["scaleup"]["name"],
                "bandwidth_gbps": x["scaleup"]["per_gpu_GBps_per_direction"],
                "latency_us": SCALE_UP_LATENCY_US,
            },
            "scale_out": {
                "name": node["nic_type"],
                "bandwidth_gbps": node["inter_node_GBps_per_gpu_per_direction"],
                "latency_us": SCALE_OUT_LATENCY_US,
            },
            "source": "; ".join(_source_line(s) for s in x["sources"][:3]),
            "sources": x["sources"],
            "unverified": x.get("unverified", []),
            "notes": notes,
        }
        out = ROOT / "instances" / "hardware" / f"{x['id']}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    facts_dir = Path(sys.argv[1])
    import_models(facts_dir)
    import_hardware(facts_dir)
