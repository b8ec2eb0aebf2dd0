"""What is installed, and which layer may import which.

- Installed: one top-level name, `pinkbutton` (hal, firmware, simulator, tools under it); the
  harness and the tests run from a checkout and never reach site-packages.
- Layers point down only: hal <- firmware <- simulator / tools; nothing shipped imports the
  harness or the tests.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("hal", "firmware", "simulator", "tools")
# what each layer may import, among the project's own packages
ALLOWED = {
    "hal": {"hal"},
    "firmware": {"hal", "firmware"},
    "simulator": {"hal", "firmware", "simulator"},
    "tools": {"hal", "firmware", "tools"},
}


def package_folders() -> list[str]:
    return sorted(
        "pinkbutton." + ".".join(init.parent.relative_to(REPO).parts)
        for top in SHIPPED for init in (REPO / top).rglob("__init__.py")
    )


def test_pyproject_lists_every_shipped_package_folder() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(config["packages"]) == package_folders()
    assert config["package-dir"] == {"pinkbutton": "."}


def project_imports(path: Path) -> set[str]:
    """The project packages a module imports (pinkbutton.X -> X; harness; tests)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "pinkbutton" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in (*SHIPPED, "harness", "tests"):
                found.add(f"{parts[0]} (not through the pinkbutton namespace)")
    return found


@pytest.mark.parametrize("layer", SHIPPED)
def test_layers_import_only_downward(layer: str) -> None:
    wrong = {
        str(path.relative_to(REPO)): sorted(project_imports(path) - ALLOWED[layer])
        for path in (REPO / layer).rglob("*.py")
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_wheel_installs_only_the_pinkbutton_namespace(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = tmp_path.glob("pinkbutton-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"pinkbutton"}
    assert "pinkbutton/tools/controlroom/receiver.py" in names
    assert "pinkbutton/firmware/py.typed" in names
    assert not [n for n in names if n.startswith(("pinkbutton/harness", "pinkbutton/tests",
                                                  "pinkbutton/firmware/pico/"))]  # MicroPython
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text
