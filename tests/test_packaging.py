"""The built wheel carries what `pip install` + `ToolRouter.from_pretrained("default")` need offline."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ["toolformer_router/demo_tools.json", "toolformer_router/checkpoints/default/config.json",
                 "toolformer_router/checkpoints/default/router.safetensors",
                 "toolformer_router/checkpoints/default/MODEL_CARD.md"]


def test_the_wheel_holds_the_default_checkpoint_byte_for_byte(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77")
    source = tmp_path / "source"  # a copy, so the build's own folders land outside the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("toolformer_router", "adapters", "training"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("toolformer_router-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in PACKAGE_FILES:
            assert name in names, f"{name} missing from {wheel.name}"
            assert (hashlib.sha256(archive.read(name)).digest()
                    == hashlib.sha256((ROOT / name).read_bytes()).digest()), name
        modules = {name for name in names if name.endswith(".py")}
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {"toolformer_router/adapters/langchain.py", "toolformer_router/training/cli.py"} <= modules
    assert "License-Expression: Apache-2.0" in metadata
