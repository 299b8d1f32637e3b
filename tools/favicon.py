"""Writes _static/favicon.png: the KDE of three emitters, as the package draws them.

    python tools/favicon.py
"""
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import ualm

theta = torch.tensor([[[2.2, 2.6], [5.0, 4.4], [3.0, 5.6]]], dtype=torch.float64)
y = ualm.kde(theta, shape=(8, 8), sigma_y=2.5)[0]
plt.imsave(Path(__file__).resolve().parents[1] / "_static" / "favicon.png", y.numpy(), cmap="inferno")
