"""Environment construction, space checks, observation encoding, and toy MDPs with known Q*."""

from qlearn.envs.core import (
    EnvSpec,
    ObsEncoder,
    check_discrete_env,
    env_spec,
    make_env,
    make_vector_env,
    stacked_frame_count,
)
from qlearn.envs.toy import CHAIN_ID, ChainEnv

__all__ = [
    "CHAIN_ID",
    "ChainEnv",
    "EnvSpec",
    "ObsEncoder",
    "check_discrete_env",
    "env_spec",
    "make_env",
    "make_vector_env",
    "stacked_frame_count",
]
