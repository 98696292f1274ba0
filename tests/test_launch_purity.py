"""Only ``padnet_dist/launch/`` reads rank variables from the environment (STYLE practice 7).

Everything else takes the ``World`` the launch layer built. Scanned with ``ast``: ``os.environ[...]``,
``os.environ.get(...)``, ``os.getenv(...)`` and ``... in os.environ`` naming a rank variable are reads; writes
(exporting the World for DeepSpeed) are allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import padnet_dist

PACKAGE_DIR = Path(padnet_dist.__file__).parent
REPO = PACKAGE_DIR.parent
LAUNCH_DIR = PACKAGE_DIR / "launch"
SCANNED_DIRS = (PACKAGE_DIR, REPO / "bench", REPO / "cluster")  # the code users run; tests may read anything
RANK_VARIABLES = {
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "ROLE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
}
RANK_PREFIXES = ("SLURM_", "TORCHELASTIC_", "OMPI_COMM_WORLD_", "PMI_")


def _is_rank_variable(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    return node.value in RANK_VARIABLES or node.value.startswith(RANK_PREFIXES)


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def environment_reads(source: str) -> list[tuple[int, str]]:
    """``(line, variable)`` for every read of a rank variable from the process environment in ``source``."""
    reads = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            getter = node.func.attr == "get" and _is_environ(node.func.value)
            if not (getter or node.func.attr == "getenv"):
                continue
            key = node.args[0]
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            if not _is_environ(node.comparators[0]):
                continue
            key = node.left
        else:
            continue
        if _is_rank_variable(key):
            reads.append((node.lineno, key.value))
    return reads


def test_the_scanner_sees_each_way_of_reading():
    source = (
        "import os\n"
        "a = os.environ['RANK']\n"
        "b = os.environ.get('SLURM_PROCID')\n"
        "c = os.getenv('MASTER_PORT', '1')\n"
        "d = 'LOCAL_RANK' in os.environ\n"
        "os.environ['RANK'] = '0'\n"
        "os.environ.update(WORLD_SIZE='1')\n"
        "e = os.environ.get('HOME')\n"
    )
    assert environment_reads(source) == [(2, "RANK"), (3, "SLURM_PROCID"), (4, "MASTER_PORT"), (5, "LOCAL_RANK")]


def test_nothing_outside_the_launch_package_reads_rank_variables():
    files = [p for d in SCANNED_DIRS for p in sorted(d.rglob("*.py")) if LAUNCH_DIR not in p.parents]
    assert len(files) >= 30
    found = [
        f"{path.relative_to(REPO)}:{line} reads {name}"
        for path in files
        for line, name in environment_reads(path.read_text())
    ]
    assert not found, "rank variables are read outside padnet_dist/launch/ (take a World instead): " + "; ".join(found)


def test_the_launch_package_is_where_they_are_read():
    reads = [r for p in sorted(LAUNCH_DIR.glob("*.py")) for r in environment_reads(p.read_text())]
    assert reads, "the scanner found no read in padnet_dist/launch/: it no longer sees how the launch layer reads"
