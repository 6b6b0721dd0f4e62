"""Where the parts run: `LocalBackend` calls them in this process, `RayBackend` makes them Ray
actors. The driver speaks only this small interface (spawn, call, put, get, wait), so one loop
serves both."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from qlearn.errors import ConfigError, QlearnError, TrainingError


class ActorFailure(Exception):
    """A call's actor died (its process was killed, its node lost) before it answered.

    `temporary` is True when Ray says the actor is restarting (the call may be retried) rather
    than dead."""

    def __init__(self, message: str, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class LocalRef:
    """A finished call's result, standing in for a Ray ObjectRef."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class LocalBackend:
    """Runs every part inside this process; a call runs when it is made."""

    name = "local"

    def spawn(self, cls: type, args: tuple[Any, ...], *, restarts: int, name: str) -> Any:
        return cls(*args)

    def call(self, handle: Any, method: str, *args: Any, num_returns: int = 1) -> Any:
        values = [a.value if isinstance(a, LocalRef) else a for a in args]
        result = getattr(handle, method)(*values)
        if num_returns == 1:
            return LocalRef(result)
        return tuple(LocalRef(r) for r in result)

    def put(self, value: Any) -> LocalRef:
        return LocalRef(value)

    def get(self, ref: LocalRef) -> Any:
        return ref.value

    def wait(self, refs: Sequence[Any], timeout: float) -> list[Any]:
        return list(refs)

    def kill(self, handle: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass


class RayBackend:
    """Runs each part as a Ray actor. Starts a local single-machine cluster unless `address`
    names one to join (or Ray is already initialised in this process, whose cluster it uses).

    Args:
        address: a Ray cluster address ("auto", "ray://host:10001", "host:6379"); None starts a
            local cluster on 127.0.0.1.
        num_cpus: logical CPUs of a local cluster.
        num_cpus_per_actor: CPUs Ray reserves for each actor.
    """

    name = "ray"

    def __init__(self, address: str | None, num_cpus: int, num_cpus_per_actor: float) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "distributed training needs Ray; install it with pip install 'qlearn[ray]'"
            ) from None
        self.ray = ray
        self.num_cpus_per_actor = num_cpus_per_actor
        self.owns_cluster = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            # Workers import qlearn the way this process did.
            env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
            if env:
                kwargs["runtime_env"] = {"env_vars": env}
            if address is None:
                kwargs.update(num_cpus=num_cpus, _node_ip_address="127.0.0.1")
            try:
                ray.init(address=address, **kwargs)
            except ConnectionError as exc:
                raise ConfigError(
                    f"--ray-address {address!r}: cannot join a Ray cluster there ({exc})"
                ) from None
            self.owns_cluster = True
        self.failures: tuple[type[BaseException], ...] = (ray.exceptions.RayActorError,)

    def spawn(self, cls: type, args: tuple[Any, ...], *, restarts: int, name: str) -> Any:
        remote = self.ray.remote(cls).options(
            num_cpus=self.num_cpus_per_actor,
            max_restarts=restarts,
            max_task_retries=0,
        )
        return remote.remote(*args)

    def call(self, handle: Any, method: str, *args: Any, num_returns: int = 1) -> Any:
        return getattr(handle, method).options(num_returns=num_returns).remote(*args)

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except self.failures as exc:
            temporary = isinstance(exc, self.ray.exceptions.ActorUnavailableError)
            raise ActorFailure(str(exc).strip().splitlines()[0], temporary) from exc
        except self.ray.exceptions.RayTaskError as exc:
            # An error raised inside a part (an env that fails, a bad config): the part's own
            # error, not Ray's wrapper with its remote traceback.
            cause = exc.cause
            if isinstance(cause, QlearnError):
                raise cause from None
            raise TrainingError(f"{type(cause).__name__} in a remote call: {cause}") from None

    def wait(self, refs: Sequence[Any], timeout: float) -> list[Any]:
        if not refs:
            return []
        ready, _ = self.ray.wait(list(refs), num_returns=1, timeout=timeout)
        if ready:  # everything else that is ready too, without waiting
            ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
        return ready

    def kill(self, handle: Any) -> None:
        self.ray.kill(handle, no_restart=True)

    def shutdown(self) -> None:
        if self.owns_cluster:
            self.ray.shutdown()
