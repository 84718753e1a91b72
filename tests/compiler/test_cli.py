"""The `halocut` command: inspect output, and one-line errors with exit code 2 and no traceback."""

import json
import subprocess

import pytest

from halocut.compiler.cli import main


def run(halocut_cli, cli_env, *args):
    return subprocess.run([halocut_cli, *args], capture_output=True, text=True, env=cli_env, timeout=300)


def test_inspect_json_has_the_documented_fields(capsys):
    assert main(["inspect", "resnet18", "--input-shape", "1,3,64,64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"total_flops", "total_params", "layers"} <= set(report)
    assert report["input_shape"] == [1, 3, 64, 64]
    first = report["layers"][0]
    assert {"name", "kind", "output_shape", "flops", "params", "output_bytes"} <= set(first)
    assert first["kind"] == "conv2d" and first["output_shape"] == [1, 64, 32, 32]
    assert report["total_flops"] == sum(layer["flops"] for layer in report["layers"])


def test_inspect_table_shows_layers_and_totals(halocut_cli, cli_env):
    result = run(halocut_cli, cli_env, "inspect", "lenet5")
    assert result.returncode == 0, result.stderr
    assert "conv2d" in result.stdout and "linear" in result.stdout
    assert "total" in result.stdout and "62,006" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["inspect", "vgg17"], "unknown model 'vgg17'; known models:"),
    (["inspect", "nowhere.py:build"], "file 'nowhere.py' does not exist"),
    (["inspect", "lenet5", "--input-shape", "1,3,64,64"], "layer '_7' (torch.nn.Linear) rejects its input"),
    (["inspect", "resnet18", "--input-shape", "1,1,224,224"], "layer 'conv1' (torch.nn.Conv2d) rejects"),
    (["inspect", "lenet5", "--input-shape", "1,3,x"], "input shape '1,3,x'"),
    (["inspect"], "the following arguments are required: model"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_errors_are_one_line_exit_2_no_traceback(halocut_cli, cli_env, args, message):
    result = run(halocut_cli, cli_env, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("halocut: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
