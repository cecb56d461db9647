"""Tests of lib.results: records written run by run, resumed, and read only when current."""
import json

import pytest

from lib import provenance, results

CLEAN = {"commit": "a" * 40, "dirty": False, "diff_sha256": None, "lib_sha256": "x"}


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.setattr(provenance, "code_state", lambda: dict(CLEAN))


def test_runs_are_added_resumed_and_loaded(tmp_path, clean):
    config = {"lr": 0.01, "seeds": (0, 1)}
    record = results.open_record(tmp_path, "study", config)
    assert record["runs"] == {} and record["code"] == CLEAN
    results.add_run(tmp_path, "study", record, "s0", {"loss": 3.4, "steps": (1, 2)})
    again = results.open_record(tmp_path, "study", config)            # resumes
    assert again["runs"] == {"s0": {"loss": 3.4, "steps": [1, 2]}}
    assert results.open_record(tmp_path, "study", config, fresh=True)["runs"] == {}
    with pytest.raises(ValueError, match="lacks runs"):
        results.load(tmp_path, "study", config, ["s0", "s1"], "make it")
    results.add_run(tmp_path, "study", again, "s1", {"loss": 3.5})
    loaded = results.load(tmp_path, "study", config, ["s0", "s1"], "make it")
    assert loaded["runs"]["s1"] == {"loss": 3.5} and loaded["config"]["seeds"] == [0, 1]
    assert json.loads((tmp_path / "study.json").read_text()) == loaded


def test_stale_or_missing_records_are_refused(tmp_path, clean, monkeypatch):
    with pytest.raises(FileNotFoundError, match="make it"):
        results.load(tmp_path, "study", {"lr": 1}, [], "make it")
    record = results.open_record(tmp_path, "study", {"lr": 1})
    results.add_run(tmp_path, "study", record, "s0", {})
    with pytest.raises(ValueError, match=r"another configuration \(fields \['lr'\]\)"):
        results.load(tmp_path, "study", {"lr": 2}, [], "make it")
    with pytest.raises(ValueError, match=r"another configuration \(fields \['seeds'\]\)"):
        results.load(tmp_path, "study", {"lr": 1, "seeds": [0]}, [], "make it")   # field added
    with pytest.raises(ValueError, match=r"another configuration \(fields \['lr'\]\)"):
        results.load(tmp_path, "study", {}, [], "make it")                   # field removed
    with pytest.raises(ValueError, match="another configuration or commit"):
        results.open_record(tmp_path, "study", {"lr": 2})
    monkeypatch.setattr(provenance, "code_state", lambda: {**CLEAN, "dirty": True})
    with pytest.raises(ValueError, match="uncommitted"):
        results.open_record(tmp_path, "other", {"lr": 1})
    dirty = results.open_record(tmp_path, "other", {"lr": 1}, allow_dirty=True)
    results.add_run(tmp_path, "other", dirty, "s0", {})
    with pytest.raises(ValueError, match="uncommitted code"):
        results.load(tmp_path, "other", {"lr": 1}, ["s0"], "make it")


def test_bad_arguments(tmp_path, clean):
    with pytest.raises(ValueError, match="name must be"):
        results.open_record(tmp_path, "../escape", {})
    with pytest.raises(ValueError, match="config must be a dict"):
        results.open_record(tmp_path, "study", [1])
    record = results.open_record(tmp_path, "study", {})
    with pytest.raises(ValueError, match="key must be"):
        results.add_run(tmp_path, "study", record, "", {})


def test_changed_since_names_the_files_a_commit_changed():
    last = provenance._git("log", "-1", "--format=%H", "--", "lib/train.py")
    assert "lib/train.py" in provenance.changed_since(last + "^", ["lib/train.py"])
    assert provenance.changed_since(last + "^", ["lib/no_such_file.py"]) == []
    assert provenance.changed_since("0" * 40, provenance.TRAINING_CODE) is None
