"""The README's commands work: every command in its code blocks is run, so the documentation cannot rot."""

import re
import subprocess
import sys

import pytest

from tests.support import ROOT

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
    text = " ".join(result.stdout.split())  # the summary's caption wraps
    assert "manifest: " in text and "tvm x86 (native): max error" in text
    assert "tvm aarch64 (qemu-aarch64): max error" in text  # the Pis' parts, executed under qemu


def test_the_readme_has_commands_to_run():
    """The regexes below find what they look for: an empty list would make every check pass vacuously."""
    assert len(COMMANDS) >= 10 and len(SESSIONS) >= 1 and len(PYTHON_BLOCKS) >= 1, (COMMANDS, SESSIONS)


def recipe(target, cli_env) -> list[str]:
    """The shell lines ``make TARGET`` runs (variables expanded), read with ``make -n`` but not run by it."""
    result = shell(f"make -n --always-make {target}", cli_env)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.strip() and not line.startswith(("#", "make"))]


def test_make_test_runs_the_suite_that_holds_this_test(cli_env):
    # running `make test` here would run this test again; its pytest line is run for real, collecting only
    pytest_lines = [line for line in recipe("test", cli_env) if "pytest" in line]
    assert len(pytest_lines) == 1, pytest_lines
    result = shell(pytest_lines[0] + " --collect-only -p no:cacheprovider", cli_env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "tests/end_to_end/test_readme.py::test_make_test_runs_the_suite_that_holds_this_test" in result.stdout
    collected = int(re.search(r"(\d+) tests? collected", result.stdout).group(1))
    assert collected > 300, collected


def test_make_demo_runs_halocut_commands_the_readme_describes(cli_env):
    halocut_lines = [line for line in recipe("demo", cli_env) if "/halocut " in line]
    assert [line.split()[1] for line in halocut_lines] == ["inspect", "compile", "compile", "run"], halocut_lines


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
