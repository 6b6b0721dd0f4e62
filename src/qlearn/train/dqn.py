"""`DQN`: the user-facing agent. It wires env, learner, replay, logs, evaluation and checkpoints.

    from qlearn import DQN, DQNConfig
    agent = DQN("CartPole-v1", DQNConfig(total_steps=50_000))
    agent.learn()                   # until step 50,000, the run's planned total
    agent.learn(10_000)             # 10,000 more steps
    agent.evaluate(20).mean_return  # on held-out episodes
    agent.save("cartpole")
    agent = DQN.load("cartpole")

The loop itself is `qlearn.train.loop.train`; this class builds its envs and its hooks
(periodic evaluation, which keeps the best model, and periodic checkpoints), and reads and
writes checkpoints through `qlearn.checkpoint`.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from qlearn import checkpoint
from qlearn.agents.dqn import DQNLearner, check_network_fits, network_layout
from qlearn.checkpoint import BEST, FINAL, Counters, TrainingMeta, resolve_model_path
from qlearn.config import DQNConfig, check_num_envs
from qlearn.envs import EnvSpec, env_spec, make_env, make_vector_env, stacked_frame_count
from qlearn.errors import CheckpointError, ConfigError, EnvError, TrainingError
from qlearn.evaluation import EvalResult, held_out_eval_seed, periodic_eval_seed, run_episodes
from qlearn.monitor import Monitor, ProgressOutput, progress_output
from qlearn.train import loop
from qlearn.train.loop import NextStepEnvs, OneEnv, TrainingInterrupted
from qlearn.train.process import StopFlag, training_settings
from qlearn.train.run_dir import (
    KEEP_CHECKPOINTS,
    checkpoint_to_resume,
    keep_best_eval,
    open_run_dir,
    write_run_files,
)

if TYPE_CHECKING:
    from qlearn.export import ExportReport

__all__ = ["DQN", "Counters", "TrainingInterrupted", "resolve_model_path"]


def _check_device(device: str) -> None:
    """Raise ConfigError unless `device` names a torch device this machine has."""
    try:
        if torch.device(device).type == "meta":
            raise RuntimeError("the meta device holds no data")
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as exc:  # torch asserts when CUDA is not compiled in
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"device = {device!r} is not usable here: {first}") from None


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
    def _make_train_envs(self) -> OneEnv | NextStepEnvs:
        c = self.config
        check_finite = self.spec.obs_dtype != "uint8"
        if c.num_envs == 1:
            return OneEnv(self._make_single_env(), check_finite=check_finite)
        assert self.env_id is not None  # an env instance with num_envs > 1 is refused earlier
        if self.env_kwargs:
            kwargs = self.env_kwargs

            def factory() -> gym.Env:
                return make_env(self.env_id, frame_stack=c.frame_stack, **kwargs)  # type: ignore[arg-type]

            envs: gym.vector.VectorEnv = gym.vector.SyncVectorEnv([factory] * c.num_envs)
        else:
            envs = make_vector_env(self.env_id, c.num_envs, frame_stack=c.frame_stack)
        return NextStepEnvs(envs, check_finite=check_finite)

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
        if not self.set_target_step(steps):
            return self
        if self.run_dir is not None:
            self.prepare_run_dir()
        monitor = self.make_monitor()
        envs = self._make_train_envs()
        stop = StopFlag()
        hooks = loop.Hooks(
            evaluate=self.eval_hook(monitor, callback),
            checkpoint=self.save_checkpoint if self.run_dir is not None else None,
        )
        try:
            with training_settings(stop, c.torch_threads):
                result = loop.train(
                    envs,
                    self.learner,
                    c,
                    counters,
                    monitor,
                    hooks=hooks,
                    stop=stop,
                    env_name=self.env_id or type(self._env_instance).__name__,
                )
        finally:
            if not (isinstance(envs, OneEnv) and envs.env is self._env_instance):
                envs.close()
            monitor.close()
        if self.run_dir is not None and not result.stopped_early:
            self.save(self.run_dir / FINAL)
            periodic = c.checkpoint_interval or c.checkpoint_minutes
            if periodic and result.checkpoint_step != self.counters.step:
                self.save_checkpoint()  # the end state, for a later resume with more steps
        return self

    def set_target_step(self, steps: int | None) -> bool:
        """Set `counters.target_step` as `learn(steps)` describes it: `steps` more, or the
        target of an interrupted call, or `config.total_steps`. False when training is
        already there."""
        counters = self.counters
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
                raise ConfigError(f"steps = {steps!r} is invalid; allowed: an integer >= 1")
            check_num_envs(self.config.num_envs, int(steps))
            counters.target_step = counters.step + int(steps)
        elif counters.step >= counters.target_step:
            counters.target_step = self.config.total_steps
        return counters.step < counters.target_step

    def eval_hook(
        self, monitor: Monitor, callback: Callable[[DQN, dict[str, float]], bool | None] | None
    ) -> Callable[[int], bool]:
        """The loop's evaluation hook: a periodic evaluation (which keeps the best model), then
        the user's callback; True (the callback returned False) stops training."""

        def evaluate(step: int) -> bool:
            summary = self._periodic_eval(monitor)
            return callback is not None and callback(self, {"step": step, **summary}) is False

        return evaluate

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
    def make_monitor(self) -> Monitor:
        """The logs and progress of training from the current step to `counters.target_step`."""
        return Monitor(
            self.run_dir,
            self.counters.target_step,
            progress=self.progress,
            tensorboard=self.config.tensorboard,
            initial_step=self.counters.step,
        )

    def prepare_run_dir(self) -> None:
        """Create the run dir, check it is writable, and write the resolved config."""
        assert self.run_dir is not None
        open_run_dir(self.run_dir, fresh=self.counters.step == 0)
        write_run_files(self.run_dir, self.config, self.env_id, self.env_kwargs, self.spec)

    def meta(self) -> TrainingMeta:
        """What a checkpoint's meta.json holds beside the tensors: config, env, counters and
        the learner's JSON-ready state."""
        learner = {"num_updates": self.learner.num_updates, **self.learner.rng_state()}
        return TrainingMeta(
            self.config, self.spec, self.env_id, self.env_kwargs, self.counters, learner
        )

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
        return checkpoint.write_checkpoint(path, self.meta().to_dict(), tensors, replay)

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
        env_from_meta = env is None
        meta_json = checkpoint.read_meta(path)
        meta = TrainingMeta.from_dict(meta_json, path, need_env_id=env_from_meta)
        config, env_kwargs = meta.config, meta.env_kwargs
        env = env if env is not None else meta.env_id
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
        _check_model_fits(path, meta.env_spec, config)
        self = cls(
            env,
            config,
            run_dir=run_dir,
            progress=progress,
            env_kwargs=env_kwargs,
            lazy_replay=not with_replay,
        )
        if self.spec != meta.env_spec:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was trained on {meta.env_spec.describe()}, but env "
                f"{self.env_id!r} has {self.spec.describe()}"
            )
        tensors, replay = checkpoint.read_tensors(path, meta_json, with_replay=with_replay)
        try:
            self.learner.load_tensors(tensors)
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit the network: {first}"
            ) from None
        try:
            self.learner.num_updates = int(meta.learner["num_updates"])
            self.learner.load_rng_state(meta.learner)
            if replay is not None:
                self.learner.replay.load_state_dict(replay)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has a malformed counter or replay entry: {exc}"
            ) from None
        self.counters = meta.counters
        return self

    @classmethod
    def resume(cls, run_dir: str | Path, *, progress: bool | ProgressOutput = False) -> DQN:
        """Continue a run from its newest complete checkpoint (replay, RNGs and counters too).

        Environments start from a reset: the episodes in flight at the checkpoint are lost.
        The best model on disk may be newer than the checkpoint; its score is kept as the bar a
        later evaluation must beat, so a worse model never replaces it.
        """
        run_dir = Path(run_dir)
        latest = checkpoint_to_resume(run_dir)
        self = cls.load(latest, run_dir=run_dir, progress=progress, with_replay=True)
        keep_best_eval(self.counters, run_dir)
        return self


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
