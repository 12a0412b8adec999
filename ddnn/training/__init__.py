"""Training multi-exit networks: joint (weighted per-exit losses) and separate (exits only)."""

from ddnn.training.config import TrainConfig
from ddnn.training.loop import train

__all__ = ["TrainConfig", "train"]
