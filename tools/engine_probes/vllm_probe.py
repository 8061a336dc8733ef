"""Runs inside a vLLM environment (tools/engine_contract.py): parse one node command with
vLLM's own `vllm serve` parser, resolve its configuration with a stand-in GPU, and print
what it resolved as one line ``PROBE {json}``.

Stand-in: a CUDA platform class whose device queries answer an H100 (capability 9.0,
80 GiB) and ``gpus_per_node`` devices, and empty modules in place of the compiled CUDA
kernel extensions (they need the CUDA driver to load; configuration never calls them).
Nothing touches a GPU or loads weights.
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys


class _EmptyExtension(importlib.abc.Loader):
    """Loads a compiled extension as an empty module (it would need the CUDA driver)."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        pass


class _StubExtensions(importlib.abc.MetaPathFinder):
    """Every compiled extension module inside vLLM is replaced by an empty module."""

    def find_spec(self, name, path=None, target=None):
        if not name.startswith("vllm."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return None
        return importlib.machinery.ModuleSpec(name, _EmptyExtension(), origin=spec.origin)


sys.meta_path.insert(0, _StubExtensions())

import torch  # noqa: E402


class _NoKernelOps:
    """torch.ops namespace of the stubbed extensions: kernel capability queries made while
    importing model code answer False (no special kernel), like a GPU without them."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, op):
        def unavailable(*args, **kwargs):
            return False

        return unavailable


for _ns in ("_C", "_moe_C", "_C_cache_ops", "_C_custom_ar", "_rocm_C"):
    setattr(torch.ops, _ns, _NoKernelOps(_ns))

_register_fake = torch.library.register_fake


def _register_fake_if_defined(op, func=None, /, **kwargs):
    """Fake (meta) kernels for the stubbed extensions' ops are skipped: those ops were
    never defined, and shape inference is not needed to resolve a configuration."""
    name = op if isinstance(op, str) else getattr(op, "_qualname", str(op))
    namespace = name.split("::")[0]
    if isinstance(op, str) and isinstance(getattr(torch.ops, namespace, None), _NoKernelOps):
        return func if func is not None else (lambda f: f)
    return _register_fake(op, func, **kwargs)


torch.library.register_fake = _register_fake_if_defined

payload = json.loads(sys.argv[1])
os.environ.update(payload["env"])
os.chdir(payload["cwd"])
GPUS = int(payload["gpus_per_node"])

import vllm.platforms as platforms  # noqa: E402
from vllm.platforms.cuda import CudaPlatformBase  # noqa: E402
from vllm.platforms.interface import DeviceCapability  # noqa: E402


class StandInGpu(CudaPlatformBase):
    """Answers device queries as an 8-GPU H100 node would."""

    @classmethod
    def get_device_capability(cls, device_id=0):
        return DeviceCapability(major=9, minor=0)

    @classmethod
    def get_device_name(cls, device_id=0):
        return "NVIDIA H100 80GB HBM3"

    @classmethod
    def get_device_total_memory(cls, device_id=0):
        return 80 * 2**30

    @classmethod
    def device_count(cls):
        return GPUS

    @classmethod
    def is_fully_connected(cls, physical_device_ids):
        return True


platforms._current_platform = StandInGpu()
platforms.current_platform = platforms._current_platform

from vllm.distributed.utils import get_pp_indices  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.entrypoints.cli.serve import ServeSubcommand  # noqa: E402
from vllm.usage.usage_lib import UsageContext  # noqa: E402
from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: E402

parser = FlexibleArgumentParser()
subparsers = parser.add_subparsers(dest="subparser")
ServeSubcommand().subparser_init(subparsers)
args = parser.parse_args(["serve", *payload["argv"]])
if getattr(args, "model_tag", None):
    args.model = args.model_tag
ServeSubcommand().validate(args)
engine_args = AsyncEngineArgs.from_cli_args(args)
config = engine_args.create_engine_config(
    usage_context=UsageContext.OPENAI_API_SERVER, headless=bool(args.headless)
)
pc = config.parallel_config
hf = config.model_config.hf_text_config
layers = hf.num_hidden_layers
split = []
for rank in range(pc.pipeline_parallel_size):
    start, end = get_pp_indices(layers, rank, pc.pipeline_parallel_size)
    split.append(end - start)
degrees = {
    "tp": pc.tensor_parallel_size,
    "pp": pc.pipeline_parallel_size,
    "dp": pc.data_parallel_size,
}
if pc.enable_expert_parallel:
    # FusedMoEParallelConfig.make: with expert parallelism EP = TP x PCP x DP, MoE-TP 1.
    degrees["ep"] = (
        pc.tensor_parallel_size * pc.prefill_context_parallel_size * (pc.data_parallel_size)
    )
local_engines = pc.data_parallel_size_local if pc.data_parallel_size > 1 else 1
ranks_on_node = local_engines * pc.local_world_size
print(
    "PROBE "
    + json.dumps(
        {
            "degrees": degrees,
            "ranks_on_node": ranks_on_node,
            "split": split,
            "expert_map": None,
            "nnodes": pc.nnodes,
            "node_rank": pc.node_rank,
        }
    )
)
