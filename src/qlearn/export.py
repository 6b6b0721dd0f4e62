"""Export a trained agent's greedy policy as an ONNX graph that checks itself before it is kept.

    agent = DQN.load("runs/cartpole")
    report = agent.export("policy.onnx")  # writes policy.onnx and policy.onnx.json

The graph takes raw observations as the env returns them, with a dynamic batch axis, and returns
`q_values` (batch, num_actions) float32 and `action` (batch,) int64, the greedy action. The
observation preprocessing is inside the graph: a Discrete observation is one-hot encoded, a flat
Box is cast to float32, and a uint8 image is cast (and divided by 255 for the Nature CNN), so a
client needs nothing from qlearn. C51 and QR heads return their expected Q-values; noisy layers
export with the noise off (their mean weights), as the agent acts greedily.

Before anything is written, onnxruntime runs the new graph on observations drawn from the
observation space and from real episodes, and its Q-values and actions must match torch's. The
JSON sidecar beside the graph records the env id, the spaces, the preprocessing, the network, the
qlearn version, the check's figures and the graph's SHA-256, which the server checks on load.

onnx, onnxscript and onnxruntime (the `export` extra) are imported only when an export runs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from qlearn import __version__, checkpoint
from qlearn.agents.dqn import DQNLearner, pick_network
from qlearn.envs import EnvSpec
from qlearn.errors import CheckpointError, ConfigError, ExportError
from qlearn.networks import expected_q

FORMATS: tuple[str, ...] = ("onnx",)
SIDECAR_FORMAT = "qlearn-onnx-policy"
SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".json"  # policy.onnx -> policy.onnx.json
OPSET = 18  # the lowest opset the torch.export-based exporter implements
INPUT_NAME = "obs"
OUTPUT_NAMES: tuple[str, str] = ("q_values", "action")
NUM_CHECKS = 10_000
TOLERANCE = 1e-5
CHECK_BATCH = 1_000  # observations per forward pass of the check (bounds memory for images)
# Box bounds beyond this are treated as unbounded when drawing check observations: CartPole's
# velocities are bounded by float32's max, and inputs of 1e38 test overflow, not the export.
UNBOUNDED = 1e3
UNBOUNDED_DRAW = 10.0  # unbounded dimensions are drawn from [-10, 10]
EPISODE_RANDOM_ACTIONS = 0.25  # share of random actions in the check episodes, to vary states


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely onnxruntime matched torch.

    Attributes:
        onnx_path: the ONNX graph.
        sidecar_path: the JSON sidecar beside it.
        num_from_space: check observations drawn from the observation space.
        num_from_episodes: check observations from real episodes of the env.
        max_abs_diff: largest |Q_onnxruntime - Q_torch| over every check observation and action.
        max_scaled_diff: largest |Q_onnxruntime - Q_torch| / max(1, |Q_torch|); must be <= 1e-5.
        num_action_ties: observations whose actions differ only because two Q-values are equal
            within the tolerance (a tie that rounding breaks either way); normally 0.
    """

    onnx_path: Path
    sidecar_path: Path
    num_from_space: int
    num_from_episodes: int
    max_abs_diff: float
    max_scaled_diff: float
    num_action_ties: int

    @property
    def num_checked(self) -> int:
        return self.num_from_space + self.num_from_episodes

    def summary(self) -> dict[str, Any]:
        return {
            "num_checked": self.num_checked,
            "num_from_space": self.num_from_space,
            "num_from_episodes": self.num_from_episodes,
            "max_abs_diff": self.max_abs_diff,
            "max_scaled_diff": self.max_scaled_diff,
            "tolerance": TOLERANCE,
            "num_action_ties": self.num_action_ties,
        }


# ---------------------------------------------------------------------- the graph


class GreedyPolicy(nn.Module):
    """Raw observations -> (Q-values, greedy action): the function the ONNX graph computes.

    Args:
        q_net: the agent's Q-network (copied here and put in eval mode: noise off).
        spec: the env's spaces; decides the preprocessing.
        distributional: `none`, `c51` or `qr`.
        support: (atoms,) C51 atom values.
    """

    def __init__(
        self, q_net: nn.Module, spec: EnvSpec, distributional: str, support: torch.Tensor
    ) -> None:
        super().__init__()
        self.q_net = copy.deepcopy(q_net).cpu().eval()
        self.q_net.requires_grad_(False)
        self.distributional = distributional
        self.one_hot = spec.obs_kind == "discrete"
        # uint8 images go in as they are: the CNN torso casts (and scales) them itself.
        self.cast = not self.one_hot and spec.obs_dtype != "uint8"
        self.register_buffer("support", support.detach().cpu().clone())
        self.register_buffer("states", torch.arange(spec.obs_shape[0] if self.one_hot else 1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, *obs_shape) raw observations, or (batch,) for Discrete ones ->
        ((batch, num_actions) float32 Q-values, (batch,) int64 actions)."""
        if self.one_hot:
            x = (obs.reshape(-1, 1) == self.states).float()  # (batch, num_states)
        elif self.cast:
            x = obs.float()
        else:
            x = obs
        q = expected_q(self.q_net(x), self.distributional, self.support)
        return q, q.argmax(dim=1)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and warnings: the library never prints."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export_graph(policy: GreedyPolicy, example: np.ndarray, path: Path) -> None:
    """Trace `policy` on `example` (a batch of >= 2 raw observations) into an ONNX file."""
    try:
        import onnxscript  # noqa: F401  the torch.export-based exporter needs it
    except ImportError:
        raise ConfigError(
            "ONNX export needs the onnx, onnxscript and onnxruntime packages; "
            "install qlearn[export]"
        ) from None
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        # dynamo=True: the torch.export-based exporter, torch's default since 2.9. The older
        # TorchScript exporter (dynamo=False) still works in torch 2.13 but is deprecated and
        # announced for removal; passing the flag pins the path whatever the default becomes.
        program = torch.onnx.export(
            policy,
            (torch.from_numpy(example),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"obs": {0: batch}},
            opset_version=OPSET,
            verbose=False,
        )
        if program is None:  # pragma: no cover - only when given a file to write
            raise ExportError("torch.onnx.export returned no program")
        program.save(str(path))


def onnx_session(model: str | Path | bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU inference session on an ONNX file (or its bytes), with `threads`
    intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "running an ONNX policy needs onnxruntime; install qlearn[export]"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the library never prints
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a bad model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        name = "the model" if isinstance(model, bytes) else repr(str(model))
        raise CheckpointError(f"{name} is not a loadable ONNX model: {first}") from None


# ---------------------------------------------------------------------- descriptions


def _bound(values: np.ndarray) -> Any:
    """A Box bound as JSON: one number when uniform, else nested lists; +-inf as strings."""

    def one(v: float) -> float | int | str:
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)

    flat = np.asarray(values, dtype=np.float64)
    if flat.size and (flat == flat.flat[0]).all():
        return one(float(flat.flat[0]))
    return np.vectorize(one, otypes=[object])(flat).tolist()


def describe_space(space: gym.Space) -> dict[str, Any]:
    """A Box or Discrete space as JSON: type, shape, dtype, and bounds or n."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _bound(space.low),
            "high": _bound(space.high),
        }
    raise ConfigError(f"cannot describe space {space}; allowed: Box or Discrete")


def preprocessing(
    spec: EnvSpec, torso: str, env_id: str | None, frame_stack: int
) -> dict[str, list[str]]:
    """What happens to an observation: the env wrappers qlearn applies, then the graph's steps."""
    wrappers: list[str] = []
    if env_id is not None and env_id.startswith("ALE/"):
        wrappers = [
            "AtariPreprocessing(frame_skip=4, screen_size=84, grayscale, noop_max=30)",
            f"FrameStackObservation({frame_stack})",
        ]
    elif env_id is not None and env_id.startswith("MinAtar/"):
        wrappers = ["channels first: (10, 10, C) -> (C, 10, 10) uint8"]
    if spec.obs_kind == "discrete":
        steps = [f"one-hot over {spec.obs_shape[0]} states"]
    elif spec.obs_dtype == "uint8":
        steps = ["cast to float32"] + (["divide by 255"] if torso == "nature_cnn" else [])
    else:
        steps = [] if spec.obs_dtype == "float32" else ["cast to float32"]
    return {"env_wrappers": wrappers, "in_graph": steps}


def input_description(spec: EnvSpec) -> dict[str, Any]:
    """The graph input a client sends: raw observations with a leading batch axis."""
    if spec.obs_kind == "discrete":
        return {"name": INPUT_NAME, "dtype": "int64", "shape": ["batch"]}
    return {"name": INPUT_NAME, "dtype": spec.obs_dtype, "shape": ["batch", *spec.obs_shape]}


def describe_policy(
    agent: DQNLearner,
    observation_space: gym.Space,
    action_space: gym.Space,
    env_id: str | None,
    env_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Everything a client needs to know about a policy, as JSON (the sidecar without files)."""
    c = agent.config
    torso = pick_network(c, agent.spec)
    return {
        "qlearn_version": __version__,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "env_spec": agent.spec.to_dict(),
        "observation_space": describe_space(observation_space),
        "action_space": describe_space(action_space),
        "input": input_description(agent.spec),
        "outputs": {
            OUTPUT_NAMES[0]: {"dtype": "float32", "shape": ["batch", agent.num_actions]},
            OUTPUT_NAMES[1]: {"dtype": "int64", "shape": ["batch"]},
        },
        "preprocessing": preprocessing(agent.spec, torso, env_id, c.frame_stack),
        "network": {
            "torso": torso,
            "hidden_sizes": list(c.hidden_sizes),
            "dueling": c.dueling,
            "noisy": c.noisy,
            "distributional": c.distributional,
            "num_atoms": agent.num_atoms,
        },
    }


# ---------------------------------------------------------------------- check observations


def observations_from_space(
    spec: EnvSpec, space: gym.Space, n: int, rng: np.random.Generator
) -> np.ndarray:
    """`n` raw observations drawn uniformly from the observation space.

    Integer Boxes (images) are drawn over their whole range; float Box dimensions whose bound is
    beyond +-1e3 (unbounded in practice) are drawn from [-10, 10] instead.

    Returns:
        (n, *obs_shape) in the space's dtype, or (n,) int64 for a Discrete space.
    """
    if spec.obs_kind == "discrete":
        return rng.integers(spec.obs_shape[0], size=n, dtype=np.int64)
    assert isinstance(space, gym.spaces.Box)
    dtype = np.dtype(spec.obs_dtype)
    low = np.broadcast_to(np.asarray(space.low, dtype=np.float64), spec.obs_shape)
    high = np.broadcast_to(np.asarray(space.high, dtype=np.float64), spec.obs_shape)
    if dtype.kind in "iub":
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        lo = np.maximum(low, info.min if info else 0)
        hi = np.minimum(high, info.max if info else 1)
        draws = np.floor(rng.random((n, *spec.obs_shape)) * (hi - lo + 1) + lo)
        return np.minimum(draws, hi).astype(dtype)
    lo = np.where(np.abs(low) <= UNBOUNDED, low, -UNBOUNDED_DRAW)
    hi = np.where(np.abs(high) <= UNBOUNDED, high, UNBOUNDED_DRAW)
    hi = np.maximum(hi, lo)
    return (lo + rng.random((n, *spec.obs_shape)) * (hi - lo)).astype(dtype)


def observations_from_episodes(
    env: gym.Env,
    act: Callable[[np.ndarray], int],
    n: int,
    rng: np.random.Generator,
    seed: int,
) -> np.ndarray:
    """`n` observations met in episodes of `env`, acting greedily with some random actions.

    Returns:
        (n, *obs_shape) raw observations (or (n,) for Discrete ones).
    """
    seen: list[np.ndarray] = []
    obs, _ = env.reset(seed=seed)
    episode = 0
    while len(seen) < n:
        obs = np.asarray(obs)
        seen.append(obs)
        if rng.random() < EPISODE_RANDOM_ACTIONS:
            action = int(rng.integers(env.action_space.n))  # type: ignore[attr-defined]
        else:
            action = act(obs)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    return np.stack(seen)


# ---------------------------------------------------------------------- export


def check_output_path(path: str | Path, format: str = "onnx") -> Path:
    """The output path, or ConfigError for an unknown format, a directory or a wrong suffix."""
    if format not in FORMATS:
        raise ConfigError(f"format = {format!r} is unknown; allowed: {', '.join(FORMATS)}")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out {str(path)!r} is a directory; give a file path ending in .onnx")
    if path.suffix != ".onnx":
        raise ConfigError(f"--out {str(path)!r} does not end in .onnx; allowed: a *.onnx file")
    folder = path.parent if str(path.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {str(path)!r} lies under {str(folder)!r}, which is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test."):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable ({exc.strerror})"
        ) from None
    return path


def sidecar_path(onnx_path: str | Path) -> Path:
    """The JSON sidecar of an ONNX file: `policy.onnx` -> `policy.onnx.json`."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + SIDECAR_SUFFIX)


def export_onnx(
    agent: DQNLearner,
    env: gym.Env,
    path: str | Path,
    *,
    env_id: str | None,
    env_kwargs: dict[str, Any] | None = None,
    num_checks: int = NUM_CHECKS,
    seed: int = 0,
) -> ExportReport:
    """Export `agent`'s greedy policy to `path` (an .onnx file) and its sidecar, after checking it.

    Args:
        agent: a trained (or untrained) DQN learner.
        env: an env with the agent's spaces; its observation space and episodes feed the check.
        path: where the graph goes; the sidecar goes to `path` + `.json`.
        env_id: recorded in the sidecar for clients.
        env_kwargs: recorded in the sidecar.
        num_checks: observations of the check, half from the space and half from episodes.
        seed: seeds the check's draws and episodes.

    Raises:
        ConfigError: a bad path or a missing package.
        ExportError: onnxruntime's Q-values or actions differ from torch's; nothing is written.
    """
    path = check_output_path(path)
    if num_checks < 2:
        raise ConfigError(f"num_checks = {num_checks} is out of range; allowed: >= 2")
    spec = agent.spec
    description = describe_policy(
        agent, env.observation_space, env.action_space, env_id, dict(env_kwargs or {})
    )
    policy = GreedyPolicy(agent.q_net, spec, agent.config.distributional, agent.support)
    rng = np.random.default_rng(seed)
    num_from_space = num_checks // 2
    from_space = observations_from_space(spec, env.observation_space, num_from_space, rng)

    was_training = agent.q_net.training
    agent.q_net.eval()
    try:

        def act(obs: np.ndarray) -> int:
            return int(agent.q_values(obs[None]).argmax())

        from_episodes = observations_from_episodes(env, act, num_checks - num_from_space, rng, seed)
        observations = np.concatenate([from_space, from_episodes.astype(from_space.dtype)])

        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _export_graph(policy, observations[:2], tmp)
            diffs = _check(policy, agent, onnx_session(tmp, threads=1), observations)
            data = tmp.read_bytes()
            report = ExportReport(
                onnx_path=path,
                sidecar_path=sidecar_path(path),
                num_from_space=num_from_space,
                num_from_episodes=len(from_episodes),
                **diffs,
            )
            sidecar = {
                "format": SIDECAR_FORMAT,
                "format_version": SIDECAR_VERSION,
                **description,
                "onnx": {
                    "file": path.name,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "opset": OPSET,
                    "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True)",
                },
                "check": report.summary(),
            }
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            # The graph first, then its sidecar: a crash in between leaves a sidecar whose
            # SHA-256 no longer matches, which loading refuses.
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        checkpoint.atomic_write_text(report.sidecar_path, json.dumps(sidecar, indent=2))
    finally:
        agent.q_net.train(was_training)
    return report


def _check(
    policy: GreedyPolicy, agent: DQNLearner, session: Any, observations: np.ndarray
) -> dict[str, Any]:
    """Run torch (the exported module and the agent's own path) and onnxruntime on every
    observation; ExportError unless they agree. Returns the ExportReport's diff fields."""
    max_abs, max_scaled, ties = 0.0, 0.0, 0
    for start in range(0, len(observations), CHECK_BATCH):
        batch = observations[start : start + CHECK_BATCH]
        with torch.inference_mode():
            q_torch, a_torch = (t.numpy() for t in policy(torch.from_numpy(batch)))
        q_agent = agent.q_values(batch)  # the agent's encoder and forward pass, noise off
        q_onnx, a_onnx = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        if q_onnx.shape != q_torch.shape or a_onnx.shape != a_torch.shape:
            raise ExportError(
                f"the ONNX graph returned shapes {q_onnx.shape} and {a_onnx.shape}; "
                f"torch returned {q_torch.shape} and {a_torch.shape}"
            )
        scale = np.maximum(1.0, np.abs(q_torch))
        for name, other in (("onnxruntime", q_onnx), ("the agent's own forward pass", q_agent)):
            scaled = np.abs(other - q_torch) / scale
            if not (scaled <= TOLERANCE).all():  # also catches NaN
                row = int(np.where(np.isnan(scaled), np.inf, scaled).max(1).argmax())
                raise ExportError(
                    f"{name} and the exported torch module disagree on check observation "
                    f"{start + row}: Q-values {other[row].tolist()} vs {q_torch[row].tolist()} "
                    f"(allowed: |diff| <= {TOLERANCE:g} * max(1, |Q|)); nothing was written"
                )
        max_abs = max(max_abs, float(np.abs(q_onnx - q_torch).max()))
        max_scaled = max(max_scaled, float((np.abs(q_onnx - q_torch) / scale).max()))
        for row in np.flatnonzero(a_onnx != a_torch):
            q = q_torch[row]
            if abs(q[a_onnx[row]] - q[a_torch[row]]) > TOLERANCE * max(1.0, abs(q).max()):
                raise ExportError(
                    f"onnxruntime chose action {a_onnx[row]} and torch action {a_torch[row]} "
                    f"on check observation {start + row} (Q-values {q.tolist()}); nothing was "
                    "written"
                )
            ties += 1
    return {"max_abs_diff": max_abs, "max_scaled_diff": max_scaled, "num_action_ties": ties}


# ---------------------------------------------------------------------- reading


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """Read and check the sidecar of an ONNX policy, including the graph's size and SHA-256.

    Raises:
        CheckpointError: the graph or its sidecar is missing, malformed, foreign, newer than this
            qlearn reads, or the graph does not match the sidecar's hash.
    """
    return read_policy(onnx_path)[0]


def read_policy(onnx_path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The checked sidecar and the graph's bytes, read once (what was hashed is what runs).

    Raises:
        CheckpointError: as `read_sidecar`.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise CheckpointError(f"ONNX policy {str(onnx_path)!r} does not exist or is not a file")
    side = sidecar_path(onnx_path)
    if not side.is_file():
        raise CheckpointError(
            f"ONNX policy {str(onnx_path)!r} has no sidecar {side.name!r}; export it with "
            "`qlearn export`, which writes both"
        )
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{str(side)!r} is malformed JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{str(side)!r} is not a qlearn ONNX sidecar")
    version = data.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= SIDECAR_VERSION:
        raise CheckpointError(
            f"{str(side)!r} has format version {version!r}; this qlearn reads 1 to "
            f"{SIDECAR_VERSION}"
        )
    try:
        EnvSpec.from_dict(data["env_spec"])
        size, digest = int(data["onnx"]["bytes"]), str(data["onnx"]["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(side)!r} has a malformed entry: {exc!r}") from None
    actual = onnx_path.read_bytes()
    if len(actual) != size or hashlib.sha256(actual).hexdigest() != digest:
        raise CheckpointError(
            f"ONNX policy {str(onnx_path)!r} does not match its sidecar (size or SHA-256 "
            "differ); export it again"
        )
    return data, actual
