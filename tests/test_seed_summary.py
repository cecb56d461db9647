"""Tests of lib.seed_summary on hand-made histories whose answers are known."""
import numpy as np
import pandas as pd
import pytest

from lib import seed_summary as ss


def history(k_train, acc_own, acc_full, kl_own, kl_full, steps=100, depth=2):
    """Two evaluations (step 0 and ``steps``); the last one carries the given numbers."""
    rows = []
    for step in (0, steps):
        for k in range(depth + 1):
            row = {"step": step, "k_test": k, "accuracy": 0.3, "kl_bp0": 1.0, "kl_bp1": 1.0,
                   "kl_bp2": 1.0}
            if step == steps:
                row["accuracy"] = acc_own if k == k_train else acc_full if k == 0 else 0.5
                if k == 0:
                    row[f"kl_bp{k_train}"], row["kl_bp0"] = kl_own, kl_full
            rows.append(row)
    return pd.DataFrame(rows)


REFERENCE = pd.DataFrame([{"k_model": m, "k_test": t, "accuracy": 0.9 - 0.1 * m - 0.01 * t}
                          for m in range(3) for t in range(3)])


def test_gaps_are_bp_minus_network_in_points_with_standard_errors():
    hist = {(0, 0): history(0, 0.89, 0.89, 0.01, 0.01), (0, 1): history(0, 0.87, 0.87, 0, 0),
            (1, 0): history(1, 0.79, 0.8, 0.02, 0.3), (1, 1): history(1, 0.78, 0.8, 0.04, 0.5),
            (1, 2): history(1, 0.77, 0.8, 0.03, 0.4)}
    per_seed, summary = ss.gaps(hist, REFERENCE)
    assert len(per_seed) == 5 and list(summary.seeds) == [2, 3]
    assert summary.BP.tolist() == pytest.approx([0.9, 0.79])          # BP(k, k)
    assert summary["gap mean"].tolist() == pytest.approx([2.0, 1.0])
    assert summary["gap SE"][1] == pytest.approx(np.std([0, 1, 2], ddof=1) / np.sqrt(3))
    assert summary["largest seed gap"].tolist() == pytest.approx([3.0, 2.0])
    assert ss.within(summary, goal=4.5) == [1] and ss.within(summary, goal=5, worst=3.1) == [0, 1]
    per_seed, full = ss.on_full_data(hist, REFERENCE)
    # BP(1, 0) = 0.8: trained on k = 1, the network matches it on full data
    assert full["minus BP(k, 0) mean"][1] == pytest.approx(0.0, abs=1e-9)
    assert full["KL to BP_k mean"][1] == pytest.approx(0.03)
    assert full["KL to BP_0 mean"][1] == pytest.approx(0.4)


def test_nearest_row_by_kl_and_its_stages():
    kl = pd.DataFrame({"kl_bp0": [3.0, 1.0, 0.5, 0.01], "kl_bp1": [2.0, 0.8, 0.1, 0.2],
                       "kl_bp2": [0.1, 0.9, 0.4, 0.3]}, index=[0, 10, 100, 1000])
    rows = ss.nearest_by_kl(kl)
    assert rows.tolist() == [2, -1, 1, 0]              # 0.8 is not below half of 0.9
    assert ss.stages(rows) == "2 → between → 1 → 0"
    assert ss.stages(pd.Series([2, 2, 1, 1, 0])) == "2 → 1 → 0"
    assert ss.nearest_by_kl(kl, ratio=1.0).tolist() == [2, 1, 1, 0]
    # rows are read from the column names, not their order
    assert ss.nearest_by_kl(kl[["kl_bp2", "kl_bp0", "kl_bp1"]]).tolist() == [2, -1, 1, 0]


def monitored(kl_by_step, k=1, n_monitor=8):
    """Monitored level-k rows with the given KL(BP_k || net), then a final full-set row."""
    rows = [{"step": step, "k_test": k, "n_test": n_monitor, "accuracy": 0.5, f"kl_bp{k}": kl}
            for step, kl in kl_by_step.items()]
    rows.append({"step": max(kl_by_step) + 100, "k_test": k, "n_test": 4 * n_monitor,
                 "accuracy": 0.5, f"kl_bp{k}": 123.0})   # the full set: never compared
    return pd.DataFrame(rows)


def test_kl_fall_compares_the_last_monitored_evaluation_with_one_a_window_before():
    hist = {(1, 0): monitored({0: 1.0, 1000: 0.4, 2000: 0.3, 3000: 0.2}),
            (1, 1): monitored({0: 1.0, 500: 0.5, 1500: 0.5})}
    fall = ss.kl_fall(hist, n_monitor=8, window=1500)
    assert fall["from step"].tolist() == [1000, 0] and fall["to step"].tolist() == [3000, 1500]
    assert fall["steps"].tolist() == [3100, 1600]
    assert fall["fall %"].tolist() == pytest.approx([50.0, 50.0])
    assert ss.kl_fall(hist, 8, 1000)["fall %"].tolist() == pytest.approx([100 / 3, 0.0])
    with pytest.raises(ValueError, match="window = 2000 reaches before"):
        ss.kl_fall(hist, 8, 2000)
    with pytest.raises(ValueError, match="fewer than two monitored"):
        ss.kl_fall(hist, 16, 1000)
    with pytest.raises(ValueError, match="window"):
        ss.kl_fall(hist, 8, 0)


@pytest.mark.parametrize("call, match", [
    (lambda: ss.nearest_by_kl(pd.DataFrame({"kl_bp0": [1.0]})), "at least two columns"),
    (lambda: ss.nearest_by_kl(pd.DataFrame({"kl_bp0": [1.0], "acc": [1.0]})), "kl_bp<m>"),
    (lambda: ss.nearest_by_kl(pd.DataFrame({"a": [1.0], "b": [2.0]}), ratio=0), "ratio"),
    (lambda: ss.within(pd.DataFrame(), goal=-1), "goal"),
    (lambda: ss.gaps({(0, 0): history(0, 0.9, 0.9, 0, 0)}, REFERENCE), "at least two"),
    (lambda: ss.gaps({}, REFERENCE), "non-empty training histories"),
    (lambda: ss.on_full_data({(0, 0): pd.DataFrame()}, REFERENCE), "non-empty"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
