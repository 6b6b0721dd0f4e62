"""MinAtar: DQN and Rainbow (the `minatar` and `minatar_rainbow` presets) against a random policy.

Without --steps, the script first measures each algorithm's training steps/s on each game and
picks one step budget per game that the slowest algorithm finishes in --minutes; it prints that
budget before training. Every run writes a run dir (logs, evals, final model), a learning-curve
PNG, and one line of results/minatar.json; one PNG per game compares the greedy evaluations.

    .venv/bin/python benchmarks/minatar_learning.py --games Breakout,SpaceInvaders --seeds 0
    .venv/bin/python benchmarks/minatar_learning.py --steps 200000 --jobs 2
    .venv/bin/python benchmarks/minatar_learning.py --steps Breakout=217000,SpaceInvaders=216000 \
        --seeds 0,1 --skip-trained     # add seed 1 to finished seed-0 runs of those budgets
    .venv/bin/python benchmarks/minatar_learning.py --quick        # smoke test, about a minute
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
from common import add_quick, add_results, add_seeds, make_parser, write_json

PRESETS = {"dqn": "minatar", "rainbow": "minatar_rainbow"}


@dataclasses.dataclass(frozen=True)
class Run:
    game: str
    algo: str
    seed: int
    steps: int
    eval_episodes: int
    num_evals: int
    run_dir: str
    tag: str  # prefix of the output files: minatar, or minatar_quick for --quick
    results: str  # folder of the PNGs and the JSON
    skip_trained: bool  # load a run dir's final model instead of training again

    @property
    def env_id(self) -> str:
        return f"MinAtar/{self.game}-v1"


def config_for(algo: str, steps: int, seed: int, eval_episodes: int, num_evals: int):
    """The preset, shortened to `steps`: warm-up at most 5% of the run, evaluations spread out."""
    from qlearn.presets import load_preset

    base = load_preset(PRESETS[algo])
    return base.replace(
        total_steps=steps,
        seed=seed,
        learning_starts=min(base.learning_starts, max(steps // 20, base.batch_size)),
        eval_interval=max(steps // num_evals, 1),
        eval_episodes=eval_episodes,
    )


def measure_sps(game: str, algo: str, probe_steps: int) -> float:
    """Env steps per second of training (updates included) over `probe_steps` steps."""
    from qlearn import DQN

    config = config_for(algo, probe_steps, 0, 1, 1).replace(learning_starts=64, eval_interval=0)
    agent = DQN(f"MinAtar/{game}-v1", config)
    start = time.perf_counter()
    agent.learn()
    return probe_steps / (time.perf_counter() - start)


def random_returns(env_id: str, episodes: int, seed: int) -> list[float]:
    from qlearn.envs import make_env
    from qlearn.evaluation import run_episodes

    env = make_env(env_id)
    num_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    result = run_episodes(env, lambda obs: int(rng.integers(num_actions)), episodes, seed)
    env.close()
    return [float(r) for r in result.returns]


def train_one(run: Run) -> dict:
    """Train (or load a finished run), evaluate greedily and a random policy on the same
    seeds, plot."""
    import torch

    from qlearn import DQN
    from qlearn.plots import learning_curve

    torch.set_num_threads(1)
    config = config_for(run.algo, run.steps, run.seed, run.eval_episodes, run.num_evals)
    if run.skip_trained and (Path(run.run_dir) / "final").exists():
        agent = DQN.load(Path(run.run_dir) / "final")
        if agent.counters.step != run.steps:
            raise SystemExit(f"{run.run_dir} ran {agent.counters.step} steps, not {run.steps}")
    else:
        agent = DQN(run.env_id, config, run_dir=run.run_dir)
        agent.learn()
    # Wall time of the training loop, periodic evaluations included.
    train_time = agent.counters.wall_time
    eval_seed = 10_000 + run.seed
    final = agent.evaluate(run.eval_episodes, seed=eval_seed)
    random = random_returns(run.env_id, run.eval_episodes, eval_seed)
    curve = Path(run.results) / f"{run.tag}_{run.game}_{run.algo}_s{run.seed}.png"
    learning_curve(run.run_dir, curve)
    return {
        **dataclasses.asdict(run),
        "learning_starts": config.learning_starts,
        "train_time_s": round(train_time, 1),
        "steps_per_s": round(run.steps / train_time, 1),
        "final_mean": final.mean_return,
        "final_std": final.std_return,
        "final_returns": [float(r) for r in final.returns],
        "random_mean": float(np.mean(random)),
        "random_std": float(np.std(random)),
        "curve_png": curve.name,  # beside the JSON
    }


def plot_game(game: str, rows: list[dict], out: Path) -> None:
    """Greedy evaluation mean against env steps for each algorithm and seed, random as a line."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    colors = {"dqn": "tab:blue", "rainbow": "tab:red"}
    for row in rows:
        path = Path(row["run_dir"]) / "evals.csv"
        if not path.exists():
            continue
        with open(path, newline="", encoding="utf-8") as f:
            evals = list(csv.DictReader(f))
        steps = [float(r["step"]) for r in evals]
        means = [float(r["mean_return"]) for r in evals]
        label = f"{row['algo']} seed {row['seed']}"
        style = ("-", "--", ":", "-.")[row["seed"] % 4]
        color = colors.get(row["algo"])
        ax.plot(steps, means, style, marker="o", ms=3, color=color, label=label)
    random = np.mean([row["random_mean"] for row in rows])
    ax.axhline(random, color="gray", ls="--", label=f"random policy ({random:.2f})")
    ax.set_xlabel("env steps")
    ax.set_ylabel("greedy evaluation return")
    ax.set_title(f"MinAtar {game}: {rows[0]['steps']} steps per run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def steps_for(spec: str, game: str) -> int:
    """The step budget of `game` from --steps: `200000`, or `Breakout=217000,SpaceInvaders=...`."""
    if "=" not in spec:
        return int(spec)
    table = dict(item.split("=", 1) for item in spec.split(","))
    if game not in table:
        raise SystemExit(f"--steps {spec} names no budget for {game}")
    return int(table[game])


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--games", default="Breakout,SpaceInvaders")
    parser.add_argument("--algos", default="dqn,rainbow")
    add_seeds(parser, "0")
    parser.add_argument(
        "--steps",
        help="env steps per run: one number, or GAME=STEPS,... per game (default: from --minutes)",
    )
    parser.add_argument("--minutes", type=float, default=55.0, help="wall budget of one run")
    parser.add_argument("--probe-steps", type=int, default=1_500)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--num-evals", type=int, default=10, help="evaluations during a run")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    parser.add_argument("--runs-dir", default="runs/bench_minatar")
    add_results(parser, "PNGs and JSON")
    add_quick(parser, "smoke test: 1,500 steps")
    parser.add_argument(
        "--skip-trained", action="store_true", help="evaluate run dirs that hold a final model"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_episodes, args.num_evals = "1500", 2, 2
    games = args.games.split(",")
    algos = args.algos.split(",")
    seeds = args.seeds
    tag = "minatar_quick" if args.quick else "minatar"
    args.results.mkdir(parents=True, exist_ok=True)

    budget: dict[str, int] = {}
    for game in games:
        if args.steps is not None:
            budget[game] = steps_for(args.steps, game)
            continue
        rates = {algo: measure_sps(game, algo, args.probe_steps) for algo in algos}
        slowest = min(rates.values())
        # Evaluations and the final plots take ~10% on top of training.
        budget[game] = max(1_000, int(slowest * args.minutes * 60 * 0.9) // 1_000 * 1_000)
        for algo, sps in rates.items():
            print(f"{game:<14} {algo:<8} measured {sps:7.1f} steps/s while training")
    for game, steps in budget.items():
        print(f"{game:<14} budget: {steps} env steps per run (--minutes {args.minutes:g})")

    runs = [
        Run(
            game,
            algo,
            seed,
            budget[game],
            args.eval_episodes,
            args.num_evals,
            f"{args.runs_dir}/{game}_{algo}_s{seed}",
            tag,
            str(args.results),
            args.skip_trained,
        )
        for game in games
        for seed in seeds
        for algo in algos
    ]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        rows = list(pool.map(train_one, runs))

    header = f"{'game':<14} {'algo':<8} {'seed':>4} {'steps':>8} {'steps/s':>8} "
    print(header + f"{'greedy return':>16} {'random return':>16}")
    for r in rows:
        print(
            f"{r['game']:<14} {r['algo']:<8} {r['seed']:>4} {r['steps']:>8} "
            f"{r['steps_per_s']:>8.1f} {r['final_mean']:>8.2f} +/- {r['final_std']:<5.2f} "
            f"{r['random_mean']:>8.2f} +/- {r['random_std']:<5.2f}"
        )
    for game in games:
        game_rows = [r for r in rows if r["game"] == game]
        out = args.results / f"{tag}_{game}.png"
        plot_game(game, game_rows, out)
        print(f"wrote {out}")
    out = args.results / f"{tag}.json"
    # Other work on the machine slows the runs: the load average says how busy it was.
    summary = {"budget_steps": budget, "load_average": os.getloadavg(), "runs": rows}
    write_json(out, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
