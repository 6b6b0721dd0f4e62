"""qlearn against Stable-Baselines3 on CartPole-v1, in one script, seeds alternating.

Three measurements (see the README's "Speed" section for the latest table):

* time to solve: training wall-clock until the first periodic greedy evaluation (20 episodes, the
  same step schedule for both libraries) reaches a mean >= 475; evaluation time is excluded and
  reported apart. qlearn runs twice: its tuned `cartpole` preset (128x128, Double DQN) and the
  rl-baselines3-zoo's exact settings (256x256, no Double DQN), which SB3 runs too, so the preset
  row is a tuned-vs-zoo comparison and the zoo row a like-for-like one. A seed still unsolved at the
  budget counts as a failure at its full time. Each network that solved is then re-scored on 100
  held-out episodes (seeds no periodic evaluation used): a 20-episode mean >= 475 can be luck.
* engine ratio: qlearn with SB3's exact hyperparameters against SB3, the same number of steps.
* throughput at the seeds' configuration (one env, an update every 4 steps, batch 64, 2x64 net),
  beside the bare env's own step rate; and with vector envs beside the bare vector env's rate.

Each run happens in a fresh subprocess (so peak memory is its own), with one torch thread.

    python benchmarks/speed.py                    # everything, 5 seeds
    python benchmarks/speed.py --only solve --seeds 0,1
    python benchmarks/speed.py --quick            # a smoke version for CI
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import add_quick, add_results, add_seeds, make_parser, markdown_table, write_json

from qlearn.evaluation import held_out_eval_seed, periodic_eval_seed, run_episodes

SOLVED = 475.0
EVAL_EPISODES = 20
RESCORE_EPISODES = 100

# rl-baselines3-zoo, hyperparams/dqn.yml, CartPole-v1.
ZOO = {
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1_000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
    "exploration_fraction": 0.16,
    "exploration_final_eps": 0.04,
    "net_arch": [256, 256],
}


def _zoo_as_qlearn(total_steps: int) -> dict[str, Any]:
    """The zoo settings in qlearn's names (SB3 has no Double DQN; its loss is Huber)."""
    return {
        "total_steps": total_steps,
        "learning_rate": ZOO["learning_rate"],
        "batch_size": ZOO["batch_size"],
        "buffer_size": ZOO["buffer_size"],
        "learning_starts": ZOO["learning_starts"],
        "gamma": ZOO["gamma"],
        "target_update_interval": ZOO["target_update_interval"],
        "train_interval": ZOO["train_freq"],
        "gradient_steps": ZOO["gradient_steps"],
        "exploration_fraction": ZOO["exploration_fraction"],
        "epsilon_end": ZOO["exploration_final_eps"],
        "hidden_sizes": tuple(ZOO["net_arch"]),
        "init": "torch_default",
        "double_q": False,
        "loss": "huber",
        "max_grad_norm": 10.0,
        "eval_interval": 0,
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _greedy_returns(policy: Any, seed: int, episodes: int = EVAL_EPISODES) -> list[float]:
    """Returns of `episodes` greedy episodes, the first reset seeded with `seed` (later resets
    continue the env's generator): the episodes qlearn's own evaluations play."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    result = run_episodes(env, policy, episodes, seed)
    env.close()
    return [float(r) for r in result.returns]


def _greedy_eval(policy: Any, seed: int) -> float:
    return statistics.fmean(_greedy_returns(policy, seed))


def _rescore(policy: Any, seed: int, solved: bool) -> dict[str, Any]:
    """Mean and min over 100 held-out episodes of a network that solved (empty if it did not)."""
    if not solved:
        return {}
    # qlearn's held-out seed: episodes no periodic evaluation (of either library) picked it by.
    returns = _greedy_returns(policy, held_out_eval_seed(seed), RESCORE_EPISODES)
    mean = statistics.fmean(returns)
    return {"rescore_mean": mean, "rescore_min": min(returns), "rescore_solved": mean >= SOLVED}


# ---------------------------------------------------------------------------------- workers
def qlearn_solve(seed: int, budget: int, eval_interval: int) -> dict[str, Any]:
    """qlearn's tuned `cartpole` preset."""
    from qlearn.presets import load_preset

    return _qlearn_solve(load_preset("cartpole"), "qlearn", seed, budget, eval_interval)


def qlearn_zoo_solve(seed: int, budget: int, eval_interval: int) -> dict[str, Any]:
    """qlearn with the zoo's exact settings, as SB3 runs them."""
    from qlearn import DQNConfig

    config = DQNConfig(**_zoo_as_qlearn(budget))
    return _qlearn_solve(config, "qlearn-zoo", seed, budget, eval_interval)


def _qlearn_solve(
    config: Any, library: str, seed: int, budget: int, eval_interval: int
) -> dict[str, Any]:
    import torch

    from qlearn import DQN

    torch.set_num_threads(1)
    config = config.replace(
        seed=seed, total_steps=budget, eval_interval=eval_interval, eval_episodes=EVAL_EPISODES
    )
    agent = DQN("CartPole-v1", config)
    evals: list[tuple[int, float]] = []
    eval_time = 0.0

    def on_eval(_: Any, m: dict[str, float]) -> bool:
        nonlocal eval_time
        evals.append((int(m["step"]), m["mean_return"]))
        eval_time += m["eval_time_s"]
        return m["mean_return"] < SOLVED

    t0 = time.perf_counter()
    agent.learn(callback=on_eval)
    wall = time.perf_counter() - t0
    solved = bool(evals) and evals[-1][1] >= SOLVED
    train_time = agent.counters.wall_time
    return {
        "library": library,
        "seed": seed,
        "solved": solved,
        "time_to_solve_s": train_time if solved else None,
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "wall_s": wall,
        "steps": agent.counters.step,
        "steps_per_s": agent.counters.step / train_time,
        "evals": evals,
        "peak_rss_mb": _peak_rss_mb(),
        **_rescore(agent.predict, seed, solved),
    }


def sb3_solve(seed: int, budget: int, eval_interval: int) -> dict[str, Any]:
    import torch
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    evals: list[tuple[int, float]] = []
    eval_time = 0.0

    class PeriodicEval(BaseCallback):
        def _on_step(self) -> bool:
            nonlocal eval_time
            if self.num_timesteps % eval_interval:
                return True
            t = time.perf_counter()
            score = _greedy_eval(
                lambda o: int(self.model.predict(o, deterministic=True)[0]),
                periodic_eval_seed(seed, len(evals)),  # the episodes qlearn's run sees
            )
            eval_time += time.perf_counter() - t
            evals.append((self.num_timesteps, score))
            return score < SOLVED

    zoo = {k: v for k, v in ZOO.items() if k != "net_arch"}
    t0 = time.perf_counter()
    model = SB3DQN(
        "MlpPolicy",
        "CartPole-v1",
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": ZOO["net_arch"]},
        **zoo,
    )
    model.learn(budget, callback=PeriodicEval())
    wall = time.perf_counter() - t0
    solved = bool(evals) and evals[-1][1] >= SOLVED
    train_time = wall - eval_time
    return {
        "library": "sb3",
        "seed": seed,
        "solved": solved,
        "time_to_solve_s": train_time if solved else None,
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "wall_s": wall,
        "steps": int(model.num_timesteps),
        "steps_per_s": model.num_timesteps / train_time,
        "evals": evals,
        "peak_rss_mb": _peak_rss_mb(),
        **_rescore(lambda o: int(model.predict(o, deterministic=True)[0]), seed, solved),
    }


def qlearn_engine(seed: int, steps: int) -> dict[str, Any]:
    import torch

    from qlearn import DQN, DQNConfig

    torch.set_num_threads(1)
    agent = DQN("CartPole-v1", DQNConfig(seed=seed, **_zoo_as_qlearn(steps)))
    t0 = time.perf_counter()
    agent.learn()
    wall = time.perf_counter() - t0
    score = _greedy_eval(agent.predict, held_out_eval_seed(seed))
    return {
        "library": "qlearn",
        "seed": seed,
        "wall_s": wall,
        "steps": steps,
        "steps_per_s": steps / wall,
        "final_eval": score,
        "peak_rss_mb": _peak_rss_mb(),
    }


def sb3_engine(seed: int, steps: int) -> dict[str, Any]:
    import torch
    from stable_baselines3 import DQN as SB3DQN

    torch.set_num_threads(1)
    zoo = {k: v for k, v in ZOO.items() if k != "net_arch"}
    model = SB3DQN(
        "MlpPolicy",
        "CartPole-v1",
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": ZOO["net_arch"]},
        **zoo,
    )
    t0 = time.perf_counter()
    model.learn(steps)
    wall = time.perf_counter() - t0
    score = _greedy_eval(
        lambda o: int(model.predict(o, deterministic=True)[0]), held_out_eval_seed(seed)
    )
    return {
        "library": "sb3",
        "seed": seed,
        "wall_s": wall,
        "steps": steps,
        "steps_per_s": steps / wall,
        "final_eval": score,
        "peak_rss_mb": _peak_rss_mb(),
    }


def throughput(steps: int, num_envs_list: list[int]) -> dict[str, Any]:
    """qlearn at the seeds' configuration beside the bare env's step rate, in one process."""
    import gymnasium as gym
    import numpy as np
    import torch

    from qlearn import DQN, DQNConfig
    from qlearn.envs import make_vector_env
    from qlearn.replay import estimate_bytes

    torch.set_num_threads(1)
    out: dict[str, Any] = {"rows": []}
    for num_envs in num_envs_list:
        if num_envs == 1:
            env = gym.make("CartPole-v1")
            env.reset(seed=0)
            rng = np.random.default_rng(0)
            t0 = time.perf_counter()
            for _ in range(steps):
                _, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
                if terminated or truncated:
                    env.reset()
            bare = steps / (time.perf_counter() - t0)
        else:
            venv = make_vector_env("CartPole-v1", num_envs)
            venv.reset(seed=0)
            rng = np.random.default_rng(0)
            n_iter = steps // num_envs
            t0 = time.perf_counter()
            for _ in range(n_iter):
                venv.step(rng.integers(2, size=num_envs))
            bare = n_iter * num_envs / (time.perf_counter() - t0)
        config = DQNConfig(
            total_steps=steps + 1000,
            learning_starts=1000,
            train_interval=4,
            batch_size=64,
            hidden_sizes=(64, 64),
            num_envs=num_envs,
            eval_interval=0,
            target_update_interval=100,
        )
        agent = DQN("CartPole-v1", config)
        agent.learn(1000)  # fill the buffer up to learning_starts; not timed
        t0 = time.perf_counter()
        agent.learn(steps)  # `steps` more
        rate = (agent.counters.step - 1000) / (time.perf_counter() - t0)
        out["rows"].append(
            {
                "num_envs": num_envs,
                "qlearn_steps_per_s": rate,
                "bare_env_steps_per_s": bare,
                "fraction_of_bare": rate / bare,
            }
        )
    per = estimate_bytes(1, (4,), "float32", 2)
    out["replay_bytes_per_transition"] = per
    out["replay_mb_for_1m"] = per * 1_000_000 / 2**20
    return out


def cpu_throughput(steps: int, num_envs_list: list[int], repeats: int = 3) -> dict[str, Any]:
    """`throughput`'s configuration timed in CPU seconds of this process (best of `repeats`
    calls of `learn(steps)` after a warm-up): steal time and other jobs on a shared machine
    leave it nearly untouched, where wall-clock rates move by 20%."""
    import torch

    from qlearn import DQN, DQNConfig

    torch.set_num_threads(1)
    rows = []
    for num_envs in num_envs_list:
        config = DQNConfig(
            total_steps=10**9,
            learning_starts=1000,
            train_interval=4,
            batch_size=64,
            hidden_sizes=(64, 64),
            num_envs=num_envs,
            eval_interval=0,
            target_update_interval=100,
            checkpoint_interval=0,
            checkpoint_minutes=0,
        )
        agent = DQN("CartPole-v1", config)
        agent.learn(2000)  # past learning_starts; not timed
        best = math.inf
        for _ in range(repeats):
            t0 = time.process_time()
            agent.learn(steps)
            best = min(best, time.process_time() - t0)
        rows.append({"num_envs": num_envs, "cpu_steps_per_s": steps / best})
    return {"rows": rows}


def counted_segment(config_name: str, steps: int) -> None:
    """Train `steps` env steps of one configuration between two `os.getppid()` calls, for
    `valgrind --tool=callgrind --dump-before=getppid` to count the instructions of that segment
    alone (its second dump): imports, set-up and the warm-up past `learning_starts` fall outside.

    Configurations: `preset` (the `cartpole` preset, the time-to-solve run), `zoo` (the zoo's
    settings, the engine run), and `envs1`, `envs8`, `envs32` (`throughput`'s configuration).
    """
    import torch

    from qlearn import DQN, DQNConfig
    from qlearn.presets import load_preset

    torch.set_num_threads(1)
    run = {"total_steps": 10**9, "eval_interval": 0, "checkpoint_interval": 0}
    if config_name == "preset":
        config = load_preset("cartpole").replace(**run)
    elif config_name == "zoo":
        config = DQNConfig(**{**_zoo_as_qlearn(10**9), **run})
    else:
        config = DQNConfig(
            learning_starts=1000,
            train_interval=4,
            batch_size=64,
            hidden_sizes=(64, 64),
            num_envs=int(config_name.removeprefix("envs")),
            target_update_interval=100,
            **run,
        )
    agent = DQN("CartPole-v1", config.replace(checkpoint_minutes=0))
    agent.learn(config.learning_starts + 256)  # past the warm-up: updates happen in the segment
    os.getppid()
    agent.learn(steps)
    os.getppid()


# ---------------------------------------------------------------------------------- driver
def _in_subprocess(fn: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


SOLVERS = ("qlearn", "qlearn-zoo", "sb3")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    parser = make_parser(__doc__)
    add_seeds(parser, "0,1,2,3,4")
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--eval-interval", type=int, default=2_500)
    parser.add_argument("--engine-steps", type=int, default=50_000)
    parser.add_argument("--throughput-steps", type=int, default=20_000)
    parser.add_argument("--only", choices=["solve", "engine", "throughput"], default=None)
    add_quick(parser, "tiny budgets, for CI smoke runs")
    add_results(parser)
    parser.add_argument("--out", type=Path, help="the JSON file (default: RESULTS/speed.json)")
    args = parser.parse_args()
    seeds = args.seeds
    if args.quick:
        seeds, args.budget, args.eval_interval = seeds[:1], 2_000, 1_000
        args.engine_steps, args.throughput_steps = 1_500, 2_000
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "quick": args.quick,
    }

    if args.only in (None, "solve"):
        runs = []
        for seed in seeds:  # alternate libraries seed by seed
            for fn in (qlearn_solve, qlearn_zoo_solve, sb3_solve):
                r = _in_subprocess(fn, seed, args.budget, args.eval_interval)
                runs.append(r)
                print(
                    f"solve {r['library']:6s} seed {seed}: solved={r['solved']} "
                    f"train {r['train_time_s']:.1f}s eval {r['eval_time_s']:.1f}s "
                    f"steps {r['steps']} ({r['steps_per_s']:.0f}/s) "
                    f"peak {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        by = {lib: [r for r in runs if r["library"] == lib] for lib in SOLVERS}
        # An unsolved seed counts as a failure at its full training time.
        tts = {
            lib: [r["time_to_solve_s"] or r["train_time_s"] for r in rs] for lib, rs in by.items()
        }

        def median_ratio(lib: str) -> float:
            return _median([s / q for q, s in zip(tts[lib], tts["sb3"], strict=True)])

        report["solve"] = {
            "runs": runs,
            "median_time_to_solve_s": {lib: _median(v) for lib, v in tts.items()},
            "solved": {lib: sum(r["solved"] for r in rs) for lib, rs in by.items()},
            "solved_on_rescore": {
                lib: sum(bool(r.get("rescore_solved")) for r in rs) for lib, rs in by.items()
            },
            "median_ratio_sb3_over_qlearn": median_ratio("qlearn"),
            "median_ratio_sb3_over_qlearn_zoo": median_ratio("qlearn-zoo"),
            "ratio_of_medians": _median(tts["sb3"]) / _median(tts["qlearn"]),
        }
    if args.only in (None, "engine"):
        runs = []
        for seed in seeds[:3]:
            for fn in (qlearn_engine, sb3_engine):
                r = _in_subprocess(fn, seed, args.engine_steps)
                runs.append(r)
                print(
                    f"engine {r['library']:6s} seed {seed}: {r['wall_s']:.1f}s "
                    f"({r['steps_per_s']:.0f} steps/s), final greedy eval {r['final_eval']:.0f}",
                    flush=True,
                )
        walls = {
            lib: [r["wall_s"] for r in runs if r["library"] == lib] for lib in ("qlearn", "sb3")
        }
        report["engine"] = {"runs": runs, "ratio": _median(walls["sb3"]) / _median(walls["qlearn"])}
    if args.only in (None, "throughput"):
        report["throughput"] = _in_subprocess(throughput, args.throughput_steps, [1, 8, 32])
        for row in report["throughput"]["rows"]:
            print(
                f"throughput num_envs={row['num_envs']}: qlearn {row['qlearn_steps_per_s']:.0f} "
                f"steps/s, bare env {row['bare_env_steps_per_s']:.0f} steps/s "
                f"({100 * row['fraction_of_bare']:.0f}%)",
                flush=True,
            )

    _print_table(report)
    out = write_json(args.out or args.results / "speed.json", report)
    print(f"wrote {out}")


def _print_table(report: dict[str, Any]) -> None:
    rows: list[list[str]] = []
    if "solve" in report:
        s = report["solve"]
        m = s["median_time_to_solve_s"]
        n = len(s["runs"]) // len(SOLVERS)
        rows.append(
            [
                "median time to solve, qlearn's tuned preset vs SB3 with the zoo's settings (s)",
                f"{m['qlearn']:.1f}",
                f"{m['sb3']:.1f}",
                f"{s['median_ratio_sb3_over_qlearn']:.1f}x (median of per-seed ratios)",
            ]
        )
        rows.append(
            [
                "median time to solve, both with the zoo's exact settings (s)",
                f"{m['qlearn-zoo']:.1f}",
                f"{m['sb3']:.1f}",
                f"{s['median_ratio_sb3_over_qlearn_zoo']:.1f}x (median of per-seed ratios)",
            ]
        )
        solved, kept = s["solved"], s["solved_on_rescore"]
        rows.append(
            [
                "seeds solved (preset / zoo settings)",
                f"{solved['qlearn']}/{n} / {solved['qlearn-zoo']}/{n}",
                f"{solved['sb3']}/{n}",
                "",
            ]
        )
        rows.append(
            [
                f"solved networks still >= {SOLVED:.0f} on {RESCORE_EPISODES} held-out episodes "
                "(preset / zoo settings)",
                f"{kept['qlearn']}/{solved['qlearn']} / "
                f"{kept['qlearn-zoo']}/{solved['qlearn-zoo']}",
                f"{kept['sb3']}/{solved['sb3']}",
                "",
            ]
        )
        for lib in SOLVERS:
            rs = [r for r in s["runs"] if r["library"] == lib]
            steps = _median([r["steps"] for r in rs])
            sps = _median([r["steps_per_s"] for r in rs])
            mem = max(r["peak_rss_mb"] for r in rs)
            rows.append(
                [
                    f"{lib}: median env steps used / steps/s / peak RSS MB",
                    f"{steps:.0f} / {sps:.0f} / {mem:.0f}",
                    "",
                    "",
                ]
            )
    if "engine" in report:
        e = report["engine"]
        q = _median([r["wall_s"] for r in e["runs"] if r["library"] == "qlearn"])
        b = _median([r["wall_s"] for r in e["runs"] if r["library"] == "sb3"])
        rows.append(
            [
                "engine, zoo hyperparameters, same steps (s)",
                f"{q:.1f}",
                f"{b:.1f}",
                f"{e['ratio']:.1f}x",
            ]
        )
    if "throughput" in report:
        t = report["throughput"]
        for row in t["rows"]:
            rows.append(
                [
                    f"seeds' config, num_envs={row['num_envs']} (steps/s; bare env)",
                    f"{row['qlearn_steps_per_s']:.0f}",
                    "",
                    f"bare {row['bare_env_steps_per_s']:.0f} "
                    f"({100 * row['fraction_of_bare']:.0f}%)",
                ]
            )
        rows.append(
            [
                "replay bytes per CartPole transition",
                f"{t['replay_bytes_per_transition']} ({t['replay_mb_for_1m']:.1f} MB per 1M)",
                "",
                "",
            ]
        )
    print()
    print(markdown_table(["measure", "qlearn", "SB3", "ratio"], rows))


if __name__ == "__main__":
    main()
