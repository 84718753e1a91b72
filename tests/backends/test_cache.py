"""The artifact cache is bounded (least recently used entries go first) and never fails a build it cannot write
(the zoo's large models filled 65 GB of it and then a disk: a compile failed with ENOSPC in the cache copy)."""

import os
import time

import pytest

from halocut.backends.base import cache_limit_bytes, trim_cache
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.ir.errors import HalocutError
from tests.support import ROOT


def entry(root, backend, key, size, age_s):
    folder = root / backend / key
    folder.mkdir(parents=True)
    (folder / "PART.onnx").write_bytes(b"x" * size)
    (folder / "files").write_text("PART.onnx")
    stamp = time.time() - age_s
    os.utime(folder, (stamp, stamp))
    return folder


def test_the_least_recently_used_entries_go_until_the_cache_fits(tmp_path):
    old, middle, new = (entry(tmp_path, b, k, 1000, age) for b, k, age in
                        (("onnx", "a", 300), ("torch", "b", 200), ("onnx", "c", 100)))
    (tmp_path / "onnx" / "d.123.tmp").mkdir()  # a write in progress is not an entry
    assert trim_cache(tmp_path, 2500, keep=new) == [old]
    assert middle.exists() and new.exists() and (tmp_path / "onnx" / "d.123.tmp").exists()
    assert trim_cache(tmp_path, 0, keep=new) == [middle] and new.exists()  # the entry just written stays
    assert trim_cache(tmp_path / "absent", 0) == []


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("HALOCUT_CACHE_MAX_GB", "0.5")
    assert cache_limit_bytes() == 0.5e9
    monkeypatch.delenv("HALOCUT_CACHE_MAX_GB")
    assert cache_limit_bytes() == 10e9
    for bad in ("-1", "lots", "nan", "inf"):
        monkeypatch.setenv("HALOCUT_CACHE_MAX_GB", bad)
        with pytest.raises(HalocutError, match="HALOCUT_CACHE_MAX_GB"):
            cache_limit_bytes()


def test_a_cache_that_cannot_be_written_fails_no_build(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HALOCUT_CACHE", str(blocker / "cache"))  # mkdir under a file fails
    compilation = compile_model(CompileOptions("lenet5", ROOT / "examples/topologies/default.yaml", tmp_path / "out",
                                               backends=("onnx",), progress=False))
    assert (tmp_path / "out" / "manifest.json").exists() and compilation.verification
    assert "not cached" in caplog.text


def test_a_small_limit_keeps_the_cache_under_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HALOCUT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HALOCUT_CACHE_MAX_GB", "0.00002")  # 20 kB: about one of lenet5's parts
    compile_model(CompileOptions("lenet5", ROOT / "examples/topologies/default.yaml", tmp_path / "out",
                                 backends=("onnx",), progress=False))
    sizes = [f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file()]
    entries = [d for d in (tmp_path / "cache").glob("*/*") if (d / "files").is_file()]
    assert entries and (sum(sizes) <= 20_000 or len(entries) == 1)
