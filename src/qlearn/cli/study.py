"""`qlearn init-study`: how the initial weights scale activations and gradients with depth."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from qlearn.cli.app import app, fail
from qlearn.config import DEFAULT_STUDY_SCHEMES, STUDY_SCHEMES

if TYPE_CHECKING:
    from qlearn.diagnostics import StudyResult


_SCHEME_NOTES = {
    "identity_plus": "weights 1.5 x identity",
    "identity_minus": "weights 0.5 x identity",
    "gaussian_plus": "weights N(0, 1.5^2 / fan_in)",
    "gaussian_minus": "weights N(0, 0.5^2 / fan_in)",
    "xavier": "weights N(0, 1 / fan_in)",
    "kaiming": "weights N(0, 2 / fan_in)",
}


def _split_schemes(values: list[str] | None) -> list[str]:
    if not values:
        return list(DEFAULT_STUDY_SCHEMES)
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def format_study(result: StudyResult) -> str:
    """The study as text: a header, then one table per scheme (layer 0 is the input)."""
    lines = [
        f"init-study: depth {result.depth}, width {result.width}, activation "
        f"{result.activation}, batch {result.batch}, seed {result.seed}",
        "loss = mean over the batch of the sum of the last layer's outputs",
        "grad norm = |d loss / d W|; backward = rms over examples of "
        "|d (sum of outputs) / d (layer output)|",
    ]
    header = f"{'layer':>5}  {'act mean':>12}  {'act var':>12}  {'grad norm':>12}  {'backward':>12}"
    for scheme, layers in result.layers.items():
        lines += ["", f"{scheme} ({_SCHEME_NOTES[scheme]})", header]
        lines.append(
            f"{0:>5}  {result.input_mean:>12.5g}  {result.input_var:>12.5g}  {'-':>12}  {'-':>12}"
        )
        for stats in layers:
            lines.append(
                f"{stats.layer:>5}  {stats.activation_mean:>12.5g}  {stats.activation_var:>12.5g}"
                f"  {stats.grad_norm:>12.5g}  {stats.backward_norm:>12.5g}"
            )
    return "\n".join(lines)


@app.command("init-study")
def init_study_command(
    depth: Annotated[int, typer.Option(help="Linear layers in the stack.")] = 10,
    width: Annotated[int, typer.Option(help="Units of every layer and of the input.")] = 2,
    activation: Annotated[
        str, typer.Option(help="Applied after every layer: linear, relu or tanh.")
    ] = "linear",
    schemes: Annotated[
        list[str] | None,
        typer.Option(
            help="Weight schemes, comma-separated or repeated; any of "
            + ", ".join(STUDY_SCHEMES)
            + ". Default: "
            + ",".join(DEFAULT_STUDY_SCHEMES)
            + "."
        ),
    ] = None,
    batch: Annotated[int, typer.Option(help="Standard-normal input examples.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed of the input and the random weights.")] = 0,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also draw the per-layer statistics to this file (.png, .svg, .pdf)."),
    ] = None,
) -> None:
    """Show how badly scaled initial weights make activations and gradients explode or vanish."""
    from qlearn.diagnostics import init_study

    if plot is not None:
        from qlearn.plots import check_output_path

        check_output_path(plot, what="--plot")  # before the study, not after it
    result = init_study(
        depth=depth,
        width=width,
        schemes=_split_schemes(schemes),
        activation=activation,
        batch=batch,
        seed=seed,
    )
    typer.echo(format_study(result))
    if plot is not None:
        from qlearn.plots import plot_init_study

        try:
            written = plot_init_study(result, plot)
        except OSError as exc:
            raise fail(f"cannot write the plot to {str(plot)!r}: {exc.strerror or exc}") from None
        typer.echo(f"\nwrote {written}")
