"""Environment construction, space checks and observation encoding."""

from qlearn.envs.core import (
    EnvSpec,
    ObsEncoder,
    check_discrete_env,
    env_spec,
    make_env,
    make_vector_env,
    stacked_frame_count,
)

__all__ = [
    "EnvSpec",
    "ObsEncoder",
    "check_discrete_env",
    "env_spec",
    "make_env",
    "make_vector_env",
    "stacked_frame_count",
]
