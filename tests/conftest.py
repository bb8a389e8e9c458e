import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_copy(tmp_path):
    "A copy of this project's sources (settings, notebooks, package, README) in a temporary directory."
    for name in ("settings.ini", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("nbs", "minidl"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return tmp_path
