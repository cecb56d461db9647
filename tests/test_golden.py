"""Golden histories: a change to training behaviour fails here until the store is dealt with.

The tiny sweep (`lib.config.tiny_runs`: one plateau run, one cosine run, with checkpoints) is
retrained and its history compared with the one committed in ``tests/golden``. Training is
deterministic on one machine, so on the platform that wrote the golden files the comparison is
exact; elsewhere (another CPU, torch or numpy) it falls back to a relative tolerance.

When the comparison fails because training was changed on purpose: bump ``lib.store.FORMAT``
(every stored entry then goes stale) or regenerate the store, and rewrite the golden files with
``python tests/test_golden.py --write`` (it refuses while ``FORMAT`` is the one they record,
unless ``--store-regenerated`` says every entry was retrained with the new code).
"""
import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib import config, store, train

GOLDEN = Path(__file__).parent / "golden"


def _platform() -> dict:
    """What decides bit-exact float results: CPU architecture and vector ISA, library versions."""
    return {"machine": platform.machine(), "isa": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "numpy": np.__version__}


def _history(name: str) -> pd.DataFrame:
    torch.set_num_threads(1)
    cfg = config.tiny_runs()[name]
    return train.train(cfg, progress=False)[1].drop(columns="wall_s")


@pytest.mark.parametrize("name", sorted(config.tiny_runs()))
def test_training_reproduces_the_golden_history(name):
    meta = json.loads((GOLDEN / "golden.json").read_text())
    assert meta["format"] == store.FORMAT, (
        f"lib.store.FORMAT is {store.FORMAT} but the golden histories were written for "
        f"{meta['format']}: rewrite them with python tests/test_golden.py --write")
    golden = pd.read_csv(GOLDEN / f"{name}.csv")
    history = _history(name)
    exact = meta["platform"] == _platform()
    pd.testing.assert_frame_equal(history, golden, check_exact=exact, rtol=1e-4, atol=1e-6,
                                  check_dtype=False, obj=f"history of {name} (exact: {exact})")


def _same(name: str, history: pd.DataFrame) -> bool:
    """Whether ``history`` equals the golden file of ``name`` exactly."""
    try:
        pd.testing.assert_frame_equal(history, pd.read_csv(GOLDEN / f"{name}.csv"),
                                      check_exact=True, check_dtype=False)
    except (AssertionError, FileNotFoundError):
        return False
    return True


def write(store_regenerated: bool) -> None:
    """Rewrite the golden files (see the module docstring for when that is allowed)."""
    meta_path = GOLDEN / "golden.json"
    old = json.loads(meta_path.read_text()) if meta_path.exists() else None
    histories = {name: _history(name) for name in config.tiny_runs()}
    changed = not all(_same(name, history) for name, history in histories.items())
    if old and changed and old["format"] == store.FORMAT and not store_regenerated:
        sys.exit("training behaviour changed but lib.store.FORMAT did not: bump it (or retrain "
                 "the store and pass --store-regenerated)")
    GOLDEN.mkdir(exist_ok=True)
    for name, history in histories.items():
        history.to_csv(GOLDEN / f"{name}.csv", index=False, float_format="%.17g")
    meta_path.write_text(json.dumps({"format": store.FORMAT, "platform": _platform()}, indent=1))
    print(f"wrote {sorted(histories)} to {GOLDEN}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Rewrite the golden training histories.")
    parser.add_argument("--write", action="store_true", required=True)
    parser.add_argument("--store-regenerated", action="store_true")
    write(parser.parse_args().store_regenerated)
