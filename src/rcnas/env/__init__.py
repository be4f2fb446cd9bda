"""The agent's world: a search of a few candidate evaluations as an episode (`SearchEpisode`), what the
agent sees of tasks and candidates (`rcnas.env.features`), and the same episode as a gymnasium env."""
from rcnas.env.compression import OBS_DIM, CompressionEnv
from rcnas.env.episode import SearchEpisode

__all__ = ["OBS_DIM", "CompressionEnv", "SearchEpisode"]
