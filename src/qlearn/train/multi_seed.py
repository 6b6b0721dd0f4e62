"""`MultiSeedDQN`: many independent DQN runs of one config, trained together in one process.

    from qlearn import DQNConfig, MultiSeedDQN
    runs = MultiSeedDQN("CartPole-v1", config, num_seeds=16, run_dir="runs/cartpole16")
    runs.learn()

Seed k of the batch (seed `config.seed + k`) is the run `DQN(env, config.replace(seed=seed))`
would make with one env: the same actions and, after any number of updates, the same weights
(`tests/train/test_multi_seed.py`). The seeds step their envs in lockstep, so every interval
(`train_interval`, `target_update_interval`, evaluations, checkpoints) falls due for all of them
at the same step, and the learner (`qlearn.agents.stacked`) does the work of all seeds at once.

On disk, the parent run dir holds the shared config, `multi_seed.json`, the periodic checkpoints
(one checkpoint holds every seed: weights, Adam, RNGs, replay memories, counters) and
`aggregate.json`; each seed has its own run dir `seed_<seed>/` (config, CSV logs, `best/`,
`final/`) that `qlearn eval`, `play` and `plot` read like any single run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from qlearn import __version__, checkpoint, schedules
from qlearn.agents.stacked import StackedLearner, make_stacked_learner, seed_config
from qlearn.checkpoint import BEST, FINAL, Counters, TrainingMeta
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec, env_spec, make_env, stacked_frame_count
from qlearn.errors import CheckpointError, ConfigError, TrainingError
from qlearn.evaluation import (
    MAX_EPISODE_STEPS,
    EvalResult,
    goal_of,
    held_out_eval_seed,
    periodic_eval_seed,
)
from qlearn.monitor import Monitor, ProgressOutput, progress_output
from qlearn.run_dirs import AGGREGATE, MULTI_SEED_INFO, seed_dir_name
from qlearn.schedules import num_crossings, per_beta
from qlearn.train.loop import FLOAT32_MAX, TRAIN_LOG_INTERVAL, TrainingInterrupted
from qlearn.train.process import StopFlag, training_settings
from qlearn.train.run_dir import KEEP_CHECKPOINTS, RUN_CONFIG, open_run_dir, write_run_files

SEED_PREFIX = "seed."  # checkpoint keys of seed index i start with f"seed.{i}."


@dataclasses.dataclass
class SeedCounters:
    """What one seed of a multi-seed run has done; saved in every checkpoint."""

    episodes: int = 0
    best_eval: float = -math.inf
    num_evals: int = 0
    solved_step: int | None = None
    """First step at which a periodic evaluation reached the env's reward threshold."""
    solved_time: float | None = None
    """Training wall time (all seeds together) at that evaluation, seconds."""
    last_eval: float = math.nan
    """Mean return of the latest periodic evaluation (NaN before the first)."""


@dataclasses.dataclass
class MultiCounters:
    step: int = 0
    target_step: int = 0
    wall_time: float = 0.0


class MultiSeedDQN:
    """`num_seeds` independent DQN runs of `config`, seeds `config.seed + k`, in one process.

    Args:
        env: an env id (each seed makes its own copies).
        config: the shared hyperparameters; `num_envs` must be 1 (one env per seed).
        num_seeds: how many seeds.
        seeds: the seeds themselves, instead of `config.seed + range(num_seeds)`.
        run_dir: the parent run dir; None keeps nothing on disk.
        progress: as `DQN`'s.
        env_kwargs: extra keyword arguments for `gymnasium.make`.
    """

    def __init__(
        self,
        env: str,
        config: DQNConfig | None = None,
        num_seeds: int = 1,
        *,
        seeds: Sequence[int] | None = None,
        run_dir: str | Path | None = None,
        progress: bool | ProgressOutput = False,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or DQNConfig()
        c = self.config
        if not isinstance(env, str):
            raise ConfigError(
                f"a multi-seed run needs an env id (each seed makes its own env), got "
                f"{type(env).__name__}"
            )
        if seeds is None:
            if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
                raise ConfigError(f"num_seeds = {num_seeds!r} is invalid; allowed: an integer >= 1")
            seeds = [c.seed + k for k in range(num_seeds)]
        if c.num_envs != 1:
            raise ConfigError(
                f"num_envs = {c.num_envs} with several seeds is not supported; allowed: "
                "num_envs = 1 (each seed steps its own env; the seeds are the batch)"
            )
        self.env_id = env
        self.env_kwargs = dict(env_kwargs or {})
        probe = make_env(env, frame_stack=c.frame_stack, **self.env_kwargs)
        self.spec: EnvSpec = env_spec(
            probe.observation_space,
            probe.action_space,
            repr(env),
            frame_stack=stacked_frame_count(probe),
        )
        self.reward_threshold = probe.spec.reward_threshold if probe.spec is not None else None
        probe.close()
        self.learner: StackedLearner = make_stacked_learner(self.spec, c, seeds)
        self.seeds = self.learner.seeds
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress_output(progress)
        self.counters = MultiCounters()
        self.seed_counters = [SeedCounters() for _ in self.seeds]
        self._eval_envs: list[gym.Env] | None = None

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    def seed_run_dir(self, k: int) -> Path | None:
        """Seed index k's run dir, or None without a parent run dir."""
        if self.run_dir is None:
            return None
        return self.run_dir / seed_dir_name(self.seeds[k])

    def _make_env(self) -> gym.Env:
        return make_env(self.env_id, frame_stack=self.config.frame_stack, **self.env_kwargs)

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self, num_episodes: int = 10, eval_seeds: Sequence[int] | None = None
    ) -> list[EvalResult]:
        """Greedy evaluation of every seed's current network, the seeds' envs stepped together.

        Seed k's episodes are those `run_episodes(env, predict, num_episodes, eval_seeds[k])`
        plays; by default the held-out episodes of each seed (`held_out_eval_seed`).
        """
        if eval_seeds is None:
            eval_seeds = [held_out_eval_seed(s) for s in self.seeds]
        if self._eval_envs is None:
            self._eval_envs = [self._make_env() for _ in self.seeds]
        return evaluate_together(self._eval_envs, self.learner, num_episodes, eval_seeds)

    # ------------------------------------------------------------------ learning
    def learn(
        self,
        steps: int | None = None,
        *,
        callback: Callable[[MultiSeedDQN, int], bool | None] | None = None,
    ) -> MultiSeedDQN:
        """Train every seed `steps` more env steps, or until `config.total_steps`.

        `callback(runs, step)` is called after each periodic evaluation (every seed's results
        are in `seed_counters`); returning False stops training there.
        """
        counters = self.counters
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ConfigError(f"steps = {steps!r} is invalid; allowed: an integer >= 1")
            counters.target_step = counters.step + steps
        elif counters.step >= counters.target_step:
            counters.target_step = self.config.total_steps
        if counters.step >= counters.target_step:
            return self
        if self.run_dir is not None:
            self._prepare_run_dirs()
        monitors = [
            Monitor(self.seed_run_dir(k), counters.target_step, initial_step=counters.step)
            for k in range(self.num_seeds)
        ]
        bar = Monitor(
            None, counters.target_step, progress=self.progress, initial_step=counters.step
        )
        envs = [self._make_env() for _ in self.seeds]
        run = _MultiRun(self, monitors, bar, callback)
        try:
            with training_settings(run.stop, self.config.torch_threads):
                run.loop(envs)
        finally:
            for env in envs:
                env.close()
            for m in [*monitors, bar]:
                m.close()
        if self.run_dir is not None:
            for k in range(self.num_seeds):
                self._save_seed(k, self.seed_run_dir(k) / FINAL)  # type: ignore[operator]
            periodic = self.config.checkpoint_interval or self.config.checkpoint_minutes
            if periodic and run.checkpoint_step != counters.step:
                self.save_checkpoint()
            self._write_aggregate()
        return self

    # ------------------------------------------------------------------ files
    def _prepare_run_dirs(self) -> None:
        assert self.run_dir is not None
        open_run_dir(self.run_dir, fresh=self.counters.step == 0)
        info = {
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "seeds": list(self.seeds),
            "reward_threshold": self.reward_threshold,
            "qlearn": __version__,
            "spec": self.spec.to_dict(),
        }
        checkpoint.atomic_write_text(self.run_dir / MULTI_SEED_INFO, json.dumps(info, indent=2))
        checkpoint.atomic_write_text(self.run_dir / RUN_CONFIG, self.config.to_toml())
        for k, seed in enumerate(self.seeds):
            seed_dir = self.seed_run_dir(k)
            assert seed_dir is not None
            seed_dir.mkdir(exist_ok=True)
            checkpoint.remove_temporaries(seed_dir)
            config = seed_config(self.config, seed)
            write_run_files(seed_dir, config, self.env_id, self.env_kwargs, self.spec)

    def _seed_meta(self, k: int) -> TrainingMeta:
        """Seed k's checkpoint meta, as a single run of seed k writes it (`DQN.load` reads it)."""
        sc = self.seed_counters[k]
        counters = Counters(
            step=self.counters.step,
            episodes=sc.episodes,
            target_step=self.counters.target_step,
            best_eval=sc.best_eval,
            num_evals=sc.num_evals,
            wall_time=self.counters.wall_time,
        )
        learner = {
            "num_updates": self.learner.seed_num_updates(k),
            "numpy_rng": self.learner.rngs[k].bit_generator.state,
        }
        config = seed_config(self.config, self.seeds[k])
        return TrainingMeta(config, self.spec, self.env_id, self.env_kwargs, counters, learner)

    def _checked_tensors(self, k: int) -> dict[str, torch.Tensor]:
        tensors = self.learner.seed_tensors(k)
        bad = [
            name
            for name, v in tensors.items()
            if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise TrainingError(
                f"training of seed {self.seeds[k]} diverged at step {self.counters.step}: "
                f"{', '.join(bad[:3])} hold NaN or inf; the last good checkpoint is kept "
                "(lower learning_rate or clip gradients)"
            )
        return tensors

    def _save_seed(self, k: int, path: Path) -> Path:
        """Seed k's model as a single-run checkpoint (no replay), which `DQN.load` reads."""
        return checkpoint.write_checkpoint(
            path, self._seed_meta(k).to_dict(), self._checked_tensors(k)
        )

    def save_checkpoint(self) -> Path:
        """One periodic checkpoint of every seed (with replay) under run_dir/checkpoints/."""
        if self.run_dir is None:
            raise ConfigError("save_checkpoint needs a run_dir")
        tensors: dict[str, torch.Tensor] = {}
        replay: dict[str, np.ndarray] = {}
        for k in range(self.num_seeds):
            prefix = f"{SEED_PREFIX}{k}."
            tensors.update((prefix + name, v) for name, v in self._checked_tensors(k).items())
            replay.update(
                (prefix + name, v) for name, v in self.learner.replays[k].state_dict().items()
            )
        meta = {
            "qlearn_version": __version__,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "env_spec": self.spec.to_dict(),
            "config": self.config.to_dict(),
            "multi_seed": {
                "seeds": list(self.seeds),
                "counters": dataclasses.asdict(self.counters),
                "seed_counters": [dataclasses.asdict(sc) for sc in self.seed_counters],
                "agents": [self._seed_meta(k).learner for k in range(self.num_seeds)],
            },
        }
        name = f"{checkpoint.CHECKPOINT_PREFIX}{self.counters.step:010d}"
        path = checkpoint.write_checkpoint(
            self.run_dir / "checkpoints" / name, meta, tensors, replay
        )
        checkpoint.prune_checkpoints(self.run_dir, keep=KEEP_CHECKPOINTS)
        return path

    @classmethod
    def resume(
        cls, run_dir: str | Path, *, progress: bool | ProgressOutput = False
    ) -> MultiSeedDQN:
        """Continue a multi-seed run from its newest complete checkpoint: every seed's weights,
        Adam state, RNGs, replay memory and counters. Envs start from a reset."""
        run_dir = Path(run_dir)
        if run_dir.is_dir():
            checkpoint.remove_temporaries(run_dir)
        latest = checkpoint.latest_checkpoint(run_dir)
        if latest is None:
            raise CheckpointError(
                f"multi-seed run {str(run_dir)!r} has no complete checkpoint to resume from"
            )
        meta, tensors, replay = checkpoint.read_checkpoint(latest, with_replay=True)
        try:
            config = DQNConfig.from_dict(meta["config"], source=f"checkpoint {str(latest)!r}")
            multi = meta["multi_seed"]
            seeds = [int(s) for s in multi["seeds"]]
            self = cls(
                meta["env_id"],
                config,
                seeds=seeds,
                run_dir=run_dir,
                progress=progress,
                env_kwargs=meta.get("env_kwargs") or {},
            )
            self.counters = MultiCounters(**multi["counters"])
            self.seed_counters = [SeedCounters(**sc) for sc in multi["seed_counters"]]
            for k in range(len(seeds)):
                prefix = f"{SEED_PREFIX}{k}."
                own = {n[len(prefix) :]: v for n, v in tensors.items() if n.startswith(prefix)}
                self.learner.load_seed_tensors(k, own)
                agent = multi["agents"][k]
                self.learner.set_seed_num_updates(k, int(agent["num_updates"]))
                self.learner.rngs[k].bit_generator.state = agent["numpy_rng"]
                assert replay is not None
                own_replay = {
                    n[len(prefix) :]: v for n, v in replay.items() if n.startswith(prefix)
                }
                self.learner.replays[k].load_state_dict(own_replay)
        except (KeyError, TypeError, ValueError, RuntimeError, AssertionError) as exc:
            raise CheckpointError(
                f"checkpoint {str(latest)!r} is not a readable multi-seed checkpoint: {exc}"
            ) from None
        for k, sc in enumerate(self.seed_counters):
            # A best model saved after the checkpoint sets the bar a later one must beat.
            best = run_dir / seed_dir_name(seeds[k]) / BEST
            with contextlib.suppress(CheckpointError, KeyError, TypeError, ValueError):
                score = float(checkpoint.read_meta(best)["counters"]["best_eval"])
                sc.best_eval = max(sc.best_eval, score)
        return self

    def _write_aggregate(self) -> None:
        """aggregate.json: each seed's best periodic evaluation and when it solved the task."""
        assert self.run_dir is not None
        rows = [
            {
                "seed": seed,
                "best_eval": sc.best_eval if math.isfinite(sc.best_eval) else None,
                "solved_step": sc.solved_step,
                "solved_time": sc.solved_time,
                "episodes": sc.episodes,
            }
            for seed, sc in zip(self.seeds, self.seed_counters, strict=True)
        ]
        data = {
            "env_id": self.env_id,
            "steps": self.counters.step,
            "wall_time": self.counters.wall_time,
            "reward_threshold": self.reward_threshold,
            "seeds": rows,
        }
        checkpoint.atomic_write_text(self.run_dir / AGGREGATE, json.dumps(data, indent=2))


class _MultiRun:
    """One `learn()` call of a multi-seed run: the lockstep env loop and what falls due."""

    def __init__(
        self,
        owner: MultiSeedDQN,
        monitors: list[Monitor],
        bar: Monitor,
        callback: Callable[[MultiSeedDQN, int], bool | None] | None,
    ) -> None:
        self.owner = owner
        self.callback = callback
        self.config = owner.config
        self.learner = owner.learner
        self.counters = owner.counters
        self.monitors = monitors
        self.bar = bar
        self.stop = StopFlag()
        self.total = owner.counters.target_step
        self.metrics: list[dict[str, float]] = [{} for _ in owner.seeds]
        self.recent: list[list[float]] = [[] for _ in owner.seeds]
        self.t_start = time.perf_counter()
        self.wall_before = owner.counters.wall_time
        self.eval_time = 0.0
        self.last_log = (owner.counters.step, self.t_start)
        self.checkpoint_began = time.monotonic()
        self.checkpoint_cost = 0.0
        self.checkpoint_due = False
        self.checkpoint_step: int | None = None
        self.checkpoint_path: Path | None = None
        self.check_finite = owner.spec.obs_dtype != "uint8"

    def _wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start - self.eval_time

    def loop(self, envs: list[gym.Env]) -> None:
        """Step every seed's env once per iteration, as `DQN`'s single-env driver does."""
        c, learner, counters = self.config, self.learner, self.counters
        owner = self.owner
        num = owner.num_seeds
        replays = learner.replays
        first = [
            env.reset(seed=seed + counters.step)[0]
            for env, seed in zip(envs, owner.seeds, strict=True)
        ]
        obs = np.stack([np.asarray(o) for o in first])
        for r in replays:
            r.reset_pending()
        ep_return = np.zeros(num)
        ep_length = np.zeros(num, dtype=np.int64)
        clip = c.clip_rewards
        while counters.step < self.total:
            epsilon = schedules.epsilon(c, counters.step)
            actions = learner.act(obs, epsilon)
            step = counters.step + 1
            next_obs_all = obs.copy()
            for k, env in enumerate(envs):
                action = int(actions[k])
                next_obs, reward, terminated, truncated, _ = env.step(action)
                if self.check_finite and not (
                    abs(reward) <= FLOAT32_MAX and np.isfinite(next_obs).all()
                ):
                    raise TrainingError(
                        f"env {owner.env_id!r} (seed {owner.seeds[k]}) returned a non-finite "
                        f"observation or reward at step {step}"
                    )
                stored = min(max(reward, -1.0), 1.0) if clip else reward
                replays[k].add_one(obs[k], action, stored, next_obs, terminated, truncated)
                ep_return[k] += float(reward)
                ep_length[k] += 1
                if terminated or truncated:
                    self._episode(k, step, float(ep_return[k]), int(ep_length[k]), epsilon)
                    ep_return[k], ep_length[k] = 0.0, 0
                    next_obs, _ = env.reset()
                next_obs_all[k] = next_obs
            obs = next_obs_all
            if self._after_step(step - 1, step, epsilon):
                return

    def _episode(self, k: int, step: int, ret: float, length: int, epsilon: float) -> None:
        sc = self.owner.seed_counters[k]
        sc.episodes += 1
        self.recent[k].append(ret)
        del self.recent[k][:-20]
        self.monitors[k].episode(step, sc.episodes, ret, length, epsilon=epsilon)

    def _after_step(self, before: int, step: int, epsilon: float) -> bool:
        c, learner, counters = self.config, self.learner, self.counters
        counters.step = step
        if step >= c.learning_starts:
            num_updates = num_crossings(before, step, c.train_interval) * c.gradient_steps
            if num_updates:
                beta = per_beta(c, step) if c.prioritized else 1.0
                metrics = learner.update(num_updates, beta)
                self.metrics = [m or old for m, old in zip(metrics, self.metrics, strict=True)]
            if num_crossings(before, step, c.target_update_interval):
                learner.sync_target()
        log = num_crossings(before, step, TRAIN_LOG_INTERVAL) or step >= self.total
        evaluate = c.eval_interval and (
            num_crossings(before, step, c.eval_interval) or step >= self.total
        )
        if not (log or evaluate or self._periodic_due(before, step) or self.stop.signal):
            return False
        counters.wall_time = self._wall_time()
        if log:
            self._log(step, epsilon)
        if evaluate:
            t_eval = time.perf_counter()
            self._evaluate(step)
            self.eval_time += time.perf_counter() - t_eval
            if self.callback is not None and self.callback(self.owner, step) is False:
                return True
        if self.owner.run_dir is not None and self._checkpoint_now():
            self._checkpoint()
        if self.stop.signal is not None:
            where = None
            if self.owner.run_dir is not None:
                where = self.checkpoint_path if self.checkpoint_step == step else self._checkpoint()
            name = signal.Signals(self.stop.signal).name
            saved = f"; checkpoint saved to {where}" if where else ""
            raise TrainingInterrupted(f"{name} at step {step}{saved}")
        return False

    def _periodic_due(self, before: int, step: int) -> bool:
        c = self.config
        if c.checkpoint_interval and num_crossings(before, step, c.checkpoint_interval):
            self.checkpoint_due = True
        if (
            c.checkpoint_minutes
            and time.monotonic() - self.checkpoint_began >= 60 * c.checkpoint_minutes
        ):
            self.checkpoint_due = True
        return self.checkpoint_due

    def _checkpoint_now(self) -> bool:
        cap = self.config.checkpoint_max_overhead
        since = time.monotonic() - self.checkpoint_began
        return self.checkpoint_due and (cap is None or self.checkpoint_cost <= cap * since)

    def _checkpoint(self) -> Path:
        began = time.monotonic()
        path = self.owner.save_checkpoint()
        self.checkpoint_began, self.checkpoint_cost = began, time.monotonic() - began
        self.checkpoint_due = False
        self.checkpoint_step, self.checkpoint_path = self.counters.step, path
        return path

    def _evaluate(self, step: int) -> None:
        owner, c = self.owner, self.config
        t0 = time.perf_counter()
        eval_seeds = [
            periodic_eval_seed(seed, sc.num_evals)
            for seed, sc in zip(owner.seeds, owner.seed_counters, strict=True)
        ]
        results = owner.evaluate(c.eval_episodes, eval_seeds)
        eval_time = (time.perf_counter() - t0) / owner.num_seeds
        threshold = owner.reward_threshold
        for k, (result, sc) in enumerate(zip(results, owner.seed_counters, strict=True)):
            sc.num_evals += 1
            sc.last_eval = result.mean_return
            summary = {
                **result.summary(),
                "eval_time_s": eval_time,
                "train_time_s": self.counters.wall_time,
            }
            self.monitors[k].evaluation(step, summary)
            if threshold is not None and sc.solved_step is None and result.mean_return >= threshold:
                sc.solved_step, sc.solved_time = step, self.counters.wall_time
            if result.mean_return > sc.best_eval:
                sc.best_eval = result.mean_return
                seed_dir = owner.seed_run_dir(k)
                if seed_dir is not None:
                    owner._save_seed(k, seed_dir / BEST)

    def _log(self, step: int, epsilon: float) -> None:
        last_step, last_time = self.last_log
        now = time.perf_counter()
        sps = (step - last_step) / max(now - last_time, 1e-9)
        self.last_log = (step, now)
        means = []
        for k, monitor in enumerate(self.monitors):
            recent = self.recent[k]
            mean_return = float(np.mean(recent)) if recent else math.nan
            means.append(mean_return)
            row = {
                "epsilon": epsilon,
                "steps_per_s": sps,
                "episodes": self.owner.seed_counters[k].episodes,
                "mean_return_20": mean_return,
                **self.metrics[k],
            }
            monitor.scalars(step, row)
        finite = [m for m in means if math.isfinite(m)]
        median = float(np.median(finite)) if finite else math.nan
        self.bar.progress(step, {"median return (last 20)": median, "epsilon": epsilon})


def evaluate_together(
    envs: Sequence[gym.Env],
    learner: StackedLearner,
    num_episodes: int,
    eval_seeds: Sequence[int],
) -> list[EvalResult]:
    """Greedy episodes of every seed, one env per seed, the Q-values of all in one pass.

    Env k plays what `run_episodes(envs[k], greedy policy of seed k, num_episodes,
    eval_seeds[k])` plays: the first reset seeded, then unseeded resets, each episode cut at
    MAX_EPISODE_STEPS.
    """
    num = len(envs)
    returns = np.zeros((num, num_episodes))
    lengths = np.zeros((num, num_episodes), dtype=np.int64)
    goals = [goal_of(env) for env in envs]
    successes = np.zeros((num, num_episodes), dtype=bool)
    episode = np.zeros(num, dtype=np.int64)
    steps = np.zeros(num, dtype=np.int64)
    obs = np.stack(
        [np.asarray(env.reset(seed=int(s))[0]) for env, s in zip(envs, eval_seeds, strict=True)]
    )
    active = np.ones(num, dtype=bool)
    while active.any():
        actions = learner.q_values(obs[:, None])[:, 0].argmax(axis=1)
        for k in np.flatnonzero(active):
            env = envs[k]
            o, reward, terminated, truncated, _ = env.step(int(actions[k]))
            e = episode[k]
            returns[k, e] += float(reward)
            steps[k] += 1
            obs[k] = o
            if terminated or truncated or steps[k] >= MAX_EPISODE_STEPS:
                lengths[k, e] = steps[k]
                goal = goals[k]
                if goal is not None:
                    successes[k, e] = goal.reached(env.unwrapped, bool(terminated))
                episode[k] += 1
                steps[k] = 0
                if episode[k] == num_episodes:
                    active[k] = False
                else:
                    obs[k] = np.asarray(env.reset()[0])
    results = []
    for k, goal in enumerate(goals):
        if goal is None:
            results.append(EvalResult(returns[k], lengths[k]))
        else:
            results.append(EvalResult(returns[k], lengths[k], successes[k], goal.description))
    return results
