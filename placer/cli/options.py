"""Command-line options and the library fields they set, in one place.

Shared click decorators (hardware, workload, targets, the common arguments) and the parsers
that turn option values into library objects. Every value is validated by the library type it
fills (``Workload``, ``SolveConfig``, ``Layout``); an error names the option, not the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from placer.exceptions import InvalidInputError
from placer.io import validate_options
from placer.layout import Layout
from placer.load import load_workload
from placer.rules import PROFILES

if TYPE_CHECKING:
    from placer.config import SolveConfig
    from placer.workload import Workload

F = TypeVar("F", bound=Callable[..., Any])

_DTYPES = ["fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4", "mxfp4"]

#: Workload fields set by options, and the option each is set by (named in errors).
WORKLOAD_OPTIONS = {
    "batch": "--batch",
    "prompt_len": "--prompt-len",
    "output_len": "--output-len",
    "context": "--context",
    "phase": "--phase",
    "weight_dtype": "--weight-dtype",
    "expert_dtype": "--expert-dtype",
    "kv_dtype": "--kv-dtype",
    "memory_utilization": "--mem-util",
}

#: Workload fields set by the target options, and the option each is set by.
TARGET_OPTIONS = {"ttft_ms": "--ttft", "tpot_ms": "--tpot", "request_rate": "--request-rate"}


def _apply(fn: F, options: list[Callable[[F], F]]) -> F:
    """Decorate ``fn`` with ``options`` so that they appear in ``--help`` in list order."""
    for opt in reversed(options):
        fn = opt(fn)
    return fn


# ------------------------------------------------------------------ arguments and options
def model_argument(fn: F) -> F:
    """The MODEL file argument."""
    return click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))(fn)


def hardware_argument(fn: F) -> F:
    """The HARDWARE file argument."""
    return click.argument("hardware_path", metavar="HARDWARE", type=click.Path(dir_okay=False))(fn)


def plan_argument(fn: F) -> F:
    """The PLAN file argument."""
    return click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))(fn)


def json_option(help_text: str) -> Callable[[F], F]:
    """``--json``: print one JSON document instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def profile_choice_option(fn: F) -> F:
    """``--profile``, one of the engine rules profiles."""
    return click.option(
        "--profile", type=click.Choice(list(PROFILES)), default="generic", show_default=True
    )(fn)


def output_option(
    help_text: str, dest: str = "output", required: bool = False
) -> Callable[[F], F]:
    """``-o/--output``: a file to write."""
    return click.option(
        "-o",
        "--output",
        dest,
        type=click.Path(dir_okay=False),
        required=required,
        default=None,
        help=help_text,
    )


def file_option(name: str, dest: str, help_text: str) -> Callable[[F], F]:
    """An optional input file option (``--calibration``, ``--loads``...)."""
    return click.option(name, dest, type=click.Path(dir_okay=False), default=None, help=help_text)


def time_limit_option(default: float, help_text: str) -> Callable[[F], F]:
    """``--time-limit`` in seconds."""
    return click.option(
        "--time-limit", type=float, default=default, show_default=True, help=help_text
    )


def hardware_options(fn: F) -> F:
    """--gpus / --nodes, shared by every command that reads HARDWARE."""
    return _apply(
        fn,
        [
            click.option(
                "--gpus",
                type=int,
                default=None,
                help="Use this many GPUs instead of the file's count.",
            ),
            click.option(
                "--nodes",
                type=int,
                default=None,
                help="Use this many full nodes instead of the file's count.",
            ),
        ],
    )


def workload_options(fn: F) -> F:
    """Workload file and per-field overrides."""
    return _apply(
        fn,
        [
            click.option(
                "--workload",
                "workload_file",
                type=click.Path(dir_okay=False),
                default=None,
                help="Workload JSON file (fields below override it).",
            ),
            click.option("--batch", type=int, default=None, help="Concurrent requests."),
            click.option(
                "--prompt-len", type=int, default=None, help="Prompt tokens per request."
            ),
            click.option(
                "--output-len", type=int, default=None, help="Output tokens per request."
            ),
            click.option(
                "--context",
                type=int,
                default=None,
                help="KV-cache tokens per request (default prompt + output).",
            ),
            click.option(
                "--phase", type=click.Choice(["prefill", "decode", "both"]), default=None
            ),
            click.option("--weight-dtype", type=click.Choice(_DTYPES), default=None),
            click.option("--expert-dtype", type=click.Choice(_DTYPES), default=None),
            click.option(
                "--kv-dtype", type=click.Choice(["fp32", "bf16", "fp16", "fp8"]), default=None
            ),
            click.option(
                "--mem-util",
                "memory_utilization",
                type=float,
                default=None,
                help="Fraction of GPU memory to plan for (default 0.9).",
            ),
        ],
    )


def target_options(fn: F) -> F:
    """Latency targets and request rate: they turn ``solve`` into the serving search."""
    return _apply(
        fn,
        [
            click.option(
                "--ttft", type=float, default=None, help="Time-to-first-token target, ms."
            ),
            click.option(
                "--tpot", type=float, default=None, help="Time-per-output-token target, ms."
            ),
            click.option(
                "--request-rate",
                type=float,
                default=None,
                help="Requests/s to serve (with --objective gpus).",
            ),
        ],
    )


# ------------------------------------------------------------------ option values -> library
def targets_from_options(kwargs: dict[str, Any]) -> dict[str, float]:
    """The workload fields of the target options (popped from kwargs); bad values and a
    fixed batch next to them are errors naming the option."""
    out: dict[str, float] = {}
    for key, opt in TARGET_OPTIONS.items():
        value = kwargs.pop(opt.lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        if not value > 0 or value == float("inf"):
            raise InvalidInputError(f"must be a positive number, got {value:g}", field=opt)
        out[key] = value
    if out and kwargs.get("batch") is not None:
        raise InvalidInputError(
            "a fixed batch cannot be combined with --ttft, --tpot or --request-rate: the "
            "serving search chooses the concurrency",
            field="--batch",
        )
    return out


def workload_from_options(kwargs: dict[str, Any]) -> Workload:
    """Build the Workload from --workload and the override options (popped from kwargs),
    validated by the Workload's own field definitions."""
    path = kwargs.pop("workload_file", None)
    targets = targets_from_options(kwargs) if "ttft" in kwargs else {}
    options = {k: (opt, kwargs.pop(k, None)) for k, opt in WORKLOAD_OPTIONS.items()}
    options.update({k: (TARGET_OPTIONS[k], v) for k, v in targets.items()})
    return load_workload(path, options)


def config_from_options(**options: tuple[str, Any]) -> SolveConfig:
    """A SolveConfig from ``field=(option, value)`` pairs, validated by its own field
    definitions (an error names the option)."""
    from placer.config import SolveConfig

    return validate_options(SolveConfig, options)


def parse_split(text: str | None) -> tuple[int, ...] | None:
    """``--layers-per-stage 16,15`` -> (16, 15)."""
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise InvalidInputError(
            "must be comma-separated integers, e.g. 3,3,2", field="--layers-per-stage"
        ) from None


def parse_compare(text: str) -> Layout:
    """``--compare tp=4,pp=4,ep=4,etp=1`` -> Layout."""
    keys = {"tp", "pp", "ep", "etp", "dp_attn", "dp"}
    values: dict[str, tuple[str, Any]] = {}
    for part in text.split(","):
        key, _, val = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
        if key not in keys or not re.fullmatch(r"[0-9]+", val.strip()):
            raise InvalidInputError(
                "expected positive degrees like tp=4,pp=4,ep=4,etp=1", field="--compare"
            )
        values["dp_attn" if key == "dp" else key] = ("--compare", int(val))
    return validate_options(Layout, values)


def whole_number(text: str, option: str) -> int:
    """An option's value as an integer of at most 18 digits (exit 2 naming it otherwise)."""
    digits = text.strip()
    if not (digits.lstrip("-").isascii() and digits.lstrip("-").isdigit()) or len(digits) > 18:
        raise InvalidInputError(f"must be an integer, got {text[:20]!r}", field=option)
    return int(digits)
