"""Commands are thin and independent (STYLE practice 17): no command module imports another, and the converters
they drive know nothing of the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import padnet_dist.commands
import padnet_dist.data.converters

COMMANDS_DIR = Path(padnet_dist.commands.__file__).parent
CONVERTERS_DIR = Path(padnet_dist.data.converters.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included), as absolute names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                base = "padnet_dist.commands" if path.parent == COMMANDS_DIR else "?"
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_no_command_imports_another_command():
    files = sorted(p for p in COMMANDS_DIR.glob("*.py") if p.name != "__init__.py")
    assert len(files) >= 9
    offenders = []
    for path in files:
        own = f"padnet_dist.commands.{path.stem}"
        for name in _imported_modules(path):
            if name.startswith("padnet_dist.commands") and name not in ("padnet_dist.commands", own):
                offenders.append(f"{path.name} imports {name}")
            if name == "padnet_dist.commands" or name.startswith("padnet_dist.cli"):
                offenders.append(f"{path.name} imports {name}")
    assert not offenders, "move shared logic into its package layer: " + "; ".join(offenders)


def test_the_scan_sees_function_level_and_relative_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def run():\n    from padnet_dist.commands.eval import run as other\n    import padnet_dist.cli\n")
    assert {"padnet_dist.commands.eval", "padnet_dist.cli"} <= _imported_modules(probe)


def test_converters_do_not_know_argparse():
    files = sorted(CONVERTERS_DIR.glob("*.py"))
    assert len(files) >= 4
    for path in files:
        imported = _imported_modules(path)
        assert not any(n == "argparse" or n.startswith("argparse.") for n in imported), path.name
        assert not any(n.startswith("padnet_dist.commands") for n in imported), path.name
