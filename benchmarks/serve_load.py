"""Serving: latency and throughput of `qlearn serve` on 127.0.0.1, beside in-process torch and
onnxruntime, and how the server answers a stream of malformed requests mixed into the load.

A CartPole policy (trained here for --train-steps with the `cartpole` preset, or --model RUN) is
exported to ONNX and served by `qlearn serve` in a child process bound to 127.0.0.1; nothing else
is ever contacted. For batch sizes 1 and 64 of observations met in real episodes:
  clean      --clients threads, each on a keep-alive connection, send --requests /predict
             requests in all (capped at --time-cap seconds): p50 and p99 latency, requests/s
  mixed      the same load while one more client sends --bad-requests malformed requests (wrong
             shape, NaN, strings, huge bodies, truncated JSON, ...): every good answer is checked
             against in-process onnxruntime (same actions, Q-values within 1e-5 of max(1, |Q|))
             and every bad one must be a 4xx; anything else (5xx, dropped) is counted
  in process the same batches through onnxruntime, the exported torch module, and the agent's
             own greedy path (numpy for plain MLPs), one thread each
Request bodies are encoded before the clock starts, and answers decoded after it stops.

    .venv/bin/python benchmarks/serve_load.py
    .venv/bin/python benchmarks/serve_load.py --model runs/cartpole --requests 5000
    .venv/bin/python benchmarks/serve_load.py --quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import add_quick, add_results, make_parser, markdown_table, write_json

from qlearn import DQN
from qlearn.export import (
    TOLERANCE,
    GreedyPolicy,
    observations_from_episodes,
    onnx_session,
)
from qlearn.presets import load_preset
from qlearn.serve import ServerProcess

BATCH_SIZES = (1, 64)
MAX_BODY = 1024 * 1024  # the server's --max-body-bytes here; "huge" bodies are twice that
JSON_HEADERS = {"Content-Type": "application/json"}


def malformed_requests() -> list[tuple[str, bytes, dict[str, str]]]:
    """(kind, body, headers) of each malformed request the mixed phase cycles through."""
    return [
        ("wrong shape", b'{"obs": [0.1, 0.2, 0.3]}', JSON_HEADERS),
        ("NaN", b'{"obs": [NaN, 0.2, 0.3, 0.4]}', JSON_HEADERS),
        ("Infinity", b'{"obs": [[Infinity, 0, 0, 0]]}', JSON_HEADERS),
        ("strings", b'{"obs": ["a", "b", "c", "d"]}', JSON_HEADERS),
        ("truncated JSON", b'{"obs": [[0.1, 0.2, 0.3, 0.4], [0.1', JSON_HEADERS),
        ("ragged batch", b'{"obs": [[0.1, 0.2, 0.3, 0.4], [0.1]]}', JSON_HEADERS),
        ("wrong key", b'{"observation": [0.1, 0.2, 0.3, 0.4]}', JSON_HEADERS),
        ("not JSON content", b"obs=1", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("deep nesting", b"[" * 50_000 + b"]" * 50_000, JSON_HEADERS),
        ("huge body", b'{"obs": [' + b"0.0, " * (2 * MAX_BODY // 5) + b"0.0]}", JSON_HEADERS),
        ("huge declared length", b"", {**JSON_HEADERS, "Content-Length": str(10**9)}),
    ]


class Client:
    """A keep-alive HTTP connection to the server that reconnects after an error."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname in ("127.0.0.1", "localhost"), "load tests stay on this machine"
        self.host, self.port = parts.hostname, parts.port
        self.connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            if "Content-Length" in headers and not body:
                return self._declared_only(headers)
            self.connection.request("POST", "/predict", body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
            if response.getheader("connection", "").lower() == "close":
                self.close()
            return response.status, data
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def _declared_only(self, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send headers announcing a huge body, and none of it: the server must refuse at once."""
        self.close()
        with socket.create_connection((self.host, self.port), timeout=60) as sock:
            lines = ["POST /predict HTTP/1.1", f"Host: {self.host}:{self.port}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            response = http.client.HTTPResponse(sock)
            response.begin()
            return response.status, response.read(response.length or 0)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def healthy(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        return response.status == 200 and json.loads(response.read()) == {"status": "ok"}
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        connection.close()


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def run_load(
    url: str,
    bodies: list[bytes],
    clients: int,
    time_cap: float,
    bad: list[tuple[str, bytes, dict[str, str]]] | None,
    num_bad: int,
) -> dict[str, Any]:
    """Send `bodies` from `clients` threads (and `num_bad` malformed requests from one more).

    Returns:
        latencies, answers by body index, wall time, and the malformed requests' outcomes.
    """
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    answers: dict[int, tuple[int, bytes] | str] = {}
    latencies: list[float] = []
    deadline = time.monotonic() + time_cap
    load_done = threading.Event()

    def good_worker() -> None:
        client = Client(url)
        while time.monotonic() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            start = time.perf_counter()
            try:
                answer: tuple[int, bytes] | str = client.post(bodies[i], JSON_HEADERS)
            except (OSError, http.client.HTTPException) as exc:
                answer = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - start
            with lock:
                answers[i] = answer
                latencies.append(elapsed)
        client.close()

    bad_outcomes: list[tuple[str, int | str]] = []

    def bad_worker() -> None:
        assert bad is not None
        client = Client(url)
        for k in range(num_bad):
            if load_done.is_set() and k >= len(bad):  # every kind once, then only under load
                break
            kind, body, headers = bad[k % len(bad)]
            try:
                status: int | str = client.post(body, headers)[0]
            except (OSError, http.client.HTTPException) as exc:
                status = f"dropped ({type(exc).__name__})"
            bad_outcomes.append((kind, status))
        client.close()

    threads = [threading.Thread(target=good_worker) for _ in range(clients)]
    bad_thread = threading.Thread(target=bad_worker) if bad else None
    start = time.perf_counter()
    for t in threads:
        t.start()
    if bad_thread is not None:
        bad_thread.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    load_done.set()
    if bad_thread is not None:
        bad_thread.join()
    return {"answers": answers, "latencies": latencies, "wall_s": wall, "bad": bad_outcomes}


def check_answers(
    answers: dict[int, tuple[int, bytes] | str],
    batches: list[np.ndarray],
    expected: list[tuple[np.ndarray, np.ndarray]],
) -> dict[str, int]:
    """Count good requests answered correctly, answered wrongly, and failed (non-200, dropped)."""
    counts = {"correct": 0, "wrong": 0, "failed": 0}
    for i, answer in answers.items():
        if isinstance(answer, str) or answer[0] != 200:
            counts["failed"] += 1
            continue
        data = json.loads(answer[1])
        q_want, a_want = expected[i]
        single = len(batches[i]) == 1 and "action" in data
        q = np.asarray([data["q_values"]] if single else data["q_values"], dtype=np.float64)
        actions = np.asarray([data["action"]] if single else data["actions"])
        scale = np.maximum(1.0, np.abs(q_want))
        ok = (
            q.shape == q_want.shape
            and bool((np.abs(q - q_want) / scale <= TOLERANCE).all())
            and np.array_equal(actions, a_want)
        )
        counts["correct" if ok else "wrong"] += 1
    return counts


def time_in_process(fn: Callable[[np.ndarray], Any], batches: list[np.ndarray]) -> dict[str, Any]:
    for batch in batches[:20]:  # warm-up
        fn(batch)
    latencies = []
    start = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        fn(batch)
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return {"requests": len(batches), "per_s": len(batches) / wall, **percentiles(latencies)}


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--model", type=Path, help="a CartPole run dir (default: train one)")
    parser.add_argument("--train-steps", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=2_000, help="good requests per phase")
    parser.add_argument("--bad-requests", type=int, default=1_000, help="per mixed phase")
    parser.add_argument("--clients", type=int, default=4, help="client threads, keep-alive")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per phase, at most")
    add_quick(parser, "a smoke run")
    add_results(parser)
    args = parser.parse_args()
    if args.quick:
        args.train_steps, args.requests, args.bad_requests = 1_000, 100, 30
        args.time_cap = min(args.time_cap, 30.0)
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    if args.model is None:
        config = load_preset("cartpole").replace(total_steps=args.train_steps, eval_interval=0)
        agent = DQN("CartPole-v1", config, run_dir=work / "run").learn()
    else:
        agent = DQN.load(args.model)
    onnx_path = work / "policy.onnx"
    report = agent.export(onnx_path, num_checks=2_000 if args.quick else 10_000)
    session = onnx_session(onnx_path, threads=1)
    learner = agent.learner
    learner.q_net.eval()
    module = GreedyPolicy(learner.q_net, agent.spec, agent.config.distributional, learner.support)
    env = agent.make_eval_env()
    rng = np.random.default_rng(0)
    pool = observations_from_episodes(
        env, lambda o: int(agent.predict(o)), 64 * 64, rng, seed=0
    ).astype(np.float32)
    env.close()

    def onnx_fn(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, actions = session.run(None, {"obs": batch})
        return q, actions

    def torch_fn(batch: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(batch))

    def agent_fn(batch: np.ndarray) -> Any:
        return learner.q_values(batch).argmax(axis=1)

    rows: list[dict[str, Any]] = []
    robustness: list[dict[str, Any]] = []
    bad = malformed_requests()
    server_args = ["--max-body-bytes", str(MAX_BODY)]
    with ServerProcess(onnx_path, args=server_args) as server:
        for batch_size in BATCH_SIZES:
            batches = [pool[rng.integers(0, len(pool), batch_size)] for _ in range(args.requests)]
            expected = [onnx_fn(b) for b in batches]
            bodies = [
                json.dumps({"obs": b[0].tolist() if batch_size == 1 else b.tolist()}).encode()
                for b in batches
            ]
            for phase in ("clean", "mixed"):
                result = run_load(
                    server.url,
                    bodies,
                    args.clients,
                    args.time_cap,
                    bad if phase == "mixed" else None,
                    args.bad_requests,
                )
                counts = check_answers(result["answers"], batches, expected)
                done = len(result["latencies"])
                rows.append(
                    {
                        "path": f"HTTP /predict, {args.clients} clients"
                        + (" + malformed stream" if phase == "mixed" else ""),
                        "batch": batch_size,
                        "requests": done,
                        "per_s": done / result["wall_s"],
                        **percentiles(result["latencies"]),
                        "answers": counts,
                    }
                )
                if phase == "mixed":
                    statuses = [s for _, s in result["bad"]]
                    by_kind: dict[str, dict[str, int]] = {}
                    for kind, status in result["bad"]:
                        key = str(status)
                        by_kind.setdefault(kind, {}).setdefault(key, 0)
                        by_kind[kind][key] += 1
                    robustness.append(
                        {
                            "batch": batch_size,
                            "good_sent": done,
                            "good_correct": counts["correct"],
                            "good_wrong": counts["wrong"],
                            "good_failed": counts["failed"],
                            "bad_sent": len(statuses),
                            "bad_4xx": sum(isinstance(s, int) and 400 <= s < 500 for s in statuses),
                            "bad_other": sum(
                                not (isinstance(s, int) and 400 <= s < 500) for s in statuses
                            ),
                            "bad_by_kind": by_kind,
                        }
                    )
            for name, fn in (
                ("in process: onnxruntime", onnx_fn),
                ("in process: torch (exported module)", torch_fn),
                ("in process: qlearn agent (numpy MLP path)", agent_fn),
            ):
                rows.append({"path": name, "batch": batch_size, **time_in_process(fn, batches)})
        alive = server.process is not None and server.process.poll() is None and healthy(server.url)
    exit_code = server.process.returncode if server.process is not None else None

    latency = [
        [
            row["path"],
            row["batch"],
            row["requests"],
            f"{row['p50_ms']:.3f}",
            f"{row['p99_ms']:.3f}",
            f"{row['per_s']:,.0f}",
        ]
        for row in rows
    ]
    print()
    print(
        markdown_table(["path", "batch", "requests", "p50 (ms)", "p99 (ms)", "requests/s"], latency)
    )
    keys = ["batch", "good_sent", "good_correct", "good_wrong", "good_failed", "bad_sent"]
    keys += ["bad_4xx", "bad_other"]
    header = ["batch", "good requests", "answered correctly", "wrong", "failed (non-200, dropped)"]
    header += ["malformed requests", "answered 4xx", "anything else"]
    print()
    print(markdown_table(header, [[r[k] for k in keys] for r in robustness]))
    print(f"server alive after the load: {alive}; stopped with exit code {exit_code}")
    load_after = os.getloadavg()
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")

    record = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "torch": torch.__version__,
        },
        "settings": {
            "requests": args.requests,
            "bad_requests": args.bad_requests,
            "clients": args.clients,
            "time_cap_s": args.time_cap,
            "train_steps": None if args.model else args.train_steps,
            "max_body_bytes": MAX_BODY,
        },
        "export_check": report.summary(),
        "rows": rows,
        "robustness": robustness,
        "server_alive_after_load": alive,
    }
    name = "serve_load_quick.json" if args.quick else "serve_load.json"
    write_json(args.results / name, record)
    print(f"wrote {args.results / name}")


if __name__ == "__main__":
    main()
