"""Neural networks: the DeepSTORM KDE estimator φ (and, later, the diffusion U-Net)."""
from .deepstorm import DeepSTORM, DeepSTORMConfig, deepstorm_loss, n_parameters

__all__ = ["DeepSTORM", "DeepSTORMConfig", "deepstorm_loss", "n_parameters"]
