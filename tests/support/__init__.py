"""Helpers the tests share (no test lives here)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
BIN = Path(sys.executable).parent  # the virtual environment's scripts (halocut)
