"""The features contract every backbone trunk of the front end honours (timm's ``feature_info`` idea)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureInfo:
    """One backbone stage: its name, channel count and stride relative to the input.

    A trunk's ``forward(rgb (B, 3, H, W))`` returns ``{name: (B, channels, ceil(H / stride), ceil(W / stride))}``
    for every entry of its ``feature_info``, finest first; the last entry is the map the front end aggregates onto.
    """

    name: str
    channels: int
    stride: int
