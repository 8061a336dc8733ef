"""Runs inside an SGLang environment (tools/engine_contract.py): parse one node command
with SGLang's own parser (``prepare_server_args``), resolve it (``resolve_once``,
``check_server_args``), ask its launcher which ranks this node starts
(``_calculate_rank_ranges``), its layer split (``get_pp_indices``) and the expert map it
loads (``compute_initial_expert_location_metadata``), and print ``PROBE {json}``.

Stand-in: SGLang's own platform override answers as an H100 (SM 9.0); standin.py
stubs the kernel extensions and torch's device queries. Nothing touches a GPU or loads
weights.
"""

import json
import os
import sys

payload = json.loads(sys.argv[1])
os.environ.update(payload["env"])
os.chdir(payload["cwd"])

import standin  # noqa: E402

standin.install(
    ("sgl_kernel", "sglang"),
    ("sgl_kernel", "sgl_kernel_cpu"),
    int(payload["gpus_per_node"]),
    empty_modules=("common_ops",),
)

import sglang.srt.utils.common as sglang_common  # noqa: E402

sglang_common.get_nvgpu_memory_capacity = lambda: standin.H100_MIB

from sglang.srt.runtime_context import override_platform  # noqa: E402

override_platform(
    is_cuda=True,
    is_hip=False,
    is_npu=False,
    is_xpu=False,
    is_musa=False,
    is_mps=False,
    is_sm90=True,
    is_sm100=False,
    is_sm100_or_sm110=False,
    is_sm110=False,
    is_sm120=False,
    is_blackwell=False,
    is_hopper_with_cuda_12_3=True,
    has_amx=False,
    has_flashinfer=False,
    device_sm=90,
    device_capability=(9, 0),
).install()

from sglang.srt.server_args import prepare_server_args  # noqa: E402

server_args = prepare_server_args(payload["argv"])
server_args.resolve_once()
server_args.check_server_args()
resolved = server_args.resolved_dict()

from sglang.srt.configs.model_config import ModelConfig  # noqa: E402
from sglang.srt.distributed.utils import get_pp_indices  # noqa: E402
from sglang.srt.entrypoints.engine import _calculate_rank_ranges  # noqa: E402
from sglang.srt.runtime_context import publish  # noqa: E402

publish(server_args, role="tokenizer")
pp_ranks, tp_ranks, _, _ = _calculate_rank_ranges(resolved["node_rank"])
pp = resolved["pp_size"]
model_config = ModelConfig.from_server_args(server_args)
layers = model_config.num_hidden_layers
split = []
for rank in range(pp):
    start, end = get_pp_indices(layers, rank, pp)
    split.append(end - start)

import types as _types  # noqa: E402

import sglang.srt.eplb.expert_location as expert_location  # noqa: E402

# The metadata tensors go to the (stand-in) device; keep them on the CPU.
expert_location.get_device = lambda: _types.SimpleNamespace(device="cpu")
expert_map = None
asked = resolved.get("init_expert_location", "trivial") != "trivial"
hook = expert_location.ModelConfigForExpertLocation.from_model_config(model_config)
if asked and hook is not None:
    meta = expert_location.compute_initial_expert_location_metadata(model_config, moe_ep_rank=0)
    table = meta.physical_to_logical_map.cpu().tolist()
    expert_map = {str(i): row for i, row in enumerate(table)}

print(
    "PROBE "
    + json.dumps(
        {
            "degrees": {
                "tp": resolved["tp_size"],
                "pp": pp,
                "attn_dp": resolved["attn_dp_size"],
                "ep": resolved["ep_size"],
                "moe_dp": resolved["moe_dp_size"],
            },
            "ranks_on_node": len(pp_ranks) * len(tp_ranks),
            "split": split,
            "expert_map": expert_map,
            "nnodes": resolved["nnodes"],
            "node_rank": resolved["node_rank"],
        }
    )
)
