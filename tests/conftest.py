import os

import pytest

from tests.support import BIN


@pytest.fixture
def halocut_cli():
    """Path of the installed ``halocut`` console script of this environment."""
    return str(BIN / "halocut")


@pytest.fixture
def cli_env():
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env
