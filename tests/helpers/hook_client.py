"""The native hook client built from the repository's source, for tests that run it directly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hook.entry import CLIENT_NAME

SOURCE = Path(__file__).resolve().parents[2] / "hook" / "stage" / "hook_client.c"


def build_client(directory: Path) -> str:
    """Compile the client into ``directory`` (a C compiler is one of install.sh's packages)."""
    if shutil.which("cc") is None:
        pytest.fail("no C compiler: run ./install.sh (it installs gcc for the native hook client)")
    out = directory / CLIENT_NAME
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(out), str(SOURCE)], check=True, capture_output=True, timeout=120)
    return str(out)


@pytest.fixture(scope="session")
def hook_client(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_client(tmp_path_factory.mktemp("client"))
