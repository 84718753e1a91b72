"""Issue 18, item 6: a compile ended by SIGTERM or SIGHUP leaves nothing behind, as Ctrl-C does: no half-made
``.NAME.partial-PID`` folder, no build."""

import signal
import subprocess
import time

import pytest

from tests.support import ROOT


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_compile_removes_the_partial_build(number, tmp_path, halocut_cli, cli_env):
    out = tmp_path / "build"
    process = subprocess.Popen([halocut_cli, "compile", "resnet18", "--topology",
                                str(ROOT / "examples/topologies/default.yaml"), "--backends", "onnx,torch",
                                "--input-shape", "1,3,96,96", "-o", str(out)], env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(f".build.partial-{process.pid}")) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        assert list(tmp_path.glob(".build.partial-*")), "the compile never started writing its build"
        process.send_signal(number)
        assert process.wait(timeout=60) == 128 + number
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not out.exists() and not list(tmp_path.glob(".build.partial-*"))
