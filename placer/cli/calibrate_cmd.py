"""``placer calibrate``: fit a calibration to measurements."""

from __future__ import annotations

from pathlib import Path

import click

from placer.cli.app import handle_errors, main
from placer.cli.options import output_option
from placer.io import check_output, write_atomic


@main.command(name="calibrate")
@click.argument("measurements_path", metavar="MEASUREMENTS", type=click.Path(dir_okay=False))
@output_option("Calibration file to write.", dest="output_path", required=True)
@handle_errors
def calibrate_cmd(measurements_path: str, output_path: str) -> None:
    """Fit a calibration (kernel efficiencies, fixed costs) to MEASUREMENTS.

    The fit is deterministic and bounded (docs/cost-model.md). Exits 2 on bad input.
    """
    from placer.fit import fit
    from placer.measurements import load_measurements

    check_output(output_path, (measurements_path,))
    data = load_measurements(measurements_path)
    name = Path(measurements_path).name
    calibration = fit(data.rows, name=f"fitted on {name}", sources=(data.about,))
    write_atomic(output_path, calibration.model_dump_json(indent=1) + "\n")
    click.echo(
        f"{output_path}: {len(data.rows)} rows, sha256 {calibration.digest()[:12]}, "
        f"families {', '.join(calibration.families) or 'none'}"
    )
