"""``padnet_dist/model/`` is pure torch: no ranks, devices, storage, DeepSpeed or Ray (STYLE practice 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import padnet_dist.model

MODEL_DIR = Path(padnet_dist.model.__file__).parent
FORBIDDEN_IMPORTS = (
    "torch.distributed",
    "deepspeed",
    "ray",
    "boto3",
    "botocore",
    "padnet_dist.storage",
    "padnet_dist.train",
)
FORBIDDEN_TEXT = ("os.environ", "getenv", ".cuda(", "torch.distributed", 'device("cuda', "SLURM", "RANK")


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_model_package_imports_nothing_distributed_or_storage() -> None:
    files = sorted(MODEL_DIR.glob("*.py"))
    assert len(files) >= 7
    for path in files:
        source = path.read_text()
        for name in _imports(ast.parse(source)):
            bad = [f for f in FORBIDDEN_IMPORTS if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.name} imports {name}"
        for text in FORBIDDEN_TEXT:
            assert text not in source, f"{path.name} contains {text!r}"
