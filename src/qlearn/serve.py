"""Serve a greedy policy over HTTP: FastAPI on uvicorn, bound to 127.0.0.1 unless told otherwise.

    POST /predict  {"obs": OBS}          -> {"action": a, "q_values": [...]}
                   {"obs": [OBS, ...]}   -> {"actions": [...], "q_values": [[...], ...]}
    GET  /info     env id, spaces, input, preprocessing, network, model version, limits
    GET  /health   {"status": "ok"}

`Policy` predicts from an exported ONNX file (onnxruntime, with the spaces from its sidecar) or
from a qlearn run or checkpoint directory (torch, through `DQN.load`); both go through the same
request checks. Observations are sent raw, as the env returns them.

Every request is checked before the model sees it, and a bad one gets a 4xx answer whose
`detail` names the problem: the body size (413, refused from Content-Length before reading and
counted while reading), the Content-Type (415), the JSON itself (400), the schema: one key, `obs`
(422), the batch size (413), and the observations' shape, type and values against the
observation space (422): finite numbers only, integers in range for Discrete and uint8 image
observations. Box bounds are not enforced. Nothing is unpickled and nothing sent is evaluated.
fastapi and uvicorn (the `serve` extra) are imported when an app is made.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run
# time, and `Request` is imported inside `make_app`, where string annotations cannot find it.
import contextlib
import dataclasses
import json
import queue
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qlearn import __version__
from qlearn.envs import EnvSpec
from qlearn.errors import CheckpointError, ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_BATCH = 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_CONNECTIONS = 128  # uvicorn answers 503 beyond this many open connections
FLOAT32_MAX = float(np.finfo(np.float32).max)

Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class RequestError(Exception):
    """A request the server refuses: its HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------- the policy


@dataclasses.dataclass
class Policy:
    """A greedy policy behind one interface, whatever it was loaded from.

    Attributes:
        info: the policy's description (as in the ONNX sidecar): env id, spaces, input,
            preprocessing, network; `model` says what was loaded.
        spec: the observation and action spaces that requests are checked against.
        forward: (batch, *obs_shape) raw observations in the space's dtype ->
            ((batch, num_actions) float32 Q-values, (batch,) int64 greedy actions).
    """

    info: dict[str, Any]
    spec: EnvSpec
    forward: Forward

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> "Policy":
        """An ONNX file (with its sidecar) or a run/checkpoint directory."""
        path = Path(path)
        if path.is_dir():
            return cls.from_run(path)
        if path.suffix == ".onnx":
            return cls.from_onnx(path, threads)
        if not path.exists():
            raise CheckpointError(f"{str(path)!r} does not exist; give a run dir or an .onnx file")
        raise CheckpointError(
            f"{str(path)!r} is neither a run/checkpoint directory nor an .onnx file "
            "(qlearn never loads pickled files such as .pt, .pth or .pkl)"
        )

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int = 1) -> "Policy":
        """An exported graph, run by onnxruntime; its sidecar (size and SHA-256 checked) gives
        the spaces."""
        from qlearn.export import INPUT_NAME, OUTPUT_NAMES, onnx_session, read_policy

        path = Path(path)
        sidecar, graph = read_policy(path)
        session = onnx_session(graph, threads)
        spec = EnvSpec.from_dict(sidecar["env_spec"])
        outputs = list(OUTPUT_NAMES)

        def forward(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            q, actions = session.run(outputs, {INPUT_NAME: obs})
            return q, actions

        info = {k: v for k, v in sidecar.items() if k not in ("format", "format_version", "onnx")}
        info["model"] = {
            "format": "onnx",
            "file": path.name,
            "sha256": sidecar["onnx"]["sha256"],
            "check": sidecar.get("check"),
        }
        return cls(info, spec, forward)

    @classmethod
    def from_run(cls, path: str | Path) -> "Policy":
        """A run (its best, else final model) or a checkpoint directory, run by torch."""
        from qlearn import checkpoint
        from qlearn.export import describe_policy
        from qlearn.train.dqn import DQN

        path = Path(path)
        model_dir = checkpoint.resolve_model_path(path)
        dqn = DQN.load(model_dir)
        learner = dqn.learner
        learner.q_net.eval()  # greedy: noisy layers use their mean weights
        env = dqn.make_eval_env()
        try:
            info = describe_policy(
                learner, env.observation_space, env.action_space, dqn.env_id, dqn.env_kwargs
            )
        finally:
            env.close()
        meta = checkpoint.read_meta(model_dir)
        info["model"] = {
            "format": checkpoint.FORMAT_NAME,
            "checkpoint": model_dir.name,
            "step": dqn.counters.step,
            "sha256": meta["files"][checkpoint.MODEL]["sha256"],
        }

        def forward(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            q = learner.q_values(obs).astype(np.float32, copy=False)
            return q, q.argmax(axis=1)

        return cls(info, dqn.spec, forward)

    def predict(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Q-values and greedy actions for a batch that `parse_observations` accepted."""
        return self.forward(obs)


# ---------------------------------------------------------------------- request checks


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def parse_observations(value: Any, spec: EnvSpec, max_batch: int) -> tuple[np.ndarray, bool]:
    """Check a decoded JSON `obs` against the observation space and convert it.

    Args:
        value: the `obs` of a request: one observation or a list of them.
        spec: the observation space (kind, shape, dtype).
        max_batch: the most observations one request may hold.

    Returns:
        ((batch, *obs_shape) array in the space's dtype, or (batch,) int64 for Discrete
        observations; True when the request held one observation rather than a batch).

    Raises:
        RequestError: 422 naming what is wrong, or 413 for a batch over `max_batch`.
    """
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise RequestError(
            422, "obs is not a rectangular array of numbers (rows of different lengths?)"
        ) from None
    kind = array.dtype.kind
    if kind in "USO":
        what = "strings" if kind in "US" else "null, objects, mixed types or integers too large"
        raise RequestError(422, f"obs holds {what}; allowed: numbers only")
    if kind == "b":
        raise RequestError(422, "obs holds true/false; allowed: numbers only")
    discrete = spec.obs_kind == "discrete"
    obs_shape = () if discrete else spec.obs_shape
    if array.ndim and array.shape[0] == 0:
        raise RequestError(422, "obs is an empty list; allowed: 1 or more observations")
    if array.shape == obs_shape:
        single = True
        array = array[None]
    elif array.ndim == len(obs_shape) + 1 and array.shape[1:] == obs_shape:
        single = False
    else:
        one = "an integer (the state)" if discrete else f"shape {_shape_text(obs_shape)}"
        many = "a list of them" if discrete else f"shape (batch, {', '.join(map(str, obs_shape))})"
        raise RequestError(
            422,
            f"obs has shape {_shape_text(array.shape)}; allowed: {one} for one observation, "
            f"or {many} for a batch",
        )
    if len(array) > max_batch:
        raise RequestError(
            413, f"obs holds a batch of {len(array)}; allowed: at most {max_batch} per request"
        )
    if kind == "f" and not np.isfinite(array).all():
        raise RequestError(422, "obs holds NaN or infinity; allowed: finite numbers")
    dtype = np.dtype("int64" if discrete else spec.obs_dtype)
    if dtype.kind == "f":
        if np.abs(array).max() > np.finfo(dtype).max:
            raise RequestError(
                422, f"obs holds values beyond {dtype}'s range (+-{np.finfo(dtype).max:.4g})"
            )
        return array.astype(dtype), single
    if kind == "f" and not (array == np.round(array)).all():
        raise RequestError(422, f"obs holds non-integer values; allowed: integers ({dtype})")
    if discrete:
        low, high, what = 0, spec.obs_shape[0] - 1, "states"
    elif dtype.kind == "b":
        low, high, what = 0, 1, "bool"
    else:
        info = np.iinfo(dtype)
        low, high, what = int(info.min), int(info.max), str(dtype)
    if array.min() < low or array.max() > high:
        raise RequestError(422, f"obs holds values outside {low}..{high}; allowed: {what} in range")
    return array.astype(dtype), single


def _check_body(body: bytes, content_type: str | None) -> Any:
    """The decoded JSON `obs` of a /predict body, or RequestError naming what is wrong."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise RequestError(
            415,
            f"Content-Type is {content_type!r}; send the body as JSON with "
            "Content-Type: application/json",
        )

    def refuse(token: str) -> Any:
        raise RequestError(422, f"obs holds {token}; allowed: finite numbers")

    try:
        data = json.loads(body, parse_constant=refuse)  # NaN, Infinity, -Infinity
    except RecursionError:
        raise RequestError(400, "the JSON body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(
            422, f'the body is a JSON {type(data).__name__}; allowed: {{"obs": ...}}'
        )
    if set(data) != {"obs"}:
        raise RequestError(
            422, f'the body has keys {sorted(data)}; allowed: exactly one key, "obs"'
        )
    return data["obs"]


def _encode_answer(q: np.ndarray, actions: np.ndarray, single: bool) -> dict[str, Any]:
    if not np.isfinite(q).all():
        raise RequestError(
            422,
            "the model's Q-values for these observations are not finite; the observations lie "
            "far outside what it can handle",
        )
    if single:
        return {"action": int(actions[0]), "q_values": q[0].tolist()}
    return {"actions": actions.tolist(), "q_values": q.tolist()}


# ---------------------------------------------------------------------- the app


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413, from Content-Length before
    reading and by counting while reading (chunked bodies); the app sees the buffered body."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        too_large = JSONResponse(
            {"detail": f"the body is over the limit of {self.limit} bytes"}, status_code=413
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    bad = JSONResponse({"detail": "Content-Length is not a number"}, 400)
                    await bad(scope, receive, send)
                    return
                if declared > self.limit:
                    await too_large(scope, receive, send)
                    return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            body += message.get("body", b"")
            if len(body) > self.limit:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def make_app(
    policy: Policy, *, max_batch: int = MAX_BATCH, max_body_bytes: int = MAX_BODY_BYTES
) -> Any:
    """The FastAPI app serving `policy`: /predict, /info and /health.

    Args:
        policy: what answers /predict.
        max_batch: the most observations one request may hold (413 beyond).
        max_body_bytes: the largest request body (413 beyond, refused before parsing).
    """
    if max_batch < 1:
        raise ConfigError(f"max_batch = {max_batch} is out of range; allowed: >= 1")
    if max_body_bytes < 64:
        raise ConfigError(f"max_body_bytes = {max_body_bytes} is out of range; allowed: >= 64")
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse
        from pydantic import BaseModel
    except ImportError:
        raise ConfigError("serving needs fastapi and uvicorn; install qlearn[serve]") from None

    class PredictRequest(BaseModel):
        """One raw observation, or a list of them (a batch)."""

        obs: Any

    app = FastAPI(
        title="qlearn policy server",
        version=__version__,
        description="Greedy actions and Q-values of a trained qlearn policy.",
        docs_url=None,  # the interactive pages load scripts from a CDN; /openapi.json stays
        redoc_url=None,
    )
    info = {
        **policy.info,
        "limits": {"max_batch": max_batch, "max_body_bytes": max_body_bytes},
    }
    spec = policy.spec

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: answers while the server runs."""
        return {"status": "ok"}

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        """The policy: env id, spaces, input, preprocessing, network, model version, limits."""
        return info

    @app.post(
        "/predict",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
    )
    async def predict(request: Request) -> JSONResponse:
        """Greedy action(s) and Q-values for one raw observation or a batch of them."""
        obs = _check_body(await request.body(), request.headers.get("content-type"))
        batch, single = parse_observations(obs, spec, max_batch)
        q, actions = policy.predict(batch)
        return JSONResponse(_encode_answer(q, actions, single))

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


def listen(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one.

    Raises:
        ConfigError: the address cannot be used (taken, not on this machine, bad host name).
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port = {port} is out of range; allowed: 0 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on host {host!r}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The http:// URL of a listening socket."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def serve(
    policy: Policy,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = MAX_BODY_BYTES,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve `policy` until SIGINT/SIGTERM (one process; requests are computed one at a time).

    Args:
        policy: what answers /predict.
        host: the address to bind; 127.0.0.1 keeps the server local to this machine.
        port: the TCP port; 0 picks a free one (`on_ready` receives the URL).
        max_batch: the most observations one request may hold.
        max_body_bytes: the largest request body.
        on_ready: called with the server's URL once the socket listens.
        log_level: uvicorn's log level.
    """
    app = make_app(policy, max_batch=max_batch, max_body_bytes=max_body_bytes)
    import uvicorn

    sock = listen(host, port)
    try:
        config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=False,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=5,
            server_header=False,
        )
        if on_ready is not None:
            on_ready(url_of(sock))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


class ServerProcess:
    """`qlearn serve MODEL` in a child process on a free port, until stopped.

        with ServerProcess("policy.onnx") as server:
            urllib.request.urlopen(server.url + "/health")

    For tests, benchmarks and examples: it starts the real server (the CLI command), reads the
    URL from its first line, waits until /health answers, and on exit stops it with SIGTERM
    (then SIGKILL if it has not stopped within `stop_timeout` seconds).

    Args:
        model: a run dir, a checkpoint dir or an exported .onnx file.
        host: the address to bind.
        args: more `qlearn serve` options, e.g. ["--max-batch", "64"].
        startup_timeout: seconds to wait for /health before giving up.
        stop_timeout: seconds to wait for a clean exit.
        env: the child's environment (default: this process's).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        host: str = DEFAULT_HOST,
        args: Sequence[str] = (),
        startup_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = [
            sys.executable,
            "-c",
            "from qlearn.cli import main; main()",
            "serve",
            str(model),
            "--host",
            host,
            "--port",
            "0",
            *args,
        ]
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.env = env
        self.url = ""
        self.process: subprocess.Popen | None = None
        self._stderr: Any = None

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Start the server and wait until it answers /health; its URL.

        Raises:
            ServeError: it exited, printed no URL, or did not answer within startup_timeout.
        """
        from qlearn.errors import ServeError

        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  closed by stop()
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        deadline = time.monotonic() + self.startup_timeout
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None

        def read() -> None:  # the server prints one line; keep draining so it never blocks
            for line in stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=read, daemon=True).start()
        try:
            try:
                first = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                first = ""
            match = re.search(r" on (http://\S+?);", first)
            if match is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(10)  # stdout closed: it is exiting; let stderr fill
                raise ServeError(f"the server did not start: {self._error_text() or first!r}")
            self.url = match.group(1)
            while not self._healthy():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise ServeError(f"the server at {self.url} did not answer /health")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def _error_text(self) -> str:
        if self.process is not None and self.process.poll() is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace").strip()

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL); its exit code, or None if never started."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return process.returncode
