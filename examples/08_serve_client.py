"""Play an episode against a policy server: the client side of `qlearn serve`.

The server answers `POST /predict` with the greedy action for an observation. This client asks
`GET /info` which env the policy was trained on, makes that env, and plays one episode, sending
each observation just as the env returns it: the exported graph does the preprocessing. HTTP is
the standard library's urllib, so any language's HTTP client can do the same.

    qlearn export runs/cartpole --out policy.onnx    # then, in one shell:
    qlearn serve policy.onnx                         # serves on http://127.0.0.1:8000
    python examples/08_serve_client.py --url http://127.0.0.1:8000   # in another

    python examples/08_serve_client.py --model policy.onnx   # starts (and stops) the server itself
    python examples/08_serve_client.py --quick               # trains a small CartPole policy first

With `--quick` (or QLEARN_QUICK=1) the script trains CartPole for 5,000 steps with the
`cartpole` preset, exports the policy to ONNX, serves it, plays, and checks that the server
chose the actions the trained agent chooses in process.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from qlearn import DQN
from qlearn.envs import make_env
from qlearn.presets import load_preset
from qlearn.serve import ServerProcess


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    source.add_argument("--model", type=Path, help="an .onnx file or a run dir to serve")
    source.add_argument("--quick", action="store_true", help="train a small policy first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episode")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/08_serve_client"))
    args = parser.parse_args()
    from_env = os.environ.get("QLEARN_QUICK") == "1" and not (args.url or args.model)
    args.quick = args.quick or from_env
    if not (args.url or args.model or args.quick):
        parser.error("give --url of a running server, --model to serve, or --quick")
    return args


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def post(url: str, payload: Any) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def play_episode(url: str, seed: int) -> tuple[list[np.ndarray], list[int], float, float]:
    """One episode of the server's env: (observations, actions, return, seconds per request)."""
    info = get(f"{url}/info")
    env_id = info["env_id"]
    if ":" in env_id:  # gymnasium would import the module named before the colon
        raise SystemExit(f"refusing env id {env_id!r}: it would import a module")
    print(f"server at {url}: {env_id}, {info['model']['format']} model, input {info['input']}")
    env = make_env(env_id, **info["env_kwargs"])
    obs, _ = env.reset(seed=seed)
    observations, actions, total, waited = [], [], 0.0, 0.0
    done = False
    while not done:
        start = time.perf_counter()
        answer = post(f"{url}/predict", {"obs": np.asarray(obs).tolist()})
        waited += time.perf_counter() - start
        observations.append(np.asarray(obs))
        actions.append(answer["action"])
        obs, reward, terminated, truncated, _ = env.step(answer["action"])
        total += float(reward)
        done = terminated or truncated
    env.close()
    return observations, actions, total, waited / len(actions)


def main() -> None:
    args = parse_args()
    model = args.model
    if args.quick:
        config = load_preset("cartpole").replace(total_steps=5_000, eval_interval=0)
        agent = DQN("CartPole-v1", config, run_dir=args.run_dir).learn()
        model = args.run_dir / "policy.onnx"
        report = agent.export(model, num_checks=2_000)
        print(
            f"trained {agent.counters.step} steps; exported {model} (onnxruntime matched torch "
            f"on {report.num_checked} observations, max |dQ| {report.max_abs_diff:.1e})"
        )
    if args.url:
        observations, actions, total, latency = play_episode(args.url.rstrip("/"), args.seed)
    else:
        with ServerProcess(model) as server:
            observations, actions, total, latency = play_episode(server.url, args.seed)
    print(
        f"episode over after {len(actions)} steps: return {total:.1f} "
        f"({latency * 1e3:.2f} ms per request, round trip)"
    )
    if args.quick:
        same = (agent.predict(np.stack(observations)) == np.array(actions)).all()
        print(f"the server chose the trained agent's actions: {bool(same)}")


if __name__ == "__main__":
    main()
