"""`ApeX`: the driver that runs actors, replay shards and the learner, and keeps the run folder.

The learner lives in the driver process: it is the DQN learner of a `qlearn.DQN`, so its run
folder (config.toml, run.json, CSV logs, best/ and final/ models, periodic checkpoints) is the
one a single-process run writes, and `qlearn eval/play/plot` read it unchanged. Checkpoints
also hold every shard's replay (keys `shard<k>.replay.*`) and the distributed settings.

The loop, in order, each round:
1. Blocks that actors finished go to a shard (round robin) as object references: the data
   moves from actor to shard without passing through the driver; the small reports (steps,
   finished episodes) come to the driver, which counts steps and logs episodes.
2. The learner follows a single-process run's schedule on the env-step clock the actors drive:
   at each multiple of `train_interval` from `learning_starts` on, `gradient_steps` updates;
   after them, a target sync when a multiple of `target_update_interval` was crossed. So the
   replay ratio and the target period are those of a single-process run with the same config.
   Batches are requested `prefetch` ahead from the shards; new priorities go back without
   waiting. Actors whose block arrives while the learner owes more than `max_update_lag`
   updates wait for it.
3. Every `broadcast_interval` updates, the weights go out as one object (`ray.put`) that every
   actor reads.
4. Logs, evaluation, best model and periodic checkpoints when their step intervals are crossed.

Faults: an actor that dies is restarted by Ray (`max_actor_restarts`) and gets the latest
weights again; its lost block is simply not counted. A dead shard or a failing learner stops the
run with TrainingError naming the newest checkpoint, which `qlearn train --resume` continues.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qlearn import checkpoint, schedules
from qlearn.checkpoint import FINAL
from qlearn.config import DQNConfig
from qlearn.distributed.backend import ActorFailure, LocalBackend, RayBackend
from qlearn.distributed.config import DistributedConfig
from qlearn.distributed.parts import (
    Actor,
    ActorReport,
    ReplayShard,
    ape_x_epsilons,
    network_weights,
    train_on_batch,
)
from qlearn.errors import CheckpointError, ConfigError, TrainingError
from qlearn.monitor import Monitor, ProgressOutput
from qlearn.train.dqn import DQN
from qlearn.train.loop import TRAIN_LOG_INTERVAL, TrainingInterrupted
from qlearn.train.process import StopFlag, training_settings
from qlearn.train.run_dir import KEEP_CHECKPOINTS, checkpoint_to_resume, keep_best_eval

DISTRIBUTED_CONFIG = "distributed.toml"
"""Written in a distributed run's folder: it marks the run as one, for `--resume`."""
UPDATES_PER_POLL = 16
"""Updates the learner does before looking for finished blocks again."""
RETRY_SECONDS = 0.5
"""How long an actor whose call failed waits before it is given work again (while Ray
restarts its process)."""
MAX_FAILED_CALLS = 120
"""Failed calls in a row (a minute of retries) after which an actor counts as gone for good."""
Backend = LocalBackend | RayBackend


def is_distributed_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a distributed (Ape-X) run, which `ApeX.resume` continues."""
    return (Path(run_dir) / DISTRIBUTED_CONFIG).is_file()


def learner_clock(config: DQNConfig, num_updates: int, step: int) -> int:
    """The env step up to which a learner that has done `num_updates` updates has followed the
    single-process schedule (used when a run resumes)."""
    c = config
    if num_updates > 0:
        first = (max(c.learning_starts, 1) - 1) // c.train_interval
        return (num_updates // c.gradient_steps + first) * c.train_interval
    return max(0, min(step, c.learning_starts - 1))


def updates_due(config: DQNConfig, step: int) -> int:
    """Updates a single-process run has done by env step `step`: `gradient_steps` at each
    multiple of `train_interval` in [max(learning_starts, 1), step]."""
    c = config
    if step < c.learning_starts:
        return 0
    first = (max(c.learning_starts, 1) - 1) // c.train_interval  # multiples before the start
    return (step // c.train_interval - first) * c.gradient_steps


class ApeX:
    """Distributed DQN: `num_actors` actors, `num_shards` replay shards and one learner.

    Args:
        env: a Gymnasium env id (each actor makes its own envs from it).
        config: the algorithm, as for a single-process run; `prioritized = true` gives Ape-X's
            prioritized replay with priorities computed by the actors.
        distributed: how the work is split (actors, shards, blocks, broadcasts).
        run_dir: the run folder, as for `DQN`; None keeps nothing on disk.
        progress: as for `DQN`.
        backend: `ray` (actors and shards in their own processes) or `local` (the same classes
            called in this process, one after another: for tests and for reading).
        ray_address: a Ray cluster to join; None starts a local one on 127.0.0.1.
    """

    def __init__(
        self,
        env: str,
        config: DQNConfig | None = None,
        distributed: DistributedConfig | None = None,
        *,
        run_dir: str | Path | None = None,
        progress: bool | ProgressOutput = False,
        backend: str = "ray",
        ray_address: str | None = None,
    ) -> None:
        if not isinstance(env, str):
            raise ConfigError(
                f"distributed training needs an env id (each actor makes its own envs), "
                f"got {type(env).__name__}"
            )
        if backend not in ("ray", "local"):
            raise ConfigError(f"backend = {backend!r} is invalid; allowed: 'ray', 'local'")
        agent = DQN(env, config, run_dir=run_dir, progress=progress, lazy_replay=True)
        self._init(agent, distributed or DistributedConfig(), backend, ray_address)

    def _init(
        self, agent: DQN, distributed: DistributedConfig, backend: str, ray_address: str | None
    ) -> None:
        self.agent = agent
        self.distributed = distributed
        self.backend_name = backend
        self.ray_address = ray_address
        self._replay_state: list[dict[str, np.ndarray]] | None = None
        self.actors: list[Any] = []
        self.shards: list[Any] = []
        self.backend: Backend | None = None
        self.actor_restarts = 0
        self.last_checkpoint: Path | None = None
        self.weights_version = -1
        self._weights_ref: Any = None

    # ------------------------------------------------------------------ the user's view
    @property
    def config(self) -> DQNConfig:
        return self.agent.config

    @property
    def counters(self) -> Any:
        return self.agent.counters

    @property
    def run_dir(self) -> Path | None:
        return self.agent.run_dir

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        *,
        progress: bool | ProgressOutput = False,
        backend: str = "ray",
        ray_address: str | None = None,
    ) -> ApeX:
        """Continue a distributed run from its newest checkpoint: learner, counters and every
        shard's replay. Actors start new episodes, as a resumed single-process run does."""
        run_dir = Path(run_dir)
        latest = checkpoint_to_resume(run_dir)
        meta = checkpoint.read_meta(latest)
        if "distributed" not in meta:
            raise CheckpointError(
                f"checkpoint {str(latest)!r} is not from a distributed run; resume it without "
                "--distributed"
            )
        dist = DistributedConfig.from_dict(meta["distributed"], source=f"checkpoint {latest}")
        agent = DQN.load(latest, run_dir=run_dir, progress=progress)
        _, replay = checkpoint.read_tensors(latest, meta, with_replay=True)
        if backend not in ("ray", "local"):
            raise ConfigError(f"backend = {backend!r} is invalid; allowed: 'ray', 'local'")
        self = cls.__new__(cls)
        self._init(agent, dist, backend, ray_address)
        keep_best_eval(agent.counters, run_dir)
        shards: list[dict[str, np.ndarray]] = [{} for _ in range(dist.num_shards)]
        for key, value in (replay or {}).items():
            prefix, _, rest = key.partition(".")
            index = int(prefix.removeprefix("shard"))
            shards[index][rest] = value
        self._replay_state = shards
        self.last_checkpoint = latest
        return self

    # ------------------------------------------------------------------ setup
    def _make_backend(self) -> Backend:
        d = self.distributed
        if self.backend_name == "local":
            return LocalBackend()
        wanted = math.ceil((d.num_actors + d.num_shards) * d.actor_num_cpus)
        return RayBackend(self.ray_address, max(os.cpu_count() or 1, wanted), d.actor_num_cpus)

    def _start(self, backend: Backend) -> None:
        """Make the shards (loading a resumed run's replay) and the actors."""
        c, d, agent = self.config, self.distributed, self.agent
        assert agent.env_id is not None
        self.shards = [
            backend.spawn(
                ReplayShard, (c, agent.spec, d.num_shards, c.seed + 1 + k), restarts=0, name=""
            )
            for k in range(d.num_shards)
        ]
        if self._replay_state is not None:
            loads = [
                backend.call(shard, "load_state_dict", state)
                for shard, state in zip(self.shards, self._replay_state, strict=True)
            ]
            for k, ref in enumerate(loads):
                self.shard_get(k, ref)
            self._replay_state = None
        epsilons = ape_x_epsilons(d.num_actors, d.epsilon_base, d.epsilon_alpha)
        step = self.counters.step
        self.actors = [
            backend.spawn(
                Actor,
                (
                    agent.env_id,
                    agent.spec,
                    c,
                    i,
                    float(epsilons[i]),
                    d.block_size,
                    c.seed + 10_000 * (i + 1) + step,
                ),
                restarts=d.max_actor_restarts,
                name="",
            )
            for i in range(d.num_actors)
        ]

    def _broadcast(self, backend: Backend) -> None:
        """Send the learner's weights to every actor as ONE object in the object store."""
        self.weights_version += 1
        self._weights_ref = backend.put(network_weights(self.agent.learner))
        for actor in self.actors:
            backend.call(actor, "set_weights", self._weights_ref, self.weights_version)

    # ------------------------------------------------------------------ training
    def learn(
        self,
        steps: int | None = None,
        *,
        callback: Callable[[DQN, dict[str, float]], bool | None] | None = None,
    ) -> DQN:
        """Train `steps` more env steps (summed over actors), or until the run's planned total;
        returns the trained `DQN` (its learner, counters and run folder).

        `callback(agent, metrics)` is called after each evaluation; returning False stops.
        """
        c, agent = self.config, self.agent
        if not agent.set_target_step(steps):
            return agent
        if self.run_dir is not None:
            agent.prepare_run_dir()
            checkpoint.atomic_write_text(
                self.run_dir / DISTRIBUTED_CONFIG, self.distributed.to_toml()
            )
        monitor = agent.make_monitor()
        # The backend first: ray.init installs signal handlers of its own, which `stop`
        # replaces while training runs.
        backend = self.backend = self._make_backend()
        stop = StopFlag()
        try:
            with training_settings(stop, c.torch_threads):
                self._start(backend)
                stopped_early = _Loop(self, backend, monitor, callback, stop).run()
                if self.run_dir is not None and not stopped_early:
                    agent.save(self.run_dir / FINAL)
                    if c.checkpoint_interval or c.checkpoint_minutes:
                        self.save_checkpoint()
        finally:
            monitor.close()
            for handle in [*self.actors, *self.shards]:
                with contextlib.suppress(Exception):  # a handle already gone needs no kill
                    backend.kill(handle)
            self.actors, self.shards = [], []
            backend.shutdown()
            self.backend = None
        return agent

    def save_checkpoint(self) -> Path:
        """A periodic checkpoint: the learner as `DQN.save` writes it, plus every shard's
        replay and the distributed settings, under run_dir/checkpoints/."""
        if self.run_dir is None or self.backend is None:
            raise ConfigError("save_checkpoint needs a run_dir and a running backend")
        backend = self.backend
        refs = [backend.call(shard, "state_dict") for shard in self.shards]
        replay = {}
        for k, ref in enumerate(refs):
            replay.update({f"shard{k}.{key}": v for key, v in self.shard_get(k, ref).items()})
        meta = {**self.agent.meta().to_dict(), "distributed": self.distributed.to_dict()}
        name = f"{checkpoint.CHECKPOINT_PREFIX}{self.counters.step:010d}"
        path = checkpoint.write_checkpoint(
            self.run_dir / "checkpoints" / name, meta, self.agent.learner.tensors(), replay
        )
        checkpoint.prune_checkpoints(self.run_dir, keep=KEEP_CHECKPOINTS)
        self.last_checkpoint = path
        return path

    def shard_get(self, k: int, ref: Any) -> Any:
        """The result of a call to shard k; TrainingError, naming the checkpoint to resume
        from, when the shard died (its transitions are gone, so the run cannot go on)."""
        assert self.backend is not None
        try:
            return self.backend.get(ref)
        except ActorFailure as exc:
            raise TrainingError(
                f"replay shard {k} died at step {self.counters.step} ({exc}); the run stopped, "
                f"as its transitions are gone; {self.resume_hint()}"
            ) from None

    def resume_hint(self) -> str:
        """Where a stopped run can continue from, for error messages."""
        if self.run_dir is None:
            return "no run_dir was given, so there is no checkpoint to continue from"
        latest = checkpoint.latest_checkpoint(self.run_dir)
        if latest is None:
            return "it had written no checkpoint yet; train it again"
        return f"continue from {latest} with: qlearn train --resume {self.run_dir}"


class _Loop:
    """One `learn()` call of the driver: the state of the loop described in the module doc."""

    def __init__(
        self,
        owner: ApeX,
        backend: Backend,
        monitor: Monitor,
        callback: Callable[[DQN, dict[str, float]], bool | None] | None,
        stop: StopFlag,
    ) -> None:
        self.owner = owner
        self.stop = stop
        self.backend = backend
        self.monitor = monitor
        self.evaluate = owner.agent.eval_hook(monitor, callback)
        """A periodic evaluation (keeping the best model), then the callback; True stops."""
        self.config = owner.config
        self.dist = owner.distributed
        self.agent = owner.agent
        self.learner = owner.agent.learner
        self.counters = owner.agent.counters
        self.clock = learner_clock(self.config, self.learner.num_updates, self.counters.step)
        """The env step up to which the learner has done the single-process schedule's work."""
        self.inflight: dict[Any, tuple[int, Any]] = {}  # report ref -> (actor, block ref)
        self.paused: list[int] = []
        self.failed_calls = [0] * self.dist.num_actors  # in a row, per actor
        self.pids: list[int | None] = [None] * self.dist.num_actors
        self.retry_at: dict[int, float] = {}  # actor -> when to give it work again
        self.samples: collections.deque[tuple[int, Any]] = collections.deque()
        self.adds: collections.deque[tuple[int, Any]] = collections.deque()
        self.next_add_shard = 0
        self.next_sample_shard = 0
        # The CSV's columns are fixed by its first row: these come before any update.
        self.metrics: dict[str, float] = {"loss": math.nan, "q_mean": math.nan}
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=20)
        self.t_start = time.perf_counter()
        self.wall_before = self.counters.wall_time
        self.eval_time = 0.0
        self.last_log = (self.counters.step, self.t_start, self.learner.num_updates)
        self.last_checkpoint_time = time.monotonic()

    # ------------------------------------------------------------------ actors
    def _collect(self, i: int) -> None:
        block, report = self.backend.call(self.owner.actors[i], "collect", num_returns=2)
        self.inflight[report] = (i, block)

    def _restart(self, i: int, failure: ActorFailure) -> None:
        """A call to actor i failed: Ray is restarting it (up to `max_actor_restarts` times).
        It is given the current weights and work again after RETRY_SECONDS; an actor that fails
        every call for MAX_FAILED_CALLS tries in a row (Ray has given up on it) stops the run."""
        self.failed_calls[i] += 1
        if self.failed_calls[i] > MAX_FAILED_CALLS:
            raise TrainingError(
                f"actor {i} failed {MAX_FAILED_CALLS} calls in a row, after "
                f"{self.owner.actor_restarts} restarts of all actors (max_actor_restarts = "
                f"{self.dist.max_actor_restarts} each): {failure}; {self.owner.resume_hint()}"
            )
        self.retry_at[i] = time.monotonic() + RETRY_SECONDS

    def _retry(self) -> None:
        """Put actors whose restart wait is over back to work, with the current weights."""
        now = time.monotonic()
        for i in [i for i, t in self.retry_at.items() if t <= now]:
            del self.retry_at[i]
            if self.owner._weights_ref is not None:
                self.backend.call(
                    self.owner.actors[i],
                    "set_weights",
                    self.owner._weights_ref,
                    self.owner.weights_version,
                )
            self._collect(i)

    def _receive(self, timeout: float) -> int:
        """Route finished blocks to shards; returns the env steps they brought."""
        ready = self.backend.wait(list(self.inflight), timeout)
        new_steps = 0
        for ref in ready:
            i, block = self.inflight.pop(ref)
            try:
                report: ActorReport = self.backend.get(ref)
            except ActorFailure as exc:
                self._restart(i, exc)
                continue
            self.failed_calls[i] = 0
            if self.pids[i] is not None and report.pid != self.pids[i]:
                self.owner.actor_restarts += 1  # a new process answers for actor i
            self.pids[i] = report.pid
            k = self.next_add_shard
            self.next_add_shard = (k + 1) % len(self.owner.shards)
            self.adds.append((k, self.backend.call(self.owner.shards[k], "add", block)))
            new_steps += report.num_steps
            step = self.counters.step + new_steps
            for ret, length in zip(report.episode_returns, report.episode_lengths, strict=True):
                self.counters.episodes += 1
                self.recent_returns.append(ret)
                self.monitor.episode(
                    step, self.counters.episodes, ret, length, epsilon=report.epsilon
                )
            self.paused.append(i)
        return new_steps

    def _check_adds(self) -> None:
        """Collect the shards' answers to `add`: a dead shard shows up here."""
        done = set(map(id, self.backend.wait([ref for _, ref in self.adds], 0)))
        keep: collections.deque[tuple[int, Any]] = collections.deque()
        for k, ref in self.adds:
            if id(ref) in done:
                self._shard_get(k, ref)
            else:
                keep.append((k, ref))
        self.adds = keep

    def _shard_get(self, k: int, ref: Any) -> Any:
        return self.owner.shard_get(k, ref)

    # ------------------------------------------------------------------ learner
    def _next_batch(self, beta: float) -> tuple[int, Any]:
        shards = self.owner.shards
        while len(self.samples) < self.dist.prefetch:
            k = self.next_sample_shard
            self.next_sample_shard = (k + 1) % len(shards)
            ref = self.backend.call(shards[k], "sample", self.config.batch_size, beta)
            self.samples.append((k, ref))
        k, ref = self.samples.popleft()
        return k, self._shard_get(k, ref)

    def _update(self, budget: int) -> None:
        """Follow the schedule from `clock` toward the current step, a `train_interval` at a
        time, until about `budget` updates are done."""
        c = self.config
        done = 0
        while done < budget:
            after = (self.clock // c.train_interval + 1) * c.train_interval
            if after > self.counters.step:
                return
            before, self.clock = self.clock, after
            if after < c.learning_starts:
                continue
            done += self._gradient_steps(c.gradient_steps)
            if schedules.num_crossings(before, after, c.target_update_interval):
                self.learner.sync_target()

    def _gradient_steps(self, num: int) -> int:
        learner = self.learner
        beta = self._beta()
        for _ in range(num):
            k, batch = self._next_batch(beta)
            if batch is None:  # that shard holds nothing yet
                continue
            before = learner.num_updates
            try:
                metrics, td = train_on_batch(learner, batch)
            except Exception as exc:
                raise TrainingError(
                    f"the learner failed at step {self.counters.step} ({exc}); "
                    f"{self.owner.resume_hint()}"
                ) from exc
            self.metrics = metrics or self.metrics
            if td is not None:
                self.backend.call(self.owner.shards[k], "update_priorities", batch.indices, td)
            interval = self.dist.broadcast_interval
            if (
                self.owner.weights_version < 0
                or learner.num_updates // interval != before // interval
            ):
                self.owner._broadcast(self.backend)
        return num

    def _beta(self) -> float:
        c = self.config
        return schedules.per_beta(c, self.counters.step) if c.prioritized else 1.0

    # ------------------------------------------------------------------ the loop
    def run(self) -> bool:
        """Train to the target step; True when a callback stopped it early."""
        c, d, counters = self.config, self.dist, self.counters
        total = counters.target_step
        if self.learner.num_updates > 0:  # a resumed run: actors act with the learned weights
            self.owner._broadcast(self.backend)
        for i in range(d.num_actors):
            self._collect(i)
        while counters.step < total:
            owed = updates_due(c, counters.step) - self.learner.num_updates
            before = counters.step
            self._retry()
            if self.inflight:
                wait = 0.0 if owed > 0 else (RETRY_SECONDS if self.retry_at else 1.0)
                counters.step += self._receive(wait)
            elif self.retry_at and owed <= 0:
                time.sleep(RETRY_SECONDS / 5)  # every actor is restarting
            self._check_adds()
            # At the end, the learner catches up: the final weights have had every update a
            # single-process run makes by this step.
            self._update(UPDATES_PER_POLL if counters.step < total else 2**62)
            if self._after_steps(before, counters.step):
                return True
            if self.stop.signal is not None:
                self._interrupted()
            if updates_due(c, counters.step) - self.learner.num_updates <= d.max_update_lag:
                for i in self.paused:
                    self._collect(i)
                self.paused = []
        return False

    def _interrupted(self) -> None:
        """SIGINT/SIGTERM arrived: a checkpoint to continue from, while the shards still
        answer, then TrainingInterrupted."""
        assert self.stop.signal is not None
        where = self.owner.save_checkpoint() if self.agent.run_dir is not None else None
        saved = f"; checkpoint saved to {where}" if where else ""
        name = signal.Signals(self.stop.signal).name
        raise TrainingInterrupted(f"{name} at step {self.counters.step}{saved}")

    def _after_steps(self, before: int, step: int) -> bool:
        """Logs, evaluation, best model and checkpoints due in (before, step]."""
        c, counters, agent = self.config, self.counters, self.agent
        if step == before:
            return False
        end = step >= counters.target_step
        counters.wall_time = self.wall_before + time.perf_counter() - self.t_start - self.eval_time
        if schedules.num_crossings(before, step, TRAIN_LOG_INTERVAL) or end:
            self._log(step)
        if c.eval_interval and (schedules.num_crossings(before, step, c.eval_interval) or end):
            t0 = time.perf_counter()
            stop_now = self.evaluate(step)
            self.eval_time += time.perf_counter() - t0  # not training time
            if stop_now:
                return True
        if agent.run_dir is not None and not end:
            due = c.checkpoint_interval and schedules.num_crossings(
                before, step, c.checkpoint_interval
            )
            late = c.checkpoint_minutes and (
                time.monotonic() - self.last_checkpoint_time >= 60.0 * c.checkpoint_minutes
            )
            if due or late:
                self.owner.save_checkpoint()
                self.last_checkpoint_time = time.monotonic()
        return False

    def _log(self, step: int) -> None:
        last_step, last_time, last_updates = self.last_log
        now = time.perf_counter()
        elapsed = max(now - last_time, 1e-9)
        updates = self.learner.num_updates
        self.last_log = (step, now, updates)
        mean_return = float(np.mean(self.recent_returns)) if self.recent_returns else math.nan
        row = {
            "steps_per_s": (step - last_step) / elapsed,
            "updates_per_s": (updates - last_updates) / elapsed,
            "num_updates": updates,
            "episodes": self.counters.episodes,
            "mean_return_20": mean_return,
            "actor_restarts": self.owner.actor_restarts,
            **self.metrics,
        }
        self.monitor.scalars(step, row)
        loss = self.metrics.get("loss", math.nan)
        self.monitor.progress(
            step, {"return (last 20)": mean_return, "updates": updates, "loss": loss}
        )
