"""Every docstring example of halocut, collected once, under the installed names (``halocut.*``).

pytest's own ``--doctest-modules`` would import ``ir/layers.py`` as ``ir.layers`` beside
``halocut.ir.layers``: two copies, two ``HalocutError`` classes. Here each module is imported by its
installed name, and importing a package under another name fails (the guard in each ``__init__``).
"""

import doctest
import importlib
import io
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.support.modules import halocut_modules

MODULES = sorted(halocut_modules())


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()


def test_every_package_has_examples_somewhere():
    examples = sum(len(t.examples) for name in MODULES for t in doctest.DocTestFinder().find(
        importlib.import_module(name), name))
    assert len(MODULES) > 60 and examples > 100, (len(MODULES), examples)


def test_a_floor_cannot_be_imported_under_a_second_name():
    done = subprocess.run([sys.executable, "-c", "import ir"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "import halocut.ir, not ir" in done.stderr, done.stderr


def test_no_bare_top_level_packages_are_installed(tmp_path):
    script = "import importlib.util as u; print([n for n in ('compiler', 'passes', 'backends', 'targets', " \
             "'runtime', 'planning', 'ir') if u.find_spec(n)]); import halocut.compiler.cli"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
