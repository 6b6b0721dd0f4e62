"""`qlearn export` and `qlearn serve`: from a trained agent to a deployed policy."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from qlearn.cli.app import app
from qlearn.errors import ConfigError


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run dir or a checkpoint dir.")],
    out: Annotated[Path, typer.Option(help="The ONNX file to write (*.onnx).")],
    format: Annotated[str, typer.Option("--format", help="Export format; allowed: onnx.")] = "onnx",
    checks: Annotated[
        int, typer.Option(min=2, help="Observations the export is checked on (half from episodes).")
    ] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the check's observations.")] = 0,
) -> None:
    """Export the greedy policy (best model, else final) as ONNX with a JSON sidecar."""
    from qlearn.export import check_output_path
    from qlearn.train import DQN

    check_output_path(out, format)  # before loading: a bad --out fails fast
    agent = DQN.load(run_dir)
    report = agent.export(out, format=format, num_checks=checks, seed=seed)
    typer.echo(
        f"wrote {report.onnx_path} and {report.sidecar_path.name}; onnxruntime matched torch on "
        f"{report.num_checked} observations ({report.num_from_space} from the observation space, "
        f"{report.num_from_episodes} from episodes): max |dQ| {report.max_abs_diff:.2g} "
        f"({report.max_scaled_diff:.2g} of max(1, |Q|)), "
        f"actions agree"
        + (f" but for {report.num_action_ties} ties" if report.num_action_ties else "")
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    model: Annotated[
        Path, typer.Argument(help="A run dir, a checkpoint dir or an exported .onnx file.")
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; the default keeps it local.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 8000,
    max_batch: Annotated[int, typer.Option(min=1, help="Most observations per request.")] = 1024,
    max_body_bytes: Annotated[int, typer.Option(min=64, help="Largest request body in bytes.")] = 4
    * 1024
    * 1024,
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime threads per request.")] = 1,
) -> None:
    """Serve the greedy policy over HTTP: POST /predict, GET /info, GET /health."""
    from qlearn.serve import Policy
    from qlearn.serve import serve as run_server

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is out of range; allowed: 0 to 65535")
    policy = Policy.load(model, threads=threads)

    def ready(url: str) -> None:
        # Flushed at once: a script that started the server reads the URL from this line.
        env_id = policy.info.get("env_id")
        print(f"serving {model} (env {env_id}) on {url}; Ctrl-C stops", flush=True)
        if not _is_loopback(host):
            typer.echo(
                f"warning: --host {host} exposes the policy beyond this machine; the server "
                "has no authentication",
                err=True,
            )

    run_server(
        policy,
        host=host,
        port=port,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        on_ready=ready,
    )
