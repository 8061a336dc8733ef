"""Run the router lines of placer's serving exports through SGLang's router parser.

Usage (in an environment with sglang-router installed, see docs/engine-contract/README.md):
    placer export PLAN.json --engine sglang --json > EXPORT.json
    python tools/router_contract.py EXPORT.json [EXPORT.json ...]

For each export of a serving plan for SGLang: parse the router line with
``sglang_router.launch_router.parse_router_args`` (the router's own argparse and
``RouterArgs.from_cli_args``), and compare the worker, prefill (with bootstrap port) and
decode URLs it resolves with the servers the export launches. Prints one Markdown row per plan.
Needs only the router package (not placer).
"""

from __future__ import annotations

import json
import re
import shlex
import sys


def main(paths: list[str]) -> int:
    """Check every export; the number of mismatches is the exit code."""
    from sglang_router.launch_router import parse_router_args  # type: ignore[import-not-found]

    bad = 0
    print("| plan | servers | router parsed | workers | prefill (bootstrap) | decode | match |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        with open(path, encoding="utf-8") as f:
            blocks = json.load(f)["command"].split("\n\n")
        router = next(b for b in blocks if b.startswith("# router"))
        tokens = shlex.split(router.partition("\n")[2].replace("\\\n", " "))
        args = parse_router_args(tokens[3:])  # after python -m sglang_router.launch_router
        servers = []
        for block in blocks:
            head, _, body = block.partition("\n")
            m = re.match(r"# (\w+) \d+ .*port (\d+)\)", head)
            if m:
                toks = shlex.split(body.replace("\\\n", " "))
                boot = None
                if "--disaggregation-bootstrap-port" in toks:
                    boot = int(toks[toks.index("--disaggregation-bootstrap-port") + 1])
                servers.append((m.group(1), f"http://<head-node-ip>:{m.group(2)}", boot))
        want_workers = [u for k, u, _ in servers if k == "instance"]
        want_prefill = [(u, b) for k, u, b in servers if k == "prefill"]
        want_decode = [u for k, u, _ in servers if k == "decode"]
        got_prefill = [(u, b) for u, b in args.prefill_urls]
        ok = (
            list(args.worker_urls) == want_workers
            and got_prefill == want_prefill
            and list(args.decode_urls) == want_decode
            and args.pd_disaggregation == bool(want_prefill)
        )
        bad += not ok
        print(
            f"| {path} | {len(servers)} | yes | {len(args.worker_urls)} | "
            f"{len(got_prefill)} | {len(args.decode_urls)} | {'yes' if ok else 'NO'} |"
        )
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
