"""Tests of lib.potts_results: chapter 6 reads its stored fits only when they match its samples."""
import json

import numpy as np
import pandas as pd
import pytest

from lib import potts_results


def write(folder, config, rows):
    pd.DataFrame(rows).to_csv(folder / "baselines_laptop.csv", index=False)
    (folder / "baselines_laptop.json").write_text(json.dumps({"config": config, "runs": []}))


def test_read_checks_the_shared_settings_and_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/potts_baselines.py"):
        potts_results.read(tmp_path, "laptop", {})
    write(tmp_path, {"L": 20, "seeds": [0, 1, 2]}, [{"model": "vanilla", "excess": 0.1}])
    fits, record = potts_results.read(tmp_path, "laptop", {"L": 20, "seeds": (0, 1, 2)})
    assert list(fits["model"]) == ["vanilla"] and record["config"]["L"] == 20
    with pytest.raises(ValueError, match="expected: L = 21.*computed with 20"):
        potts_results.read(tmp_path, "laptop", {"L": 21})
    with pytest.raises(ValueError, match="expected: q = 10.*None"):
        potts_results.read(tmp_path, "laptop", {"q": 10})
    record["runs"] = [{"commit": "abc", "dirty": False}, {"commit": "def", "dirty": True}]
    (tmp_path / "baselines_laptop.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"uncommitted code \(commits \['def'\]\)"):
        potts_results.read(tmp_path, "laptop", {"L": 20})


def test_best_ridge_keeps_the_lowest_validation_loss_per_fit():
    fits = pd.DataFrame({"model": ["plm_full"] * 4 + ["vanilla", "factored"], "instance": "A0",
                         "M": [10, 10, 20, 20, 10, 10], "rep": 0,
                         "lam": [0.1, 0.01, 0.1, 0.01, np.nan, 0.5],
                         "val_loss": [2.0, 1.5, 1.2, 1.4, 3.0, 9.0]})
    best = potts_results.best_ridge(fits)
    assert list(best["lam"].fillna(-1)) == [0.01, 0.1, -1, 0.5]      # other models untouched
    with pytest.raises(ValueError, match="'model', 'lam' and 'val_loss'"):
        potts_results.best_ridge(fits.drop(columns="lam"))
    with pytest.raises(ValueError, match="model must be one of"):
        potts_results.best_ridge(fits, model="plm")


def test_summarise_gives_mean_standard_error_and_count():
    fits = pd.DataFrame({"fit": ["a", "a", "a", "b"], "excess": [1.0, 2.0, 6.0, 0.5]})
    out = potts_results.summarise(fits, "fit").set_index("fit")
    assert out.loc["a", "mean"] == 3.0 and out.loc["a", "n"] == 3
    assert np.isclose(out.loc["a", "se"], np.std([1, 2, 6], ddof=1) / np.sqrt(3))
    assert np.isnan(out.loc["b", "se"])
    with pytest.raises(ValueError, match="no column"):
        potts_results.summarise(fits, "seed")
