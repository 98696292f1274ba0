"""The names a PAD-Net is described by: tasks, variants, distillation modules and backbones (paper §3).

The one owner of these names. Torch-free, so the config validates against it without importing torch; the model
reuses it, and its registries (``model.DISTILLATIONS``, ``model.BACKBONES``) hold exactly these keys (a test checks).
Order matters where a tuple is iterated: outputs, heads and messages are made in this order.
"""

from __future__ import annotations

TASKS = ("depth", "normals", "semantic", "contour")  # intermediate tasks, predicted by the front end's heads
FINAL_TASKS = ("depth", "semantic")  # the tasks the decoders refine; they get N feature channels, the others N/2
VARIANTS = ("frontend", "padnet", "mtdn_mds")  # what ModelConfig's docstring describes
DISTILLATIONS = ("A", "B", "C")  # §3.4: concatenation, message passing, attention-guided message passing
BACKBONES = ("alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
