"""Tune DQN on an env with `qlearn.tune`, then re-train the tuned and the default config on fresh
seeds and compare their IQMs with 95% bootstrap intervals.

The study runs for a stated wall-clock budget (`--minutes`; trials already running finish), each
trial's seeds (`--tune-seeds`) trained together by the multi-seed engine and scored by their IQM.
The `--rescore` best trials then train on `--rescore-seeds`, seeds no trial used, and the one with
the best IQM over its tuning and re-scoring seeds together is the tuned config: the study's top
trial is the one most likely to have been lucky. The tuned config and `DQNConfig()` then train
with the same step budget on `--seeds`, seeds used by neither stage, each scored by the greedy
mean return over 20 held-out episodes. Writes `tune_<env>.json`, `tune_<env>.png` and the tuned
config as `tune_<env>.toml` (the preset, with the command in its header) to the results folder,
and the study (SQLite, trials CSV, plots, best config) to `--study-dir`.

    python benchmarks/tune.py --env Acrobot-v1 --steps 50000 --minutes 35 \
        --space benchmarks/tune_space.toml
    python benchmarks/tune.py --env MountainCar-v0 --steps 100000 --minutes 35 \
        --space benchmarks/tune_space.toml
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from common import add_quick, add_results, make_parser, markdown_table, parse_seeds, write_json

# rl-baselines3-zoo's benchmark table (DQN, tuned, mean return over its evaluation episodes).
ZOO_REFERENCE = {"Acrobot-v1": -76.6, "MountainCar-v0": -100.8, "CartPole-v1": 500.0}
ZOO_STEPS = {"Acrobot-v1": 100_000, "MountainCar-v0": 120_000, "CartPole-v1": 50_000}
FRESH_SEEDS = "100,101,102,103,104,105,106,107,108,109"
RESCORE_SEEDS = "50,51,52,53,54"
EVAL_EPISODES = 20


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--env", default="Acrobot-v1")
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per seed")
    parser.add_argument("--minutes", type=float, default=20.0, help="tuning budget")
    parser.add_argument("--trials", type=int, default=200, help="most trials within the budget")
    parser.add_argument("--tune-seeds", type=int, default=5, help="seeds per trial")
    parser.add_argument("--startup-trials", type=int, default=8)
    parser.add_argument("--rescore", type=int, default=3, help="best trials re-scored")
    parser.add_argument(
        "--rescore-seeds", type=parse_seeds, default=RESCORE_SEEDS, help="their seeds"
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seeds", type=parse_seeds, default=FRESH_SEEDS, help="fresh seeds")
    parser.add_argument("--study-dir", type=Path, default=Path("runs/tune_benchmark"))
    parser.add_argument(
        "--space", type=Path, default=None, help="space file (default: the default space)"
    )
    add_results(parser, "the JSON and the figure")
    add_quick(parser)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.minutes, args.trials, args.tune_seeds = 600, 1.0, 2, 2
        args.seeds, args.startup_trials = [100, 101], 1
        args.rescore, args.rescore_seeds = 2, [50, 51]

    import optuna

    from qlearn import DQNConfig
    from qlearn.stats import bootstrap_interval, iqm, probability_of_improvement
    from qlearn.tune import (
        STORAGE_FILE,
        STUDY_NAME,
        TuneSetup,
        config_toml,
        create_study,
        load_space,
        run_study,
        sample_config,
        train_seeds,
        trial_record,
        write_report,
    )

    name = args.env.split("-")[0].lower()
    folder = args.study_dir / name
    if folder.exists():
        shutil.rmtree(folder)
    setup = TuneSetup(
        env_id=args.env,
        base=DQNConfig(),
        space=load_space(args.space),
        steps=args.steps,
        seeds=tuple(range(args.tune_seeds)),
        trials=args.trials,
        startup_trials=args.startup_trials,
    )
    command = (
        f"qlearn tune {args.env} --trials {args.trials} --steps {args.steps} "
        f"--seeds {args.tune_seeds} --startup-trials {args.startup_trials} --jobs {args.jobs} "
        f"--timeout-minutes {args.minutes:g}"
    ) + (f" --space {args.space.as_posix()}" if args.space else "")
    create_study(folder, setup)
    t0 = time.perf_counter()
    run_study(folder, jobs=args.jobs, timeout_s=60.0 * args.minutes)
    tune_minutes = (time.perf_counter() - t0) / 60.0
    report = write_report(folder, header=f"Tuned by: {command}")
    if report.best_config is None:
        raise SystemExit("no trial completed within the budget")

    # Re-score the best trials on seeds no trial used; keep the best over both seed sets.
    t_rescore = time.perf_counter()
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{folder / STORAGE_FILE}")
    complete = [
        trial_record(t) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
    ]
    top = sorted(complete, key=lambda r: r.value, reverse=True)[: args.rescore]
    rescored = []
    for record in top:
        config = sample_config(
            optuna.trial.FixedTrial(record.params), setup.space, setup.trial_base()
        )
        more = train_seeds(args.env, config, args.rescore_seeds)
        assert more is not None and record.scores is not None
        both = [*record.scores, *more]
        rescored.append(
            {
                "trial": record.number,
                "tuning_iqm": record.value,
                "rescore_scores": more,
                "iqm_all_seeds": float(iqm(np.asarray(both))),
                "config": config,
            }
        )
        print(
            f"trial {record.number}: tuning IQM {record.value:.1f}, re-scored "
            f"{float(iqm(np.asarray(more))):.1f}, both {rescored[-1]['iqm_all_seeds']:.1f}",
            flush=True,
        )
    rescore_minutes = (time.perf_counter() - t_rescore) / 60.0
    chosen = max(rescored, key=lambda r: r["iqm_all_seeds"])
    tuned = chosen["config"].replace(eval_episodes=EVAL_EPISODES)
    default = DQNConfig(
        total_steps=args.steps, eval_interval=tuned.eval_interval, eval_episodes=EVAL_EPISODES
    )

    t1 = time.perf_counter()
    scores = {}
    for label, config in [("tuned", tuned), ("default", default)]:
        result = train_seeds(args.env, config, args.seeds)
        assert result is not None
        scores[label] = result
    retrain_minutes = (time.perf_counter() - t1) / 60.0
    intervals = {
        label: bootstrap_interval(np.asarray(s), statistic="iqm") for label, s in scores.items()
    }
    improvement = probability_of_improvement(
        np.asarray(scores["tuned"]), np.asarray(scores["default"])
    )
    overlap = not (
        intervals["tuned"].low > intervals["default"].high
        or intervals["default"].low > intervals["tuned"].high
    )
    record = {
        "env": args.env,
        "command": command,
        "steps_per_seed": args.steps,
        "tune_budget_minutes": args.minutes,
        "tune_wall_minutes": tune_minutes,
        "rescore_wall_minutes": rescore_minutes,
        "retrain_wall_minutes": retrain_minutes,
        "trials": {s: report.count(s) for s in ("complete", "pruned", "failed")},
        "tune_seeds": list(setup.seeds),
        "best_trial": report.best.number if report.best else None,
        "best_trial_iqm": report.best.value if report.best else None,
        "best_params": report.best.params if report.best else None,
        "rescore_seeds": args.rescore_seeds,
        "rescored": [{k: v for k, v in r.items() if k != "config"} for r in rescored],
        "chosen_trial": chosen["trial"],
        "tuned_config_toml": config_toml(tuned),
        "fresh_seeds": args.seeds,
        "eval_episodes": EVAL_EPISODES,
        "scores": scores,
        "iqm": {
            label: {"estimate": i.estimate, "low": i.low, "high": i.high}
            for label, i in intervals.items()
        },
        "intervals_overlap": overlap,
        "probability_of_improvement": {
            "estimate": improvement.estimate,
            "low": improvement.low,
            "high": improvement.high,
        },
        "zoo_reference": ZOO_REFERENCE.get(args.env),
        "zoo_steps": ZOO_STEPS.get(args.env),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    write_json(args.results / f"tune_{name}{suffix}.json", record)
    header = (
        f"{args.env}, tuned by benchmarks/tune.py: trial {chosen['trial']} of `{command}`, "
        f"re-scored on seeds {args.rescore_seeds}.\n"
        f"On fresh seeds {args.seeds}: IQM {intervals['tuned'].estimate:.1f} "
        f"[{intervals['tuned'].low:.1f}, {intervals['tuned'].high:.1f}] against the defaults' "
        f"{intervals['default'].estimate:.1f} [{intervals['default'].low:.1f}, "
        f"{intervals['default'].high:.1f}]."
    )
    keep = ("total_steps", "eval_interval", "eval_episodes")
    (args.results / f"tune_{name}{suffix}.toml").write_text(
        config_toml(tuned, header=header, keep=keep), encoding="utf-8"
    )
    draw(record, args.results / f"tune_{name}{suffix}.png")
    print(
        markdown_table(
            ["env", "config", "IQM [95% CI]", "seeds", "zoo"],
            [
                [
                    args.env,
                    label,
                    f"{i.estimate:.1f} [{i.low:.1f}, {i.high:.1f}]",
                    len(args.seeds),
                    ZOO_REFERENCE.get(args.env, "-"),
                ]
                for label, i in intervals.items()
            ],
        )
    )
    print(
        f"tuning {tune_minutes:.1f} min ({record['trials']}), re-scoring {rescore_minutes:.1f} "
        f"min, re-training {retrain_minutes:.1f} "
        f"min; P(tuned > default) = {improvement.estimate:.2f} "
        f"[{improvement.low:.2f}, {improvement.high:.2f}]; intervals overlap: {overlap}"
    )


def draw(record: dict, path: Path) -> None:
    """Each config's per-seed scores, its IQM and 95% interval, and the zoo's reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qlearn.checkpoint import atomic_output

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for x, label in enumerate(["default", "tuned"]):
        seeds = record["scores"][label]
        iqm = record["iqm"][label]
        ax.scatter(
            np.full(len(seeds), x) + np.linspace(-0.12, 0.12, len(seeds)),
            seeds,
            s=12,
            alpha=0.6,
            color="grey",
        )
        ax.errorbar(
            [x],
            [iqm["estimate"]],
            yerr=[[iqm["estimate"] - iqm["low"]], [iqm["high"] - iqm["estimate"]]],
            fmt="o",
            color="C0",
            capsize=6,
        )
    if record["zoo_reference"] is not None:
        steps = record.get("zoo_steps")
        label = f"zoo, tuned, {steps:,} steps" if steps else "zoo, tuned"
        ax.axhline(record["zoo_reference"], color="C1", linestyle="--", label=label)
        ax.legend(loc="best")
    ax.set_xticks([0, 1], ["default", "tuned"])
    ax.set_ylabel(f"held-out mean return ({record['eval_episodes']} episodes)")
    ax.set_title(
        f"{record['env']}, {record['steps_per_seed']} steps, {len(record['fresh_seeds'])} fresh "
        "seeds: IQM, 95% CI"
    )
    ax.title.set_fontsize(9)
    with atomic_output(path) as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
