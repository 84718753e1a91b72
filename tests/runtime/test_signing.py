"""Issue 18, item 1: builds are authenticated before anything in them loads. ``halocut keygen`` writes an ed25519
pair, ``compile --sign`` signs the manifest, ``run`` and ``bench`` with ``--trust`` (or $HALOCUT_TRUST) refuse an
unsigned build, a tampered artifact whose sha256 was recomputed, a tampered manifest and another key's signature,
on the driver and on every actor; without a trusted key they say, on one line, that nothing was checked."""

import hashlib
import json
import os
import shutil
import stat
import subprocess

import pytest

from halocut.backends.manifest import read_build
from halocut.backends.signing import SIGNATURE_FILE, TRUST_ENV, keygen
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.ir.errors import HalocutError
from halocut.runtime.ray_actor import PartHost
from tests.support import ROOT

TOPOLOGY = ROOT / "examples" / "topologies" / "default.yaml"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return keygen(root / "builder"), keygen(root / "stranger")


@pytest.fixture(scope="module")
def signed(keys, tmp_path_factory):
    (private, _), _ = keys
    build = tmp_path_factory.mktemp("signed") / "build"
    compile_model(CompileOptions("lenet5", TOPOLOGY, build, backends=("onnx",), progress=False, sign=private))
    return build


def copy(build, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(build, target)
    return target


def tampered_artifact(build, tmp_path):
    """An artifact changed and its sha256 recomputed in the manifest: what whoever can write the build can do."""
    target = copy(build, tmp_path, "artifact")
    manifest = json.loads((target / "manifest.json").read_text())
    entry = next(p for d in manifest["devices"].values() for p in d["parts"])["artifacts"][0]
    path = target / entry["path"]
    path.write_bytes(path.read_bytes() + b"\0")
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return target


def tampered_manifest(build, tmp_path):
    target = copy(build, tmp_path, "manifest")
    text = (target / "manifest.json").read_text()
    (target / "manifest.json").write_text(text.replace('"predicted_s": ', '"predicted_s": 1', 1))
    return target


def unsigned(build, tmp_path):
    target = copy(build, tmp_path, "unsigned")
    (target / SIGNATURE_FILE).unlink()
    return target


def test_keygen_writes_a_private_key_only_its_owner_reads(keys, tmp_path, halocut_cli, cli_env):
    (private, public), _ = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and public.read_text().startswith("-----BEGIN PUBLIC KEY")
    made = subprocess.run([halocut_cli, "keygen", str(tmp_path / "k")], capture_output=True, text=True, env=cli_env)
    assert made.returncode == 0 and (tmp_path / "k.pub").is_file() and "--trust" in made.stdout
    again = subprocess.run([halocut_cli, "keygen", str(tmp_path / "k")], capture_output=True, text=True, env=cli_env)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists; use --force" in again.stderr


def test_a_signed_build_reads_with_its_key_and_a_bad_signing_key_is_refused_before_work(signed, keys, tmp_path):
    (_, public), _ = keys
    assert (signed / SIGNATURE_FILE).is_file() and read_build(signed, public).trusted_key is not None
    (tmp_path / "not-a-key").write_text("hello")
    with pytest.raises(HalocutError, match="not an unencrypted PEM private key"):
        compile_model(CompileOptions("lenet5", TOPOLOGY, tmp_path / "out", backends=("onnx",), progress=False,
                                     sign=tmp_path / "not-a-key"))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


CASES = {
    "unsigned": (unsigned, "builder", r"unsigned build \(no manifest.sig\) and a trusted key is set"),
    "tampered artifact, sha256 recomputed": (tampered_artifact, "builder", "the signature does not match"),
    "tampered manifest": (tampered_manifest, "builder", "the signature does not match"),
    "signed by another key": (lambda build, tmp_path: copy(build, tmp_path, "other"), "stranger",
                              "the signature does not match"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["run", "bench"])
def test_run_and_bench_refuse_before_loading_anything(case, command, signed, keys, tmp_path, halocut_cli, cli_env):
    make, who, message = CASES[case]
    build = make(signed, tmp_path)
    key = keys[0][1] if who == "builder" else keys[1][1]
    env = {**cli_env, TRUST_ENV: str(key)} if command == "bench" else cli_env  # the environment default too
    argv = [halocut_cli, command, str(build)] + (["--trust", str(key)] if command == "run" else [])
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("halocut: error: ")
    assert message.replace("\\", "") in result.stderr.replace("\\", "") and not (build / "bench.json").exists()


def test_every_actor_checks_the_signature_itself(signed, keys, tmp_path, monkeypatch):
    (_, public), (_, stranger) = keys
    good = read_build(signed, public).authority()
    host = PartHost("cloud")
    assert host._verified_hashes(good)  # the hashes of the manifest it verified
    forged = dict(good, manifest=good["manifest"].replace(b'"predicted_s": ', b'"predicted_s": 1', 1))
    with pytest.raises(HalocutError, match=r"actor 'cloud' .*the signature does not match"):
        host._verified_hashes(forged)
    monkeypatch.setenv(TRUST_ENV, str(stranger))  # this machine's own key wins over the one it was sent
    with pytest.raises(HalocutError, match="the signature does not match"):
        host._verified_hashes(good)
    with pytest.raises(HalocutError, match=r"\$HALOCUT_TRUST is set here and the build is not verified"):
        host._verified_hashes(None)


def test_without_a_trusted_key_bench_says_nothing_was_checked_and_with_it_runs(signed, keys, halocut_cli, cli_env,
                                                                                 tmp_path):
    (_, public), _ = keys
    build = copy(signed, tmp_path, "bench")
    quick = ["--repeats", "1", "--warmup", "0", "--json"]
    env = {k: v for k, v in cli_env.items() if k != TRUST_ENV}
    plain = subprocess.run([halocut_cli, "bench", str(build), *quick, "-o", str(tmp_path / "a.json")],
                           capture_output=True, text=True, env=env, timeout=600)
    assert plain.returncode == 0, plain.stderr
    assert [line for line in plain.stderr.splitlines() if "not checked by signature" in line]
    trusted = subprocess.run([halocut_cli, "bench", str(build), *quick, "-o", str(tmp_path / "b.json"), "--trust",
                              str(public)], capture_output=True, text=True, env=env, timeout=600)
    assert trusted.returncode == 0, trusted.stderr
    assert "not checked by signature" not in trusted.stderr and json.loads(trusted.stdout)
