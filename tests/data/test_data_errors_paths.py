"""DataError's one-line contract and the data-directory resolution order."""

from __future__ import annotations

import pickle
from pathlib import Path


from revrnn_cli.data import DATA_DIR_ENV, DataError, resolve_data_dir
from revrnn_cli.data.errors import one_line


def test_data_error_is_one_line_and_keeps_path(tmp_path):
    err = DataError("first line\nsecond   line\r\nthird", path=tmp_path / "x.txt")
    assert str(err) == "first line second line third"
    assert "\n" not in str(err) and "\r" not in str(err)
    assert err.path == tmp_path / "x.txt"
    assert isinstance(err, Exception)


def test_data_error_survives_pickling():
    err = pickle.loads(pickle.dumps(DataError("a\nb")))
    assert str(err) == "a b"


def test_one_line_truncates():
    assert one_line("abc def ghi", limit=7) == "abc de…"
    assert one_line("short", limit=10) == "short"


def test_explicit_dir_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_env_wins_over_default(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"


def test_default_is_data_in_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir() == tmp_path / "data"


def test_empty_values_count_as_unset(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, "")
    assert resolve_data_dir("") == tmp_path / "data"


def test_result_is_absolute_and_user_expanded(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir("rel") == tmp_path / "rel"
    assert resolve_data_dir("~/corpora") == tmp_path / "home" / "corpora"
    assert resolve_data_dir("rel").is_absolute()
    assert isinstance(resolve_data_dir("rel"), Path)
