"""The download path, exercised offline: row->text conversion, atomic writes, and the errors for a missing corpus."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from revrnn_cli.data import DataError, load_lm_corpus
from revrnn_cli.data import download as dl
from revrnn_cli.data.corpora import SPLITS, get_lm_spec


def _hub_rows(path: Path, corpus: str) -> list[str]:
    """Rows as the hub stores them: PTB `sentence` is stripped; WikiText `text` keeps padding and newline, blank -> ''."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if corpus == "ptb":
            rows.append(line.strip())
        else:
            rows.append(line if line.strip() else "")
    return rows


def _fake_fetch_from(real_dir: Path, calls: list):
    def fetch(spec):
        calls.append(spec.name)
        return {s: _hub_rows(real_dir / spec.subdir / spec.files[s], spec.name) for s in SPLITS}

    return fetch


def _no_partials(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".part")]


# --------------------------------------------------------------------------- pure conversion


def test_rows_to_text_ptb_style():
    assert dl.lm_rows_to_text(["a b", "c", "d  e"]) == " a b \n c \n d e \n"


def test_rows_to_text_wikitext_style():
    rows = ["", " = Title = \n", " x  y \n", None, "   ", "\n"]
    assert dl.lm_rows_to_text(rows) == " \n = Title = \n x y \n \n \n \n"


def test_rows_to_text_empty():
    assert dl.lm_rows_to_text([]) == ""


@pytest.mark.parametrize("corpus", ["ptb", "wikitext2"])
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_rows_to_text_reproduces_the_file_format_byte_for_byte(tiny_data_dir, corpus, split):
    spec = get_lm_spec(corpus)
    path = tiny_data_dir / spec.subdir / spec.files[split]
    assert dl.lm_rows_to_text(_hub_rows(path, corpus)).encode("utf-8") == path.read_bytes()


@pytest.mark.parametrize("corpus", ["ptb", "wikitext2"])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_rows_to_text_reproduces_real_files_byte_for_byte(real_data_dir, corpus, split):
    spec = get_lm_spec(corpus)
    path = real_data_dir / spec.subdir / spec.files[split]
    assert dl.lm_rows_to_text(_hub_rows(path, corpus)).encode("utf-8") == path.read_bytes()


# --------------------------------------------------------------------------- atomic write


def test_write_text_atomic_writes_exact_bytes(tmp_path):
    target = tmp_path / "f.txt"
    dl.write_text_atomic(target, " é \n \n")
    assert target.read_bytes() == " é \n \n".encode("utf-8")
    dl.write_text_atomic(target, "new\n")
    assert target.read_bytes() == b"new\n"
    assert _no_partials(tmp_path)


def test_write_text_atomic_leaves_nothing_on_failure(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        dl.write_text_atomic(tmp_path / "f.txt", "data\n")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- simulated download


def test_simulated_download_writes_verified_standard_layout(real_data_dir, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(dl, "fetch_lm_rows", _fake_fetch_from(real_data_dir, calls))
    corpus = load_lm_corpus("ptb", tmp_path, download=True, verify=True)
    assert calls == ["ptb"]
    assert corpus.train.numel() == 929_589 and len(corpus.vocab) == 10_000
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        assert (tmp_path / "ptb" / name).read_bytes() == (real_data_dir / "ptb" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "ptb").iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ptb"]  # nothing cached besides the corpus

    # Second load: files are present, no fetch.
    load_lm_corpus("ptb", tmp_path, download=True)
    assert calls == ["ptb"]


def test_download_only_fills_missing_files(tiny_data_dir, tmp_path, monkeypatch):
    (tmp_path / "ptb").mkdir()
    mine = " the \n" * 3
    (tmp_path / "ptb" / "ptb.valid.txt").write_text(mine, encoding="utf-8")
    calls: list = []
    monkeypatch.setattr(dl, "fetch_lm_rows", _fake_fetch_from(tiny_data_dir, calls))
    corpus = load_lm_corpus("ptb", tmp_path, download=True, verify=False)
    assert calls == ["ptb"]
    assert (tmp_path / "ptb" / "ptb.valid.txt").read_text(encoding="utf-8") == mine  # untouched
    assert (tmp_path / "ptb" / "ptb.test.txt").read_bytes() == (tiny_data_dir / "ptb" / "ptb.test.txt").read_bytes()
    assert corpus.vocab.decode(corpus.valid) == ["the", "<eos>"] * 3


def _assert_missing_message(msg: str, corpus_dir: Path, files: list[str]):
    assert "\n" not in msg
    assert str(corpus_dir) in msg
    for name in files:
        assert name in msg
    assert "--data-dir" in msg and "REVRNN_DATA_DIR" in msg


def test_offline_gives_clear_error(tmp_path, monkeypatch):
    def offline(spec):
        raise dl.HubUnreachable("Hugging Face hub unreachable: cannot connect to huggingface.co:443")

    monkeypatch.setattr(dl, "fetch_lm_rows", offline)
    with pytest.raises(DataError) as info:
        load_lm_corpus("wikitext2", tmp_path, download=True)
    msg = str(info.value)
    _assert_missing_message(msg, tmp_path / "wikitext-2", ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"])
    assert "unreachable" in msg
    assert info.value.path == tmp_path / "wikitext-2"


def test_any_fetch_failure_is_wrapped(tmp_path, monkeypatch):
    def boom(spec):
        raise RuntimeError("HTTP 503\nService Unavailable")

    monkeypatch.setattr(dl, "fetch_lm_rows", boom)
    with pytest.raises(DataError) as info:
        load_lm_corpus("ptb", tmp_path)
    msg = str(info.value)
    _assert_missing_message(msg, tmp_path / "ptb", ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"])
    assert "RuntimeError: HTTP 503 Service Unavailable" in msg


def test_download_disabled_never_fetches(tmp_path, monkeypatch):
    def must_not_run(spec):
        raise AssertionError("fetch called with download=False")

    monkeypatch.setattr(dl, "fetch_lm_rows", must_not_run)
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text(" a \n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_lm_corpus("ptb", tmp_path, download=False)
    msg = str(info.value)
    _assert_missing_message(msg, tmp_path / "ptb", ["ptb.valid.txt", "ptb.test.txt"])
    assert "is missing ptb.valid.txt, ptb.test.txt" in msg
    assert "disabled" in msg


def test_real_fetch_respects_hub_offline_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert dl.hub_unreachable_reason() == "HF_HUB_OFFLINE is set"
    with pytest.raises(DataError) as info:
        load_lm_corpus("wikitext2", tmp_path)
    assert "HF_HUB_OFFLINE" in str(info.value)
    assert not (tmp_path / "wikitext-2").exists() or not any((tmp_path / "wikitext-2").iterdir())


def test_missing_datasets_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "hub_unreachable_reason", lambda timeout=3.0: None)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataError) as info:
        load_lm_corpus("ptb", tmp_path)
    assert "ImportError" in str(info.value) or "ModuleNotFoundError" in str(info.value)


def test_probe_reports_refused_connection(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", *dl._PROXY_ENV_VARS):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    reason = dl.hub_unreachable_reason(timeout=1.0)
    assert reason is not None and f"127.0.0.1:{port}" in reason


def test_probe_defers_to_proxy(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
    assert dl.hub_unreachable_reason() is None


def test_importing_the_package_does_not_import_datasets():
    root = Path(__file__).resolve().parents[2]
    code = "import sys, revrnn_cli.data; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
