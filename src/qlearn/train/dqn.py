"""`DQN`: the user-facing agent. It wires env, learner, replay, logs, evaluation and checkpoints.

    from qlearn import DQN, DQNConfig
    agent = DQN("CartPole-v1", DQNConfig(total_steps=50_000))
    agent.learn()                   # until step 50,000, the run's planned total
    agent.learn(10_000)             # 10,000 more steps
    agent.evaluate(20).mean_return  # on held-out episodes
    agent.save("cartpole")
    agent = DQN.load("cartpole")

Counting: `step` counts real transitions (env steps that produced a stored transition) summed
over the vector env's copies. Every interval (`train_interval`, `target_update_interval`,
`eval_interval`, `checkpoint_interval`) is in those steps, so the replay ratio does not change
with `num_envs`. The schedules (epsilon, PER beta) run over `config.total_steps`, the run's
planned total, so splitting training into several `learn(n)` calls changes none of them.

Periodic checkpoints (on by default, so `--resume` has something to continue after a crash)
fall due every `checkpoint_interval` steps or `checkpoint_minutes` of wall-clock time, and wait
while writing them would take more than `checkpoint_max_overhead` of the time. They read the
clock and the RNG states but never draw from an RNG, so when they happen changes what is on
disk, never what is learned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from qlearn import __version__, checkpoint
from qlearn.agents.dqn import (
    DQNLearner,
    check_network_fits,
    network_layout,
    num_crossings,
    per_beta,
)
from qlearn.config import DQNConfig, check_num_envs
from qlearn.envs import EnvSpec, env_spec, make_env, make_vector_env, stacked_frame_count
from qlearn.errors import CheckpointError, ConfigError, EnvError, QlearnError, TrainingError
from qlearn.evaluation import EvalResult, held_out_eval_seed, periodic_eval_seed, run_episodes
from qlearn.monitor import Monitor, ProgressOutput, progress_output

if TYPE_CHECKING:
    from qlearn.export import ExportReport

RUN_CONFIG = "config.toml"
RUN_INFO = "run.json"
BEST = "best"
FINAL = "final"
TRAIN_LOG_INTERVAL = 1_000  # env steps between train.csv rows and progress-bar refreshes
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the replay stores rewards as float32
KEEP_CHECKPOINTS = 2  # periodic checkpoints a run keeps (a crash mid-write leaves the other)


def _checkpoint_clock() -> float:
    """Seconds on a monotonic clock, read by the wall-clock checkpoint rule (tests replace it)."""
    return time.monotonic()


class TrainingInterrupted(QlearnError):
    """SIGINT or SIGTERM stopped training; a checkpoint was saved first."""


@dataclasses.dataclass
class Counters:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    episodes: int = 0
    target_step: int = 0
    """The step the latest `learn()` call trains to; a resumed run continues to it."""
    best_eval: float = -math.inf
    num_evals: int = 0
    wall_time: float = 0.0


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self.signal = signum

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def flushing_denormals() -> bool:
    """Whether this thread's CPU flushes denormal floats to zero (torch has no getter for it)."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@contextlib.contextmanager
def _flush_denormals() -> Iterator[None]:
    """Treat denormal floats as zero while training (the CPU's FTZ/DAZ flags, this thread only).

    Adam's moments of parameters whose gradient is exactly zero (dead ReLU units) decay into the
    denormal range, where each float operation takes ~100x longer: Adam on a CartPole network went
    from 35 to 120 us a step. TensorFlow sets the same flags by default. On exit they are put
    back as they were.
    """
    before = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


@contextlib.contextmanager
def _torch_threads(num_threads: int) -> Iterator[None]:
    """Run torch's intra-op pool with `num_threads` threads, restoring the count on exit."""
    before = torch.get_num_threads()
    if before != num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _check_device(device: str) -> None:
    """Raise ConfigError unless `device` names a torch device this machine has."""
    try:
        if torch.device(device).type == "meta":
            raise RuntimeError("the meta device holds no data")
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as exc:  # torch asserts when CUDA is not compiled in
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"device = {device!r} is not usable here: {first}") from None


def _counters_from(data: Any) -> Counters:
    """Counters from a checkpoint's JSON, refusing unknown or non-numeric entries."""
    if not isinstance(data, dict):
        raise TypeError(f"counters is {type(data).__name__}, expected an object")
    if "total_steps" in data and "target_step" not in data:
        # Older checkpoints name the target step `total_steps`.
        data = {("target_step" if k == "total_steps" else k): v for k, v in data.items()}
    fields = {f.name: type(f.default) for f in dataclasses.fields(Counters)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"counters has unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = fields[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"counters.{name} = {value!r} is not a number")
        values[name] = kind(value) if kind is float else int(value)
        if kind is int and (values[name] != value or values[name] < 0):
            raise ValueError(f"counters.{name} = {value!r} is not a count")
    return Counters(**values)


def _env_id_of(env: gym.Env) -> str | None:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else None


class DQN:
    """Deep Q-learning on a Gymnasium env with Discrete actions.

    Args:
        env: an env id (`"CartPole-v1"`) or a `gymnasium.Env` instance.
        config: hyperparameters; defaults suit classic-control tasks.
        run_dir: where logs, the resolved config, checkpoints and the best model go; None keeps
            nothing on disk.
        progress: where `learn` reports progress: a `ProgressOutput` (the CLI passes stderr's),
            True for stderr (a bar on a terminal, else a status line every tenth of the run),
            or False for none.
        env_kwargs: extra keyword arguments for `gymnasium.make`.
        lazy_replay: allocate the replay buffer only when learning starts; `load` sets it for
            agents that only act, so evaluating a big model needs no memory for its buffer.
            Otherwise the buffer is allocated here. A network, an update's batch or a buffer
            too big for the machine's available memory is refused (TrainingError, with both
            numbers) before it is allocated.
    """

    def __init__(
        self,
        env: str | gym.Env,
        config: DQNConfig | None = None,
        *,
        run_dir: str | Path | None = None,
        progress: bool | ProgressOutput = False,
        env_kwargs: dict[str, Any] | None = None,
        lazy_replay: bool = False,
    ) -> None:
        self.config = config or DQNConfig()
        self.env_kwargs = dict(env_kwargs or {})
        if isinstance(env, str):
            self.env_id: str | None = env
            self._env_instance: gym.Env | None = None
            probe = make_env(env, frame_stack=self.config.frame_stack, **self.env_kwargs)
            spec = env_spec(
                probe.observation_space,
                probe.action_space,
                repr(env),
                frame_stack=stacked_frame_count(probe),
            )
            probe.close()
        elif isinstance(env, gym.Env):
            self.env_id = _env_id_of(env)
            self._env_instance = env
            spec = env_spec(
                env.observation_space,
                env.action_space,
                f"env {self.env_id!r}",
                frame_stack=stacked_frame_count(env),
            )
            if self.config.num_envs > 1:
                raise ConfigError(
                    f"num_envs = {self.config.num_envs} needs an env id, not an env instance"
                )
        else:
            raise EnvError(f"env must be an env id or a gymnasium.Env, got {type(env).__name__}")
        self.spec: EnvSpec = spec
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress_output(progress)
        _check_device(self.config.device)
        self.learner = DQNLearner(spec, self.config)
        if not lazy_replay:
            _ = self.learner.replay
        self.counters = Counters()
        self._eval_env: gym.Env | None = None
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ envs
    def _make_train_envs(self) -> gym.vector.VectorEnv:
        c = self.config
        if self._env_instance is not None:
            instance = self._env_instance
            return gym.vector.SyncVectorEnv([lambda: instance])
        assert self.env_id is not None
        if self.env_kwargs:
            kwargs = self.env_kwargs

            def factory() -> gym.Env:
                return make_env(self.env_id, frame_stack=c.frame_stack, **kwargs)  # type: ignore[arg-type]

            return gym.vector.SyncVectorEnv([factory] * c.num_envs)
        return make_vector_env(self.env_id, c.num_envs, frame_stack=c.frame_stack)

    def _make_single_env(self) -> gym.Env:
        if self._env_instance is not None:
            return self._env_instance
        return self.make_eval_env()

    def make_eval_env(self, render_mode: str | None = None) -> gym.Env:
        """A fresh single env like the training one, for evaluation or rendering."""
        if self.env_id is not None:
            return make_env(
                self.env_id,
                render_mode=render_mode,
                frame_stack=self.config.frame_stack,
                **self.env_kwargs,
            )
        if self._env_instance is not None and self._env_instance.spec is not None:
            return gym.make(self._env_instance.spec, render_mode=render_mode)
        raise EnvError("this env instance has no spec to make an evaluation copy from")

    # ------------------------------------------------------------------ acting
    def predict(self, obs: Any) -> Any:
        """Greedy action(s): an int for one observation, an array for a batch."""
        array = np.asarray(obs)
        single = array.shape == self.spec.obs_shape or (
            self.spec.obs_kind == "discrete" and array.ndim == 0
        )
        actions = self.learner.predict(array[None] if single else array)
        return int(actions[0]) if single else actions

    def evaluate(self, num_episodes: int = 10, seed: int | None = None) -> EvalResult:
        """Greedy evaluation on a separate env.

        Args:
            num_episodes: episodes to run.
            seed: seed of the first reset. The default gives held-out episodes, which no periodic
                evaluation during training used (see `qlearn.evaluation.held_out_eval_seed`).
        """
        if self._eval_env is None:
            self._eval_env = self.make_eval_env()
        seed = held_out_eval_seed(self.config.seed) if seed is None else seed
        return run_episodes(self._eval_env, self.predict, num_episodes, seed)

    def export(
        self,
        path: str | Path,
        *,
        format: str = "onnx",
        num_checks: int = 10_000,
        seed: int = 0,
    ) -> ExportReport:
        """Write the greedy policy as an ONNX graph and a JSON sidecar, after checking them.

        onnxruntime must reproduce torch's Q-values (within 1e-5 of max(1, |Q|)) and actions on
        `num_checks` observations, half drawn from the observation space and half met in
        episodes of the env; see `qlearn.export`. Needs the `export` extra.

        Args:
            path: the .onnx file to write; the sidecar goes beside it (`policy.onnx.json`).
            format: `onnx`, the only format so far.
            num_checks: observations the export is checked on.
            seed: seeds the check's observations and episodes.

        Returns:
            what was written and how closely onnxruntime matched torch.
        """
        from qlearn.export import check_output_path, export_onnx

        path = check_output_path(path, format)
        env = self._make_single_env()
        try:
            return export_onnx(
                self.learner,
                env,
                path,
                env_id=self.env_id,
                env_kwargs=self.env_kwargs,
                num_checks=num_checks,
                seed=seed,
            )
        finally:
            if env is not self._env_instance:
                env.close()

    # ------------------------------------------------------------------ learning
    def learn(
        self,
        steps: int | None = None,
        *,
        callback: Callable[[DQN, dict[str, float]], bool | None] | None = None,
    ) -> DQN:
        """Train `steps` more env steps, or, without it, until the run's planned total.

        `learn(n)` continues from the step counter for n more steps, as Stable-Baselines3's
        `learn(total_timesteps)` does; calls add up. `learn()` trains until
        `config.total_steps`, or, when a call was interrupted (a resumed run, or a callback that
        stopped it), until that call's target; it does nothing once the run is there. The
        schedules (epsilon, PER beta) run over `config.total_steps` however the steps are split
        into calls. SIGINT/SIGTERM save a checkpoint (when there is a run_dir) and raise
        TrainingInterrupted. `callback(agent, metrics)` is called after each evaluation;
        returning False stops training early.
        """
        c = self.config
        counters = self.counters
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
                raise ConfigError(f"steps = {steps!r} is invalid; allowed: an integer >= 1")
            check_num_envs(c.num_envs, int(steps))
            counters.target_step = counters.step + int(steps)
        elif counters.step >= counters.target_step:
            counters.target_step = c.total_steps
        if counters.step >= counters.target_step:
            return self
        if self.run_dir is not None:
            self._prepare_run_dir()
        monitor = Monitor(
            self.run_dir,
            counters.target_step,
            progress=self.progress,
            tensorboard=c.tensorboard,
            initial_step=counters.step,
        )
        stop = _StopFlag()
        run = _Run(self, monitor, stop, callback)
        single = c.num_envs == 1
        envs = self._make_single_env() if single else self._make_train_envs()
        try:
            # BLAS threads as many as torch's: numpy's OpenBLAS would otherwise spin a thread per
            # core, which on a busy machine makes the numpy engine's small matmuls ~30x slower.
            with (
                stop.installed(),
                _torch_threads(c.torch_threads),
                threadpool_limits(c.torch_threads, user_api="blas"),
                _flush_denormals(),
            ):
                if single:
                    run.single_env(envs)  # type: ignore[arg-type]
                else:
                    run.vector_env(envs)  # type: ignore[arg-type]
        finally:
            if envs is not self._env_instance:
                envs.close()
            monitor.close()
        if self.run_dir is not None and not run.stopped_early:
            self.save(self.run_dir / FINAL)
            periodic = c.checkpoint_interval or c.checkpoint_minutes
            if periodic and run.checkpoint_step != self.counters.step:
                self.save_checkpoint()  # the end state, for a later resume with more steps
        return self

    def _periodic_eval(self, monitor: Monitor) -> dict[str, float]:
        c, counters = self.config, self.counters
        t0 = time.perf_counter()
        seed = periodic_eval_seed(c.seed, counters.num_evals)
        result = self.evaluate(c.eval_episodes, seed=seed)
        counters.num_evals += 1
        summary = {
            **result.summary(),
            "eval_time_s": time.perf_counter() - t0,
            "train_time_s": counters.wall_time,
        }
        monitor.evaluation(counters.step, summary)
        if result.mean_return > counters.best_eval:
            counters.best_eval = result.mean_return
            if self.run_dir is not None:
                self.save(self.run_dir / BEST)
        return summary

    # ------------------------------------------------------------------ files
    def _prepare_run_dir(self) -> None:
        """Create the run dir, check it is writable, and write the resolved config."""
        assert self.run_dir is not None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("ok", encoding="utf-8")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"run directory {str(self.run_dir)!r} is not writable ({exc.strerror}); "
                "choose another with --run-dir"
            ) from None
        if self.counters.step == 0 and checkpoint.checkpoint_dirs(self.run_dir):
            # A fresh run here would mix with the old one: pruning would delete the new
            # checkpoints (lower step numbers) and --resume would pick the old run's.
            raise ConfigError(
                f"run directory {str(self.run_dir)!r} already holds checkpoints of another run; "
                f"continue it with --resume {self.run_dir}, or choose another --run-dir"
            )
        checkpoint.remove_temporaries(self.run_dir)
        checkpoint.atomic_write_text(self.run_dir / RUN_CONFIG, self.config.to_toml())
        import json

        info = {
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "qlearn": __version__,
            "spec": self.spec.to_dict(),
        }
        checkpoint.atomic_write_text(self.run_dir / RUN_INFO, json.dumps(info, indent=2))

    def _meta(self) -> dict[str, Any]:
        return {
            "qlearn_version": __version__,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "env_spec": self.spec.to_dict(),
            "config": self.config.to_dict(),
            "counters": dataclasses.asdict(self.counters),
            "agent": {"num_updates": self.learner.num_updates, **self.learner.rng_state()},
        }

    def save(self, path: str | Path, *, include_replay: bool = False) -> Path:
        """Write a checkpoint directory (weights, optimizer, counters; replay if asked).

        Raises TrainingError, writing nothing, when a weight or optimizer moment is NaN or
        inf: an update with a finite loss can still make the weights diverge, and such a
        checkpoint must not replace the last good one.
        """
        tensors = self.learner.tensors()
        bad = [
            k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise TrainingError(
                f"training diverged at step {self.counters.step}: {', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''} hold NaN or inf; not saving {str(path)!r}, "
                "the last good checkpoint is kept (lower learning_rate or clip gradients)"
            )
        replay = self.learner.replay.state_dict() if include_replay else None
        return checkpoint.write_checkpoint(path, self._meta(), tensors, replay)

    def save_checkpoint(self) -> Path:
        """A periodic checkpoint with the replay buffer, under run_dir/checkpoints/."""
        if self.run_dir is None:
            raise ConfigError("save_checkpoint needs a run_dir")
        name = f"{checkpoint.CHECKPOINT_PREFIX}{self.counters.step:010d}"
        path = self.save(self.run_dir / "checkpoints" / name, include_replay=True)
        checkpoint.prune_checkpoints(self.run_dir, keep=KEEP_CHECKPOINTS)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: str | gym.Env | None = None,
        *,
        run_dir: str | Path | None = None,
        progress: bool | ProgressOutput = False,
        with_replay: bool = False,
    ) -> DQN:
        """Load a checkpoint directory (or a run directory: its best, else final, model).

        Never unpickles anything. The env (the saved env id by default) must have the same
        spaces as the checkpoint's; CheckpointError says what differs.
        """
        path = resolve_model_path(Path(path))
        meta = checkpoint.read_meta(path)
        env_from_meta = env is None
        try:
            config = DQNConfig.from_dict(meta["config"], source=f"checkpoint {str(path)!r}")
            saved_spec = EnvSpec.from_dict(meta["env_spec"])
            env = env if env is not None else meta["env_id"]
            env_kwargs = meta.get("env_kwargs") or {}
            if not isinstance(env_kwargs, dict):
                raise TypeError(f"env_kwargs is {type(env_kwargs).__name__}, expected an object")
            counters = _counters_from(meta["counters"])
            agent_counters = meta["agent"]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has malformed meta.json: {exc}"
            ) from None
        if env is None:
            raise CheckpointError(f"checkpoint {str(path)!r} names no env; pass env=")
        if env_from_meta and isinstance(env, str) and ":" in env:
            # gymnasium.make("module:Env-v0") imports `module`: loading would run its code.
            raise CheckpointError(
                f"checkpoint {str(path)!r} names env {env!r}, which would import a module; "
                "pass env= (an id or an env instance) to choose the env yourself"
            )
        if not isinstance(env, str | gym.Env):
            raise CheckpointError(f"checkpoint {str(path)!r} has an invalid env_id {env!r}")
        _check_model_fits(path, saved_spec, config)
        self = cls(
            env,
            config,
            run_dir=run_dir,
            progress=progress,
            env_kwargs=env_kwargs,
            lazy_replay=not with_replay,
        )
        if self.spec != saved_spec:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was trained on {saved_spec.describe()}, but env "
                f"{self.env_id!r} has {self.spec.describe()}"
            )
        tensors, replay = checkpoint.read_tensors(path, meta, with_replay=with_replay)
        try:
            self.learner.load_tensors(tensors)
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit the network: {first}"
            ) from None
        try:
            self.learner.num_updates = int(agent_counters["num_updates"])
            self.learner.load_rng_state(agent_counters)
            if replay is not None:
                self.learner.replay.load_state_dict(replay)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has a malformed counter or replay entry: {exc}"
            ) from None
        self.counters = counters
        return self

    @classmethod
    def resume(cls, run_dir: str | Path, *, progress: bool | ProgressOutput = False) -> DQN:
        """Continue a run from its newest complete checkpoint (replay, RNGs and counters too).

        Environments start from a reset: the episodes in flight at the checkpoint are lost.
        The best model on disk may be newer than the checkpoint; its score is kept as the bar a
        later evaluation must beat, so a worse model never replaces it.
        """
        run_dir = Path(run_dir)
        if run_dir.is_dir():
            # Put back a best/ or final/ that a crash left moved aside, so its score is read.
            checkpoint.remove_temporaries(run_dir)
        latest = checkpoint.latest_checkpoint(run_dir)
        if latest is None:
            raise CheckpointError(_no_checkpoint_message(run_dir))
        self = cls.load(latest, run_dir=run_dir, progress=progress, with_replay=True)
        with contextlib.suppress(CheckpointError, KeyError, TypeError, ValueError):
            best = float(checkpoint.read_meta(run_dir / BEST)["counters"]["best_eval"])
            self.counters.best_eval = max(self.counters.best_eval, best)
        return self


def _no_checkpoint_message(run_dir: Path) -> str:
    """Why `run_dir` has no checkpoint to resume from, as its config.toml explains it."""
    start = f"run {str(run_dir)!r} has no complete checkpoint to resume from"
    if not run_dir.is_dir():
        return f"{start}: no such directory"
    found = len(checkpoint.checkpoint_dirs(run_dir))
    if found:
        return f"{start}: its {found} checkpoint(s) fail the size and SHA-256 checks"
    try:
        config = DQNConfig.from_toml(run_dir / RUN_CONFIG)
    except ConfigError:
        return f"{start}: it holds no readable {RUN_CONFIG}, so it is not a qlearn run directory"
    if not (config.checkpoint_interval or config.checkpoint_minutes):
        return (
            f"{start}: its config disables periodic checkpoints (checkpoint_interval = 0 and "
            "checkpoint_minutes = 0); train it again without --resume"
        )
    return (
        f"{start}: it stopped before its first periodic checkpoint (due after "
        f"{config.checkpoint_interval} steps or {config.checkpoint_minutes:g} minutes of "
        "training); train it again without --resume"
    )


def _check_model_fits(path: Path, spec: EnvSpec, config: DQNConfig) -> None:
    """Refuse a checkpoint before its network is built: tensors (read from the safetensors
    header only) whose shapes differ from those of the network its config describes, or a
    network too big for this machine's memory."""
    layout = network_layout(spec, config)
    found = checkpoint.tensor_shapes(path / checkpoint.MODEL)
    expected = {
        f"{net}.{name}": shape
        for net in ("q_net", "target_net")
        for name, shape in layout.state_shapes.items()
    }
    for key in found:
        # Adam's moments (`optim.<i>.exp_avg`) have the shape of parameter i, in the order
        # `parameters()` lists them.
        parts = key.split(".")
        if (
            len(parts) == 3
            and parts[0] == "optim"
            and parts[2] in ("exp_avg", "exp_avg_sq")
            and parts[1].isdecimal()
            and int(parts[1]) < len(layout.param_shapes)
        ):
            expected[key] = layout.param_shapes[int(parts[1])]
    problems = []
    for key, shape in expected.items():
        if key not in found:
            problems.append(f"{key} is missing (the network needs shape {shape})")
        elif found[key] != shape:
            problems.append(f"{key} has shape {found[key]} where the network needs {shape}")
    problems += [
        f"{key} has no place in the network"
        for key in found
        if key.startswith(("q_net.", "target_net.")) and key not in expected
    ]
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit the network its config describes "
            f"(hidden_sizes {list(config.hidden_sizes)}, {spec.describe()}): "
            f"{'; '.join(problems[:2])}{more}"
        )
    try:
        check_network_fits(layout, "it needs a machine with more memory")
    except TrainingError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be loaded here: {exc}") from None


def resolve_model_path(path: Path) -> Path:
    """A checkpoint directory as given, or the best (else final, else newest) one of a run."""
    if (path / checkpoint.META).exists() or not path.is_dir():
        return path
    for name in (BEST, FINAL):
        if (path / name / checkpoint.META).exists():
            return path / name
    latest = checkpoint.latest_checkpoint(path)
    if latest is not None:
        return latest
    raise CheckpointError(f"{str(path)!r} holds no qlearn checkpoint (no {checkpoint.META})")


class _Run:
    """The state of one `learn()` call, and the work done after every env step.

    Two drivers feed it: `single_env` (one plain env, the fast path: no vector-env overhead)
    and `vector_env` (Gymnasium vector envs with next-step autoreset). Both add raw one-step
    transitions; the replay memory makes n-step ones where configured.
    """

    def __init__(
        self,
        owner: DQN,
        monitor: Monitor,
        stop: _StopFlag,
        callback: Callable[[DQN, dict[str, float]], bool | None] | None,
    ) -> None:
        self.owner = owner
        self.config = owner.config
        self.learner = owner.learner
        self.counters = owner.counters
        self.monitor = monitor
        self.stop = stop
        self.callback = callback
        self.total = owner.counters.target_step  # this call's end; schedules use c.total_steps
        self.check_finite = owner.spec.obs_dtype != "uint8"
        self.metrics: dict[str, float] = {}
        self.recent_returns: list[float] = []
        self.t_start = time.perf_counter()
        self.wall_before = owner.counters.wall_time
        self.last_log = (owner.counters.step, self.t_start)
        self.stopped_early = False
        # A fresh run resets with the seed; a resumed one with a seed derived from its step.
        self.reset_seed = self.config.seed + owner.counters.step
        self.next_event = self._next_event(owner.counters.step)
        self.eval_time = 0.0  # excluded from wall_time, which counts training only
        # Periodic checkpoints: when the last began (the run's start counts as one, for the
        # wall-clock trigger), how long it took, whether one is due, and its step.
        self.checkpoint_began = _checkpoint_clock()
        self.checkpoint_cost = 0.0
        self.checkpoint_due = False
        self.checkpoint_step: int | None = None
        self.checkpoint_path: Path | None = None

    def _wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start - self.eval_time

    # ------------------------------------------------------------------ drivers
    def single_env(self, env: gym.Env) -> None:
        """One env, stepped directly: the fewest Python operations per step."""
        agent, counters, replay = self.learner, self.counters, self.learner.replay
        obs, _ = env.reset(seed=self.reset_seed)
        replay.reset_pending()  # windows of the episodes a previous call left unfinished
        obs = np.asarray(obs)
        batch = np.empty((1, *obs.shape), dtype=obs.dtype)
        ep_return, ep_length = 0.0, 0
        check_finite = self.check_finite
        clip_rewards = self.config.clip_rewards
        while counters.step < self.total:
            epsilon = agent.epsilon(counters.step)
            batch[0] = obs
            action = int(agent.act(batch, epsilon)[0])
            next_obs, reward, terminated, truncated, _ = env.step(action)
            if check_finite and not (abs(reward) <= FLOAT32_MAX and np.isfinite(next_obs).all()):
                self._nonfinite(next_obs, reward)
            stored = min(max(reward, -1.0), 1.0) if clip_rewards else reward
            replay.add_one(obs, action, stored, next_obs, terminated, truncated)
            ep_return += float(reward)
            ep_length += 1
            step = counters.step + 1
            if terminated or truncated:
                self._episode(step, ep_return, ep_length, epsilon)
                ep_return, ep_length = 0.0, 0
                next_obs, _ = env.reset()
            obs = np.asarray(next_obs)
            if self._after_steps(step - 1, step, epsilon):
                return

    def vector_env(self, envs: gym.vector.VectorEnv) -> None:
        """Vector envs with next-step autoreset: the step after an episode end is a reset step
        that produces no transition, so it is masked out of replay and counters."""
        c, agent, counters, replay = self.config, self.learner, self.counters, self.learner.replay
        num_envs = envs.num_envs
        obs, _ = envs.reset(seed=self.reset_seed)
        replay.reset_pending()  # windows of the episodes a previous call left unfinished
        prev_done = np.zeros(num_envs, dtype=bool)
        ep_return = np.zeros(num_envs)
        ep_length = np.zeros(num_envs, dtype=np.int64)
        while counters.step < self.total:
            epsilon = agent.epsilon(counters.step)
            actions = agent.act(obs, epsilon)
            next_obs, rewards, terminated, truncated, _ = envs.step(actions)
            if self.check_finite and not (
                np.isfinite(next_obs).all() and (np.abs(rewards) <= FLOAT32_MAX).all()
            ):
                self._nonfinite(next_obs, rewards)
            valid = ~prev_done
            n_new = int(valid.sum())
            # Clipped before the n-step sums; the episode returns below add the raw rewards.
            stored = np.clip(rewards, -1.0, 1.0) if c.clip_rewards else rewards
            replay.add(obs, actions, stored, next_obs, terminated, truncated, valid)
            before = counters.step
            step = before + n_new
            done = terminated | truncated
            ep_return += np.where(valid, rewards, 0.0)
            ep_length += valid
            for i in np.flatnonzero(done & valid):
                self._episode(step, float(ep_return[i]), int(ep_length[i]), epsilon)
            ep_return[done] = 0.0
            ep_length[done] = 0
            prev_done = done
            obs = next_obs
            if self._after_steps(before, step, epsilon):
                return

    # ------------------------------------------------------------------ bookkeeping
    def _nonfinite(self, next_obs: Any, rewards: Any) -> None:
        """Raise for a NaN/inf observation, or a reward that is NaN, inf or beyond float32."""
        what = "observation" if not np.isfinite(np.asarray(next_obs)).all() else "reward"
        name = self.owner.env_id or type(self.owner._env_instance).__name__
        raise TrainingError(
            f"env {name!r} returned a non-finite {what} at step "
            f"{self.counters.step + 1}; check the env or wrap it to clean its output"
        )

    def _episode(self, step: int, ret: float, length: int, epsilon: float) -> None:
        self.counters.episodes += 1
        self.recent_returns.append(ret)
        del self.recent_returns[:-20]
        self.monitor.episode(step, self.counters.episodes, ret, length, epsilon=epsilon)

    def _after_steps(self, before: int, step: int, epsilon: float) -> bool:
        """Advance the counter to `step` and do what falls due in (before, step]: updates,
        target sync, logs, evaluation, checkpoints, a requested stop. True ends training."""
        c, agent, counters, owner = self.config, self.learner, self.counters, self.owner
        counters.step = step
        if step >= c.learning_starts:
            num_updates = (step // c.train_interval - before // c.train_interval) * c.gradient_steps
            if num_updates:
                beta = per_beta(c, step) if c.prioritized else 1.0
                self.metrics = agent.update(num_updates, beta) or self.metrics
            if step // c.target_update_interval != before // c.target_update_interval:
                agent.sync_target()
        if step < self.next_event and self.stop.signal is None:
            return False  # nothing else falls due: the common case, kept cheap
        self.next_event = self._next_event(step)
        counters.wall_time = self._wall_time()
        if num_crossings(before, step, TRAIN_LOG_INTERVAL) or step >= self.total:
            self._log(step, epsilon)
        if c.eval_interval and (num_crossings(before, step, c.eval_interval) or step >= self.total):
            t_eval = time.perf_counter()
            result = owner._periodic_eval(self.monitor)
            self.eval_time += time.perf_counter() - t_eval
            if (
                self.callback is not None
                and self.callback(owner, {"step": step, **result}) is False
            ):
                self.stopped_early = True
                return True
        if owner.run_dir is not None and self._checkpoint_now(before, step):
            self._checkpoint()
        if self.stop.signal is not None:
            where = None
            if owner.run_dir is not None:  # one written at this very step is not written twice
                where = self.checkpoint_path if self.checkpoint_step == step else self._checkpoint()
            name = signal.Signals(self.stop.signal).name
            saved = f"; checkpoint saved to {where}" if where else ""
            raise TrainingInterrupted(f"{name} at step {step}{saved}")
        return False

    def _checkpoint_now(self, before: int, step: int) -> bool:
        """Whether a periodic checkpoint is due at `step` and the overhead cap lets it be written.

        Due: `checkpoint_interval` was crossed in (before, step], or `checkpoint_minutes` have
        passed since the last checkpoint began. A due checkpoint stays due until written; it
        waits while the last one's cost exceeds `checkpoint_max_overhead` of the time since it
        began, so checkpoints take about that share of the run at most (the first of a run, with
        no cost measured yet, is never held back).
        """
        c = self.config
        since = _checkpoint_clock() - self.checkpoint_began
        if c.checkpoint_interval and num_crossings(before, step, c.checkpoint_interval):
            self.checkpoint_due = True
        if c.checkpoint_minutes and since >= 60.0 * c.checkpoint_minutes:
            self.checkpoint_due = True
        cap = c.checkpoint_max_overhead
        return self.checkpoint_due and (cap is None or self.checkpoint_cost <= cap * since)

    def _checkpoint(self) -> Path:
        """Write a periodic checkpoint, timing it for the overhead cap."""
        began = _checkpoint_clock()
        path = self.owner.save_checkpoint()
        self.checkpoint_began, self.checkpoint_cost = began, _checkpoint_clock() - began
        self.checkpoint_due = False
        self.checkpoint_step, self.checkpoint_path = self.counters.step, path
        return path

    def _next_event(self, step: int) -> int:
        """The first step after `step` at which a log row, evaluation or checkpoint falls due."""
        c = self.config
        intervals = [TRAIN_LOG_INTERVAL, c.eval_interval, c.checkpoint_interval]
        due = [(step // i + 1) * i for i in intervals if i]
        return min([*due, self.total])

    def _log(self, step: int, epsilon: float) -> None:
        last_step, last_time = self.last_log
        now = time.perf_counter()
        sps = (step - last_step) / max(now - last_time, 1e-9)
        self.last_log = (step, now)
        recent = self.recent_returns
        mean_return = float(np.mean(recent)) if recent else math.nan
        row = {
            "epsilon": epsilon,
            "steps_per_s": sps,
            "episodes": self.counters.episodes,
            "mean_return_20": mean_return,
            **self.metrics,
        }
        self.monitor.scalars(step, row)
        loss = self.metrics.get("loss", math.nan)
        self.monitor.progress(
            step, {"return (last 20)": mean_return, "epsilon": epsilon, "loss": loss}
        )
