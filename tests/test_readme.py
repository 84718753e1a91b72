"""The README's commands work: every command in its code blocks is run, so the documentation cannot rot."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(?:sh|console)?\n(.*?)```", README, flags=re.S)
LINES = [line for block in BLOCKS for line in block.splitlines()]
COMMANDS = [line.split("#")[0].strip() for line in LINES if line.startswith(".venv/bin/halocut ")]
SESSIONS = [(LINES[i][2:], LINES[i + 1]) for i in range(len(LINES) - 1) if LINES[i].startswith("$ ")]


def shell(command, cli_env):
    return subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, env=cli_env, timeout=900)


def test_readme_names_the_two_commands():
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_demo_runs_the_main_job(cli_env):
    result = shell("make demo", cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resnet18" in result.stdout and "total" in result.stdout and "conv2d" in result.stdout
    assert "manifest: " in result.stdout and "tvm x86: max error" in result.stdout


def test_make_test_runs_pytest(cli_env):
    result = shell("make -n test", cli_env)  # a dry run: the real one is running this test
    assert result.returncode == 0 and "pytest" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_halocut_commands_succeed(command, cli_env):
    result = shell(command, cli_env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command,expected", SESSIONS)
def test_readme_error_examples_print_what_the_readme_shows(command, expected, cli_env):
    result = shell(command, cli_env)
    assert result.returncode == 2
    assert result.stderr.strip() == expected.strip()


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_readme_python_examples_run(code, cli_env):
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=cli_env,
                            timeout=600)
    assert result.returncode == 0, result.stderr
