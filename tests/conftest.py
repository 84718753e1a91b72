import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def halocut_cli():
    """Path of the installed ``halocut`` console script of this environment."""
    return str(BIN / "halocut")


@pytest.fixture
def cli_env():
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env
