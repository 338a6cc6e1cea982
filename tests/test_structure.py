"""The package's structure holds: the linter reads every file and finds nothing, modules
stay small, and no module reaches into another module's private names."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "maggy_magic"
#: The most lines a module of the package may have.
MAX_LINES = 420


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = pathlib.Path(sys.executable).with_name("ruff")
    command = [str(ruff)] if ruff.exists() else [sys.executable, "-m", "ruff"]
    return subprocess.run(command + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_ruff_reads_every_module_of_the_package():
    listed = {pathlib.Path(line.strip()).resolve()
              for line in _ruff("check", "--show-files", ".").stdout.splitlines()
              if line.strip().endswith(".py")}
    missing = [str(p.relative_to(ROOT)) for p in _modules() if p.resolve() not in listed]
    assert not missing, f"ruff's file discovery skips {missing}"
    assert any("distributed" in p.parts for p in listed)


def test_ruff_finds_nothing():
    done = _ruff("check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it along its seams"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def private_uses(source: str, name: str, is_package: bool, modules: set) -> list:
    """``from X import _name`` and ``X._name`` where X is another module of the package,
    in the code ``source`` of module ``name``."""
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if not base.startswith("maggy_magic"):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {base} import {alias.name}")
                if f"{base}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("maggy_magic") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            found.append(f"line {node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    modules = {_module_name(p) for p in _modules()}
    offenders = {str(p.relative_to(ROOT)): private_uses(
        p.read_text(encoding="utf-8"), _module_name(p), p.name == "__init__.py", modules)
        for p in _modules()}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, offenders


def test_the_private_name_check_sees_both_forms():
    """The check above must be able to fail: both forms of reaching in are reported."""
    source = "from ..config import _hidden\nfrom .. import experiment\nexperiment._secret()\n"
    found = private_uses(source, "maggy_magic.backends.probe", False,
                         {"maggy_magic.experiment", "maggy_magic.config"})
    assert found == ["line 1: from maggy_magic.config import _hidden",
                     "line 3: maggy_magic.experiment._secret"]
