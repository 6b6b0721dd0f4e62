"""`qlearn init-study`: the printed tables, the PNG, and one-line errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from qlearn.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point; return its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def table(out: str, scheme: str) -> list[list[float]]:
    """The rows (layer, mean, variance) of one scheme's printed table; layer 0 is the input."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{scheme} ("))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append([float(cell) for cell in line.split()[:3]])
    return rows


def test_init_study_prints_tables_and_draws_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "plots" / "study.png"
    argv = ["init-study", "--depth", "10", "--width", "2", "--batch", "64", "--plot", str(png)]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    for scheme in ("identity_plus", "identity_minus", "xavier", "kaiming"):
        rows = table(out, scheme)
        assert [int(row[0]) for row in rows] == list(range(11))
    # Linear layers of 1.5 x identity: the variance after 10 layers is 1.5^20 times the input's.
    plus = table(out, "identity_plus")
    assert plus[10][2] / plus[0][2] == pytest.approx(1.5**20, rel=1e-4)
    minus = table(out, "identity_minus")
    assert minus[10][1] / minus[0][1] == pytest.approx(0.5**10, rel=1e-4)
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    # IHDR holds the size: three 5 x 4.2 inch panels at 100 dpi.
    assert int.from_bytes(data[16:20], "big") == 1500
    assert int.from_bytes(data[20:24], "big") == 420
    assert f"wrote {png}" in out


def test_init_study_takes_comma_separated_and_repeated_schemes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["init-study", "--depth", "3", "--activation", "relu", "--batch", "8"]
    code, out, _ = run(
        [*argv, "--schemes", "xavier, kaiming", "--schemes", "gaussian_plus"], capsys
    )
    assert code == 0
    assert [line.split(" (")[0] for line in out.splitlines() if "(weights" in line] == [
        "xavier",
        "kaiming",
        "gaussian_plus",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--depth", "0"], "error: depth = 0 is out of range"),
        (["--schemes", "xavier,he"], "error: scheme = 'he' is unknown"),
        (["--activation", "gelu"], "error: activation = 'gelu' is unknown"),
    ],
)
def test_init_study_bad_input_is_one_error_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["init-study", *args], capsys)
    assert code != 0
    assert err.strip().startswith(message)
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_init_study_unwritable_plot_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("a file, not a folder")
    png = not_a_folder / "study.png"
    code, _, err = run(["init-study", "--batch", "8", "--plot", str(png)], capsys)
    assert code == 2
    assert err.startswith(f"error: --plot {str(png)!r} cannot be written: ")
    assert err.strip().endswith("is a file")
    assert len(err.strip().splitlines()) == 1
    assert "layer" not in capsys.readouterr().out  # refused before the study ran


def test_every_listed_scheme_is_implemented() -> None:
    # The names live in config.py (torch-free, for --help); each must initialise a layer.
    import torch

    from qlearn import diagnostics
    from qlearn.config import DEFAULT_STUDY_SCHEMES, STUDY_SCHEMES

    assert set(DEFAULT_STUDY_SCHEMES) <= set(STUDY_SCHEMES)
    for scheme in STUDY_SCHEMES:
        layer = torch.nn.Linear(8, 8)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            diagnostics.init_study_layer(layer, scheme)
        assert torch.isfinite(layer.weight).all() and not layer.bias.any(), scheme
