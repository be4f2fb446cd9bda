"""The gymnasium environment of compression episodes, and the rewards."""
from rcnas.env.rewards import REWARDS, RewardInput

__all__ = ["CompressionEnv", "OBS_DIM", "observation", "REWARDS", "RewardInput"]


def __getattr__(name: str):
    # lazy: the environment needs rcnas.search, which itself needs the rewards above
    if name in ("CompressionEnv", "OBS_DIM", "observation"):
        from rcnas.env import compression
        return getattr(compression, name)
    raise AttributeError(name)
