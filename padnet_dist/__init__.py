"""padnet-dist: distributed training of PAD-Net (Xu et al., CVPR 2018)."""

__version__ = "0.1.0"
