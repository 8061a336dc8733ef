"""Stand-in GPU for the engine probes (tools/engine_contract.py): no GPU, no CUDA driver.

- Compiled extension modules of the named packages load as empty modules (loading the
  real ones needs the CUDA driver; resolving a configuration never runs a kernel).
- Their ``torch.ops`` namespaces answer every kernel query with False ("no such kernel"),
  and fake-kernel registrations for their (undefined) ops are skipped.
- torch's CUDA device queries answer as ``gpus`` H100s (SM 9.0, 80 GiB).
"""

import importlib.abc
import importlib.machinery
import sys
import types

H100_MIB = 81559


class _EmptyExtension(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        pass


class _StubExtensions(importlib.abc.MetaPathFinder):
    def __init__(self, packages):
        self.packages = tuple(packages)

    def find_spec(self, name, path=None, target=None):
        if not name.startswith(self.packages):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return None
        return importlib.machinery.ModuleSpec(name, _EmptyExtension(), origin=spec.origin)


class NoKernelOps:
    """A torch.ops namespace whose every op answers False."""

    def __getattr__(self, op):
        def unavailable(*args, **kwargs):
            return False

        return unavailable


def install(packages, op_namespaces, gpus, empty_modules=()):
    """Install the stand-in before the engine is imported (``empty_modules``: compiled
    modules an engine loads by file path, given as empty modules up front)."""
    sys.meta_path.insert(0, _StubExtensions(packages))
    for name in empty_modules:
        module = types.ModuleType(name)
        module.__file__ = f"<stand-in for {name}>"
        sys.modules[name] = module
    import torch

    for ns in op_namespaces:
        setattr(torch.ops, ns, NoKernelOps())
    register_fake = torch.library.register_fake

    def register_fake_if_defined(op, func=None, /, **kwargs):
        if isinstance(op, str) and isinstance(
            getattr(torch.ops, op.split("::")[0], None), NoKernelOps
        ):
            return func if func is not None else (lambda f: f)
        return register_fake(op, func, **kwargs)

    torch.library.register_fake = register_fake_if_defined
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: gpus
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_capability = lambda device=None: (9, 0)
    torch.cuda.get_device_name = lambda device=None: "NVIDIA H100 80GB HBM3"
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(
        name="NVIDIA H100 80GB HBM3",
        major=9,
        minor=0,
        total_memory=H100_MIB << 20,
        multi_processor_count=132,
    )
