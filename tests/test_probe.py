"""Tests of lib.probe, lib.ancestor_laws and lib.probe_study: hooks, ancestors from sample_tree,
linear and two-layer probes on planted codes, the seeded random-encoder control, BP's ancestor
laws against enumeration, divergences, and the stored probe tables' checks."""
import functools
import json

import exact
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lib import (ancestor_laws, bp, config, probe, probe_study, provenance, store, sweep,
                 tree, two_layer_probes)
from lib.transformer import ModelConfig, Transformer

M = tree.random_grammar(3, seed=2)
DEPTH = 3


def test_residual_stream_matches_the_forward_pass():
    cfg = ModelConfig(vocab=5, seq_len=8, n_classes=4, task="mlm", d_model=8, n_layers=2, n_heads=2,
                      d_ff=16, dropout=0.0)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    x = torch.randint(5, (6, 8))
    H = probe.residual_stream(model, x)
    assert H.shape == (3, 6, 8, 8)
    with torch.no_grad():
        h = model.embed(x) + model.pe
        np.testing.assert_allclose(H[0], h.numpy(), atol=1e-6)
        for l, layer in enumerate(model.layers, start=1):
            h, _ = layer(h)
            np.testing.assert_allclose(H[l], h.numpy(), atol=1e-6)
        np.testing.assert_allclose(model.readout(torch.from_numpy(H[-1])).numpy(), model(x).numpy(),
                                   atol=1e-6)
    assert not model.layers[0]._forward_pre_hooks and not model.layers[1]._forward_hooks


def test_internal_nodes_are_consistent_with_leaves_and_root():
    levels = tree.sample_tree(M, DEPTH, 500, k=0, seed=3)
    np.testing.assert_array_equal(probe.ancestors(levels, 0), np.repeat(levels[0], 8, axis=1))
    np.testing.assert_array_equal(probe.ancestors(levels, DEPTH), levels[-1])
    for i in range(DEPTH):                         # every node emitted its two children
        parent, left, right = levels[i], levels[i + 1][:, 0::2], levels[i + 1][:, 1::2]
        assert np.all(M[parent, left, right] > 0)
    for m in range(DEPTH):                         # exact BP on each block recovers its ancestor
        post = bp.root_posterior(M, levels[-1].reshape(-1, 2 ** (DEPTH - m)))
        np.testing.assert_allclose(post, np.eye(3)[levels[m].ravel()], atol=1e-12)


def test_ancestors_of_filtered_levels_are_missing():
    levels = tree.sample_tree(M, DEPTH, 50, k=2, seed=4)
    assert np.all(probe.ancestors(levels, 1) == -1) and np.all(probe.ancestors(levels, 2) >= 0)


def test_probe_recovers_a_planted_linear_code():
    rng = np.random.default_rng(0)
    y = rng.integers(4, size=4000)
    code = rng.standard_normal((4, 10))
    h = 3.0 * code[y] + rng.standard_normal((4000, 10)) + 5.0        # offset tests standardisation
    p = probe.fit_probe(h[:3000], y[:3000], 4).predict_proba(h[3000:])
    assert p.shape == (1000, 4) and np.allclose(p.sum(1), 1.0)
    assert (p.argmax(1) == y[3000:]).mean() > 0.97
    noise = probe.fit_probe(rng.standard_normal((3000, 10)), y[:3000], 4).predict_proba(h[3000:])
    assert (noise.argmax(1) == y[3000:]).mean() < 0.35                # no code, chance level


def test_fit_reaches_the_penalised_optimum_deterministically():
    """The fitted weights zero the gradient of the stated objective, computed afresh here."""
    rng = np.random.default_rng(1)
    h, y = rng.standard_normal((200, 5)), rng.integers(3, size=200)
    fit = probe.fit_probe(h, y, 3, l2=1e-2)
    X = torch.from_numpy((h - fit.mean) / fit.std)

    def gradient(W0, b0):
        W, b = torch.tensor(W0, requires_grad=True), torch.tensor(b0, requires_grad=True)
        loss = F.cross_entropy(X @ W.T + b, torch.from_numpy(y)) + 1e-2 * (W**2).sum()
        loss.backward()
        return max(W.grad.abs().max().item(), b.grad.abs().max().item())

    assert gradient(fit.W, fit.b) < 1e-4 < 1e-2 < gradient(0 * fit.W, 0 * fit.b)
    np.testing.assert_array_equal(probe.fit_probe(h, y, 3, l2=1e-2).W, fit.W)


def test_divergence_identities():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    assert probe.divergence(p, p) == (0.0, 0.0)
    onehot = np.eye(3)[[0, 2]]
    kl, tv = probe.divergence(onehot, p)
    assert kl == pytest.approx(-np.mean(np.log([0.5, 0.5])))
    assert tv == pytest.approx(1 - 0.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(h=np.zeros((4, 2)), y=np.array([0, 1, 2, 3]), q=3), "y must hold"),
    (dict(h=np.zeros((4, 2)), y=np.zeros(3, dtype=int), q=3), "h must be"),
    (dict(h=np.zeros((4, 2)), y=np.zeros(4, dtype=int), q=1), "q must"),
    (dict(h=np.zeros((4, 2)), y=np.zeros(4, dtype=int), q=2, l2=-1.0), "l2 must"),
])
def test_fit_probe_rejects_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        probe.fit_probe(**kwargs)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="m must"):
        probe.ancestors(tree.sample_tree(M, DEPTH, 2), 4)
    with pytest.raises(ValueError, match="same shape"):
        probe.divergence(np.ones((2, 2)) / 2, np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="p must"):
        probe.divergence(np.ones((1, 2)) / 2, np.array([[0.9, 0.9]]))
    fitted = probe.fit_probe(np.eye(2), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="h must"):
        fitted.predict_proba(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="h must be finite"):      # used to return NaN
        fitted.predict_proba(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="h must be finite"):      # used to fit NaN weights
        probe.fit_probe(np.array([[np.inf], [0.0]]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="n >= 1"):                # used to return NaN
        probe.divergence(np.ones((0, 2)), np.ones((0, 2)))
    with pytest.raises(ValueError, match="p_ref must have finite"):
        probe.divergence(np.array([[np.nan, 1.0]]), np.ones((1, 2)) / 2)
    with pytest.raises(ValueError, match="levels must"):
        probe.ancestors([], 0)


# --- two-layer probes -------------------------------------------------------------------------

def xor_code(n, rng):
    """Representation 0 carries two bits a, b; representation 1 is noise. Targets: the class
    2a + b (linearly separable) and a XOR b (not linearly separable)."""
    a, b = rng.integers(2, size=(2, n))
    h0 = np.stack([2 * a - 1, 2 * b - 1], 1) + 0.2 * rng.standard_normal((n, 2))
    h0 = np.concatenate([h0, rng.standard_normal((n, 3))], 1) + 4.0    # offset: standardising
    H = np.stack([h0, rng.standard_normal((n, 5))]).astype(np.float32)
    return H, np.stack([2 * a + b, a ^ b])


def test_two_layer_probe_decodes_a_planted_xor_code():
    rng = np.random.default_rng(0)
    (H, Y), (Hv, Yv), (Ht, Yt) = (xor_code(n, rng) for n in (6000, 1000, 2000))
    fit = two_layer_probes.fit_two_layer_probes(H, Y, 4, Hv, Yv, hidden=16, lr=1e-2, batch_size=256,
                                     max_epochs=20, seed=1)
    P = fit.predict_proba(Ht)
    assert P.shape == (2, 2, 2000, 4) and np.allclose(P.sum(-1), 1.0, atol=1e-5)
    acc = (P.argmax(-1) == Yt[None]).mean(-1)                  # (representation, target)
    assert acc[0, 0] > 0.97 and acc[0, 1] > 0.97              # the code, XOR included
    assert acc[1, 0] < 0.31 and acc[1, 1] < 0.56              # noise: chance (1/4 and 1/2)
    assert np.all(P[0, 1, :, 2:] < 1e-2)                      # XOR has two classes only
    linear = probe.fit_probe(H[0], Y[1], 2).predict_proba(Ht[0])
    assert (linear.argmax(1) == Yt[1]).mean() < 0.6           # a linear probe cannot read XOR
    assert fit.val_loss.shape[1:] == (2, 2) and fit.best_epoch.max() < len(fit.val_loss)
    kept = fit.val_loss[fit.best_epoch, [[0], [1]], [[0, 1]]]
    assert np.allclose(kept, fit.val_loss.min(0))             # the best epoch is kept


def test_two_layer_probes_are_seeded():
    rng = np.random.default_rng(3)
    H, Y = xor_code(800, rng)
    Hv, Yv = xor_code(200, rng)
    kwargs = dict(hidden=8, batch_size=128, max_epochs=3)
    a = two_layer_probes.fit_two_layer_probes(H, Y, 4, Hv, Yv, seed=7, **kwargs)
    b = two_layer_probes.fit_two_layer_probes(H, Y, 4, Hv, Yv, seed=7, **kwargs)
    c = two_layer_probes.fit_two_layer_probes(H, Y, 4, Hv, Yv, seed=8, **kwargs)
    np.testing.assert_array_equal(a.W1, b.W1)
    np.testing.assert_array_equal(a.predict_proba(Hv), b.predict_proba(Hv))
    assert not np.array_equal(a.W1, c.W1)


@pytest.mark.parametrize("change, match", [
    (dict(q=1), "q must be in >= 2"),
    (dict(hidden=0), "hidden must be in >= 1"),
    (dict(lr=0.0), "lr must be a finite number >= 1e-12"),
    (dict(batch_size=0), "batch_size must be in >= 1"),
    (dict(max_epochs=0), "max_epochs must be in >= 1"),
    (dict(patience=0), "patience must be in >= 1"),
    (dict(seed=-1), "seed must be in >= 0"),
    (dict(lr_final=1.5), r"lr_final must be in \(0, 1\]"),
    (dict(lr_final=0.0), r"lr_final must be in \(0, 1\]"),
    (dict(H=np.zeros((2, 10))), r"H must have shape \(R, n >= 1, d\)"),
    (dict(Y=np.full((2, 10), 4)), "Y must hold integers in 0..3"),
    (dict(Y=np.zeros((2, 9), dtype=int)), r"Y must have shape \(T >= 1, 10\)"),
    (dict(H_val=np.zeros((3, 4, 5))), r"H_val must have shape \(2, n >= 1, 5\)"),
    (dict(Y_val=np.zeros((3, 4), dtype=int)), r"Y_val must have shape \(2, 4\)"),
    (dict(H=np.full((2, 10, 5), np.nan)), "H must be finite"),
])
def test_two_layer_probes_reject_bad_arguments(change, match):
    args = dict(H=np.zeros((2, 10, 5)), Y=np.zeros((2, 10), dtype=int), q=4,
                H_val=np.zeros((2, 4, 5)), Y_val=np.zeros((2, 4), dtype=int)) | change
    with pytest.raises(ValueError, match=match):
        two_layer_probes.fit_two_layer_probes(**args)


def test_predict_proba_checks_its_input():
    rng = np.random.default_rng(4)
    H, Y = xor_code(300, rng)
    fit = two_layer_probes.fit_two_layer_probes(H, Y, 4, H, Y, hidden=4, max_epochs=1)
    with pytest.raises(ValueError, match=r"H must have shape \(2, n >= 1, 5\)"):
        fit.predict_proba(H[:1])


# --- the random-encoder control ---------------------------------------------------------------

CFG_MLM = ModelConfig(vocab=4, seq_len=8, n_classes=3, task="mlm", d_model=8, n_layers=2,
                      n_heads=2, d_ff=16, dropout=0.0)


def test_random_encoder_is_seeded_and_leaves_the_global_stream_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = probe.random_encoder(CFG_MLM, seed=5)
    np.testing.assert_array_equal(torch.rand(3), expected_next)   # caller's stream untouched
    b = probe.random_encoder(CFG_MLM, seed=5)
    c = probe.random_encoder(CFG_MLM, seed=6)
    for (name, wa), wb, wc in zip(a.state_dict().items(), b.state_dict().values(),
                                  c.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert not torch.equal(a.embed.weight, c.embed.weight)
    assert not a.training
    torch.manual_seed(5)                              # lib.train's initialisation, init_seed 5
    trained_init = Transformer(CFG_MLM)
    assert all(torch.equal(w, trained_init.state_dict()[n]) for n, w in a.state_dict().items())
    x = torch.randint(4, (3, 8))
    np.testing.assert_array_equal(probe.residual_stream(a, x), probe.residual_stream(b, x))


def test_random_encoder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seed must be in >= 0"):
        probe.random_encoder(CFG_MLM, seed=-1)
    with pytest.raises(ValueError, match="cfg must be a ModelConfig"):
        probe.random_encoder({"d_model": 8}, seed=0)


# --- BP's ancestor laws -----------------------------------------------------------------------

def enumerated_laws(M, depth, x, m):
    """P(node (m, j) | observed leaves) and P(node | observed leaves below it), by enumeration."""
    q = M.shape[0]
    X, p = exact._full_joint(M, depth)
    leaves = X[:, 2**depth - 1:]
    post, ins = np.zeros((len(x), 2**m, q)), np.zeros((len(x), 2**m, q))
    for s, row in enumerate(x):
        observed = row < q
        for j in range(2**m):
            node = X[:, 2**m - 1 + j]
            below = np.zeros(2**depth, dtype=bool)
            below[j * 2 ** (depth - m):(j + 1) * 2 ** (depth - m)] = True
            for out, seen in ((post, observed), (ins, observed & below)):
                keep = np.all(leaves[:, seen] == row[seen], axis=1)
                law = np.bincount(node[keep], weights=p[keep], minlength=q)
                out[s, j] = law / law.sum()
    return post, ins


@pytest.mark.parametrize("q, depth", [(3, 2), (2, 3)])
def test_ancestor_laws_match_enumeration(q, depth):
    M = tree.random_grammar(q, seed=5)
    x = tree.sample(M, depth, 12, seed=1)[1]
    rng = np.random.default_rng(0)
    x[np.arange(12), rng.integers(2**depth, size=12)] = q          # one mask each ...
    x[:4, 0] = q                                                    # ... two on some rows
    for m in range(depth):
        post, ins = enumerated_laws(M, depth, x, m)
        np.testing.assert_allclose(ancestor_laws.posterior(M, x, m), post, atol=1e-12)
        np.testing.assert_allclose(ancestor_laws.inside(M, x, m), ins, atol=1e-12)
    np.testing.assert_allclose(ancestor_laws.posterior(M, x, 0)[:, 0], bp.root_posterior(M, x))
    np.testing.assert_allclose(ancestor_laws.inside(M, x, 0), ancestor_laws.posterior(M, x, 0))


def test_ancestor_laws_on_clean_leaves_are_the_true_ancestors():
    levels = tree.sample_tree(M, DEPTH, 200, seed=6)
    for m in range(DEPTH):
        truth = np.eye(3)[probe.ancestors(levels, m)]                # (n, L, q)
        for law in (ancestor_laws.posterior, ancestor_laws.inside):
            tokens = ancestor_laws.per_token(law(M, levels[-1], m), DEPTH)
            np.testing.assert_allclose(tokens, truth, atol=1e-12)


def test_ancestor_laws_reject_bad_arguments():
    leaves = tree.sample(M, DEPTH, 2)[1]
    with pytest.raises(ValueError, match="m must be in 0..2"):
        ancestor_laws.posterior(M, leaves, DEPTH)
    with pytest.raises(ValueError, match="m must be in 0..2"):
        ancestor_laws.inside(M, leaves, -1)
    with pytest.raises(ValueError, match="laws must have shape"):
        ancestor_laws.per_token(np.ones((2, 3, 3)), DEPTH)
    with pytest.raises(ValueError, match="depth must be in >= 1"):
        ancestor_laws.per_token(np.ones((2, 1, 3)), 0)


# --- the stored probe study -------------------------------------------------------------------

def test_probe_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_train must be in >= 1"):
        probe_study.ProbeConfig(n_train=0)
    with pytest.raises(ValueError, match="control_seed must be in >= 0"):
        probe_study.ProbeConfig(control_seed=-2)
    with pytest.raises(ValueError, match=r"lr_final must be in \(0, 1\]"):
        probe_study.ProbeConfig(lr_final=2.0)
    with pytest.raises(ValueError, match="models must be a non-empty tuple"):
        probe_study.ProbeConfig(models=())
    assert probe_study.ProbeConfig(models=["mlm_k0"]).models == ("mlm_k0",)


def test_inputs_mask_one_position_per_masked_token_sequence():
    leaves = tree.sample(M, DEPTH, 50, seed=2)[1]
    x = probe_study.inputs("mlm", leaves, 3, seed=4)
    assert np.all((x == 3).sum(1) == 1) and np.all((x == leaves) | (x == 3))
    np.testing.assert_array_equal(x, probe_study.inputs("mlm", leaves, 3, seed=4))
    assert probe_study.inputs("root", leaves, 3, seed=4) is leaves
    with pytest.raises(ValueError, match="task must be"):
        probe_study.inputs("lm", leaves, 3, seed=4)


def test_stored_tables_are_checked_against_config_models_and_code(tmp_path, monkeypatch):
    tiny = config.tiny_runs()
    runs = {"mlm_k0": tiny["tiny_mlm"], "root_k0": tiny["tiny_root"]}
    cfg = probe_study.ProbeConfig(models=("mlm_k0",))
    table = pd.DataFrame({"layer": [0, 1], "accuracy": [0.5, 0.75]})
    with pytest.raises(store.MissingEntry, match="fit_probes.py"):
        probe_study.load(tmp_path, cfg, runs)
    clean = {"commit": "a" * 40, "dirty": False, "diff_sha256": None, "lib_sha256": "b"}
    monkeypatch.setattr(provenance, "code_state", lambda: clean | {"dirty": True})
    tables = {name: table for name in probe_study.TABLES}
    with pytest.raises(store.DirtyTree, match="uncommitted"):
        probe_study.save(tmp_path, cfg, runs, tables, {}, "cmd")
    monkeypatch.setattr(provenance, "code_state", lambda: clean)
    with pytest.raises(ValueError, match="tables must hold exactly"):
        probe_study.save(tmp_path, cfg, runs, {"ancestors": table}, {}, "cmd")
    probe_study.save(tmp_path, cfg, runs, tables, {"cpu_s": 1.0}, "cmd")
    loaded, record = probe_study.load(tmp_path, cfg, runs)
    assert set(loaded) == set(probe_study.TABLES)
    pd.testing.assert_frame_equal(loaded["ancestors"], table)
    assert record["models"] == {n: store.key(c) for n, c in runs.items()}
    with pytest.raises(ValueError, match=r"fields \['n_test'\] differ.*fit_probes.py"):
        probe_study.load(tmp_path, probe_study.ProbeConfig(models=("mlm_k0",), n_test=8),
                         runs)
    other = runs | {"root_k0": config.tiny_runs()["tiny_mlm"]}
    with pytest.raises(ValueError, match="other models"):
        probe_study.load(tmp_path, cfg, other)
    path = tmp_path / probe_study.RECORD
    record["code"]["dirty"] = True
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="uncommitted code"):
        probe_study.load(tmp_path, cfg, runs)


def test_checkpoint_probes_cover_every_checkpoint_and_the_final_model(tmp_path, monkeypatch):
    clean = {"commit": "a" * 40, "dirty": False, "diff_sha256": None, "lib_sha256": "b"}
    monkeypatch.setattr(store, "code_state", lambda: clean)
    tiny = config.tiny_runs()
    runs = {"mlm_k0": tiny["tiny_mlm"], "root_k0": tiny["tiny_root"]}
    done, failed = sweep.run(runs, "inline", root=tmp_path, progress=False)
    assert failed == {}
    stop = {job["name"].split("_")[0]: job["stop_step"] for job in done}
    for name in ("require", "load_checkpoints"):        # read the temporary store
        monkeypatch.setattr(store, name, functools.partial(getattr(store, name),
                                                           root=tmp_path))
    cfg = probe_study.ProbeConfig(linear_n_train=40, linear_n_test=30)
    grammar = tree.random_grammar(tiny["tiny_mlm"].q, tiny["tiny_mlm"].sigma,
                                  tiny["tiny_mlm"].grammar_seed)
    table = probe_study.checkpoint_table(cfg, runs, grammar)
    for task, run in (("mlm", runs["mlm_k0"]), ("root", runs["root_k0"])):
        steps = sorted(table.query("task == @task").step.unique())
        assert steps == sorted({*run.checkpoints, stop[task]}) and stop[task] > 20
        rows = table.query("task == @task and step == @steps[-1]")
        assert len(rows) == (run.model.n_layers + 1) * run.depth     # layers x levels
    assert table.accuracy.between(0, 1).all()
