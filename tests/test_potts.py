"""Tests of the chapter 6 library (lib.potts, pseudolikelihood, factored_attention, potts_mlm)
against exact answers: enumeration, energy differences, identities."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from lib import factored_attention, potts, potts_mlm, pseudolikelihood, replica

L, Q, BETA = 4, 3, 1.2


@pytest.fixture(scope="module")
def model():
    J, U = potts.random_couplings(L, Q, seed=3)
    return J, U, BETA


def conditionals_from_energy(J, U, beta, s):
    """log p(s_i = a | s_-i) from Hamiltonian differences only (independent of the local-field formula)."""
    n, L = s.shape
    q = U.shape[0]
    out = np.empty((n, L, q))
    for i in range(L):
        for a in range(q):
            t = s.copy()
            t[:, i] = a
            out[:, i, a] = -beta * potts.energy(J, U, t)
    return out - np.logaddexp.reduce(out, axis=2, keepdims=True)


def set_layer(J, U, beta):
    layer = factored_attention.FactoredAttention(J.shape[0], U.shape[0]).double()
    with torch.no_grad():
        layer.scores.copy_(torch.tensor(beta * J))
        layer.V.copy_(torch.tensor(U))
    return layer


# --- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, match", [
    (lambda J, U, b: (J + np.triu(np.ones_like(J), 1), U, b), "J must be symmetric"),
    (lambda J, U, b: (J + np.eye(len(J)), U, b), "J must have a zero diagonal"),
    (lambda J, U, b: (J, U + np.triu(np.ones_like(U), 1), b), "U must be symmetric"),
    (lambda J, U, b: (J, U[:1, :1], b), "q must be >= 2"),
    (lambda J, U, b: (J[:1, :1], U, b), "L must be >= 2"),
    (lambda J, U, b: (J, U, -0.1), "beta must be a finite number >= 0"),
    (lambda J, U, b: (J, U, np.nan), "beta must be a finite number"),
    (lambda J, U, b: (J[:, :2], U, b), r"J must be a square matrix of shape \(L, L\)"),
    (lambda J, U, b: (J, U[None], b), r"U must be a square matrix of shape \(q, q\)"),
    (lambda J, U, b: (J * np.nan, U, b), "J must be finite"),
])
def test_bad_parameters_rejected(model, change, match):
    with pytest.raises(ValueError, match=match):
        potts.check_potts(*change(*model))
    with pytest.raises(ValueError, match=match):
        potts.sample(*change(*model), n=2)


def test_bad_sequences_and_sizes_rejected(model):
    J, U, beta = model
    with pytest.raises(ValueError, match=r"s must have shape \(n, 4\)"):
        potts.neg_log_pseudolikelihood(J, U, beta, np.zeros(L, dtype=int))
    with pytest.raises(ValueError, match=r"colours must be in 0\.\.2"):
        potts.neg_log_pseudolikelihood(J, U, beta, np.full((1, L), Q))
    with pytest.raises(ValueError, match="integer colours"):
        potts.energy(J, U, np.zeros((1, L)))
    with pytest.raises(ValueError, match="n must be in >= 1"):
        potts.sample(J, U, beta, 0)
    with pytest.raises(ValueError, match="thin must be in >= 1"):
        potts.sample(J, U, beta, 5, thin=0)
    with pytest.raises(ValueError, match=r"q must be in >= 2"):
        potts.random_couplings(5, 1)
    with pytest.raises(ValueError, match="enumeration needs"):
        potts.enumerate_states(*potts.random_couplings(23, 2), 1.0)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        pseudolikelihood.pl_objective(J, U, np.zeros((1, L), dtype=int), lam=-1.0)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        pseudolikelihood.fit_pseudolikelihood(np.zeros((2, L), dtype=int), Q, lam=-1.0)
    layer, s = factored_attention.FactoredAttention(L, Q), np.zeros((4, L), dtype=int)
    with pytest.raises(ValueError, match="batch_size must be in >= 1"):
        potts_mlm.test_loss(layer, s, Q, batch_size=0)
    assert layer.training                                     # a rejected call leaves the mode alone
    with pytest.raises(ValueError, match="batch_size must be in >= 1"):
        potts_mlm.train_mlm(layer, s, s, Q, steps=1, batch_size=0)


class _Unsized(torch.nn.Module):
    """A model that declares no sizes: only its output width can reveal a wrong mask id."""

    def __init__(self, q):
        super().__init__()
        self.layer = factored_attention.FactoredAttention(L, q)

    def forward(self, s):
        return self.layer(s)


@pytest.mark.parametrize("make", [lambda: factored_attention.FactoredAttention(L, Q),
                                  lambda: potts_mlm.vanilla_transformer(L, Q, 1, d_model=8,
                                                                        n_heads=2, d_ff=8)])
def test_mlm_functions_reject_the_mask_as_a_colour_and_a_wrong_mask_id(make):
    model, s = make(), np.zeros((4, L), dtype=int)
    with_mask = s.copy()
    with_mask[0, 1] = -1                                  # used to be read as the mask token
    calls = [lambda x, m: potts_mlm.test_loss(model, x, m),
             lambda x, m: potts_mlm.mlm_loss(model, torch.as_tensor(x), m),
             lambda x, m: potts_mlm.masked_logits(model, torch.as_tensor(x), m),
             lambda x, m: potts_mlm.train_mlm(model, x, s, m, steps=1, batch_size=2)]
    for call in calls:
        with pytest.raises(ValueError, match=r"colours must be in 0\.\.2"):
            call(with_mask, Q)
        with pytest.raises(ValueError, match=r"colours must be in 0\.\.2"):
            call(np.full((4, L), Q), Q)                   # the mask id is not a colour
        for wrong in (Q - 1, Q + 1):
            with pytest.raises(ValueError, match=f"mask_id must be q = {Q}"):
                call(s, wrong)
        with pytest.raises(ValueError, match=r"s must have shape \(n, 4\)"):
            call(np.zeros((4, L + 1), dtype=int), Q)
    with pytest.raises(ValueError, match=r"s must have shape \(n, 4\)"):
        potts_mlm.train_mlm(model, s, np.zeros((2, L + 1), dtype=int), Q, steps=1)
    with pytest.raises(ValueError, match="at least one sequence"):
        potts_mlm.test_loss(model, np.zeros((0, L), dtype=int), Q)


def test_mlm_functions_check_the_output_width_of_an_unsized_model():
    model, s = _Unsized(Q), np.zeros((4, L), dtype=int)
    with pytest.raises(ValueError, match=f"mask_id must be q = {Q}, the number of colours"):
        potts_mlm.test_loss(model, s, Q - 1)
    with pytest.raises(ValueError, match=f"mask_id must be q = {Q}, the number of colours"):
        potts_mlm.train_mlm(model, s, s, Q - 1, steps=1, batch_size=2)


def test_factored_layer_rejects_ids_outside_colours_and_mask():
    layer = factored_attention.FactoredAttention(L, Q)
    for bad in (-1, Q + 1):
        with pytest.raises(ValueError, match=r"ids must be in 0\.\.3"):
            layer(torch.full((2, L), bad))
    with pytest.raises(ValueError, match=r"s must have shape \(B, 4\)"):
        layer(torch.zeros((2, L + 1), dtype=torch.long))
    with pytest.raises(ValueError, match=r"colours must be in 0\.\.2"):
        factored_attention.fit_factored(layer, np.full((2, L), -1))


def test_factor_and_gauge_checks(model):
    J, U, beta = model
    s = np.zeros((2, L), dtype=int)
    with pytest.raises(ValueError, match=r"K must be a square matrix"):
        potts.log_conditionals(J[:, :2], U, s)
    with pytest.raises(ValueError, match="V must be finite"):
        pseudolikelihood.pl_objective(J, U * np.nan, s)
    with pytest.raises(ValueError, match="must overlap"):
        pseudolikelihood.fix_gauge(J, np.ones((Q, Q)), U)              # V constant over a
    with pytest.raises(ValueError, match="must overlap"):
        pseudolikelihood.fix_gauge(J, U, np.ones((Q, Q)))              # U constant over a
    with pytest.raises(ValueError, match="U must have the shape of V"):
        pseudolikelihood.fix_gauge(J, U, np.eye(Q + 1))
    with pytest.raises(ValueError, match="K must have the shape of J"):
        pseudolikelihood.coupling_error(np.eye(L + 1), U, J, U, beta)
    with pytest.raises(ValueError, match="beta must be > 0"):
        pseudolikelihood.coupling_error(J, U, J, U, 0.0)
    with pytest.raises(ValueError, match="at least one sequence"):
        potts.neg_log_pseudolikelihood(J, U, beta, np.zeros((0, L), dtype=int))


def test_random_couplings_share_the_replica_coupling_matrix():
    J, _ = potts.random_couplings(30, 3, seed=7)
    assert np.array_equal(J, replica.gaussian_couplings(30, 1.0, seed=7))


# --- the model ---------------------------------------------------------------------------------------

def test_random_couplings_are_valid_and_seeded():
    J, U = potts.random_couplings(30, 5, seed=1)
    potts.check_potts(J, U, 1.0)
    assert np.allclose(J[np.triu_indices(30, 1)].var(), 1 / 30, rtol=0.2)
    assert not np.array_equal(J, potts.random_couplings(30, 5, seed=2)[0])
    assert np.array_equal(J, potts.random_couplings(30, 5, seed=1)[0])


def test_energy_matches_double_loop(model):
    J, U, _ = model
    s = np.random.default_rng(0).integers(Q, size=(7, L))
    brute = [-0.5 * sum(J[i, j] * U[x[i], x[j]] for i in range(L) for j in range(L) if i != j) for x in s]
    np.testing.assert_allclose(potts.energy(J, U, s), brute, rtol=0, atol=1e-13)


def test_conditionals_match_energy_differences_and_enumeration(model):
    J, U, beta = model
    states, p = potts.enumerate_states(J, U, beta)
    assert states.shape == (Q**L, L) and np.isclose(p.sum(), 1.0)
    logc = potts.log_conditionals(beta * J, U, states)
    np.testing.assert_allclose(logc, conditionals_from_energy(J, U, beta, states), rtol=0, atol=1e-12)
    # p(s_i = a | s_-i) from the exact joint: the q states that differ from s at site i only
    place = Q ** np.arange(L)[::-1]                              # lexicographic codes, site 0 slowest
    codes = states @ place
    for i in range(L):
        neighbours = codes[:, None] + (np.arange(Q)[None, :] - states[:, i:i + 1]) * place[i]
        cond = p[neighbours] / p[neighbours].sum(axis=1, keepdims=True)
        np.testing.assert_allclose(np.exp(logc[:, i]), cond, rtol=0, atol=1e-12)


def test_conditional_entropy_and_nlpl_against_enumeration(model):
    J, U, beta = model
    states, p = potts.enumerate_states(J, U, beta)
    logc = potts.log_conditionals(beta * J, U, states)
    exact = -(p[:, None] * np.take_along_axis(logc, states[:, :, None], 2)[..., 0]).sum() / L
    s = potts.sample(J, U, beta, 20000, burn_in=40, seed=5)
    assert abs(potts.conditional_entropy(J, U, beta, s) - exact) < 0.01
    assert abs(potts.neg_log_pseudolikelihood(J, U, beta, s) - exact) < 0.02


# --- the sampler -------------------------------------------------------------------------------------

def frequencies(s, q):
    codes = s @ (q ** np.arange(s.shape[1])[::-1])           # lexicographic, as enumerate_states
    return np.bincount(codes, minlength=q ** s.shape[1])


def test_sampler_independent_chains_pass_chi_square(model):
    J, U, beta = model
    _, p = potts.enumerate_states(J, U, beta)
    n = 40000
    counts = frequencies(potts.sample(J, U, beta, n, burn_in=40, seed=11), Q)
    assert chisquare(counts, n * p).pvalue > 1e-3
    # the same test rejects a sampler at the wrong temperature
    wrong = frequencies(potts.sample(J, U, 0.8 * beta, n, burn_in=40, seed=11), Q)
    assert chisquare(wrong, n * p).pvalue < 1e-6


def test_sampler_thinned_chains_within_total_variation_bound(model):
    J, U, beta = model
    _, p = potts.enumerate_states(J, U, beta)
    s = potts.sample(J, U, beta, 30000, n_chains=1000, burn_in=20, thin=3, seed=12)
    assert s.shape == (30000, L)
    tv = 0.5 * np.abs(frequencies(s, Q) / len(s) - p).sum()
    assert tv < 0.03            # E[TV] <= 0.5 sqrt(2 q^L / (pi n)) = 0.021 for independent draws


def test_sampler_is_seeded(model):
    J, U, beta = model
    a = potts.sample(J, U, beta, 50, burn_in=5, seed=1)
    assert np.array_equal(a, potts.sample(J, U, beta, 50, burn_in=5, seed=1))
    assert not np.array_equal(a, potts.sample(J, U, beta, 50, burn_in=5, seed=2))


# --- the identity: MLM on factored attention = pseudo-likelihood ----------------------------------

def test_mlm_loss_equals_negative_log_pseudolikelihood_with_gradients(model):
    J, U, beta = model
    s = potts.sample(J, U, beta, 300, burn_in=10, seed=2)
    layer = set_layer(J, U, beta)
    loss = potts_mlm.mlm_loss(layer, torch.as_tensor(s), mask_id=Q)
    loss.backward()
    ref = -np.take_along_axis(conditionals_from_energy(J, U, beta, s), s[:, :, None], 2).mean()
    pl, dK, dV = pseudolikelihood.pl_objective(beta * J, U, s)
    assert abs(loss.item() - ref) < 1e-13 and abs(pl - ref) < 1e-13
    assert abs(potts.neg_log_pseudolikelihood(J, U, beta, s) - ref) < 1e-13
    np.testing.assert_allclose(layer.scores.grad.numpy(), dK, rtol=0, atol=1e-15)
    np.testing.assert_allclose(layer.V.grad.numpy(), dV, rtol=0, atol=1e-15)


def test_pl_gradient_with_ridge_matches_finite_differences(model):
    J, U, _ = model
    s = np.random.default_rng(1).integers(Q, size=(50, L))
    rng = np.random.default_rng(2)
    K, V = rng.standard_normal((L, L)), rng.standard_normal((Q, Q))
    _, dK, dV = pseudolikelihood.pl_objective(K, V, s, lam=0.3)
    h = 1e-6
    for X, dX in ((K, dK), (V, dV)):
        for idx in [(0, 1), (2, 0), (1, 2)]:
            X[idx] += h
            up = pseudolikelihood.pl_objective(K, V, s, lam=0.3)[0]
            X[idx] -= 2 * h
            down = pseudolikelihood.pl_objective(K, V, s, lam=0.3)[0]
            X[idx] += h
            assert abs((up - down) / (2 * h) - dX[idx]) < 1e-7
    assert dK[1, 1] == 0.0


def test_masking_changes_nothing_and_never_leaks(model):
    J, U, beta = model
    layer = set_layer(J, U, beta)
    s = torch.as_tensor(np.random.default_rng(3).integers(Q, size=(20, L)))
    torch.testing.assert_close(potts_mlm.masked_logits(layer, s, Q), layer(s), rtol=0, atol=1e-14)
    t = s.clone()
    t[:, 0] = (t[:, 0] + 1) % Q                                  # change the target site
    torch.testing.assert_close(layer(t)[:, 0], layer(s)[:, 0], rtol=0, atol=0)


def test_loss_is_gauge_invariant_and_not_invariant_otherwise(model):
    J, U, beta = model
    s = np.random.default_rng(4).integers(Q, size=(100, L))
    K = beta * J + np.random.default_rng(5).standard_normal((L, L))   # any, even asymmetric, K
    base = pseudolikelihood.pl_objective(K, U, s)[0]
    f = np.array([0.7, -1.3, 2.0])
    assert abs(pseudolikelihood.pl_objective(2.5 * K, U / 2.5, s)[0] - base) < 1e-13        # scale
    assert abs(pseudolikelihood.pl_objective(K, U + f[None, :], s)[0] - base) < 1e-13        # colour shift f_b
    assert abs(pseudolikelihood.pl_objective(K, U + f[:, None], s)[0] - base) > 1e-3         # a field: not a gauge
    # the coupling error is gauge-invariant too, and zero at the truth
    assert pseudolikelihood.coupling_error(beta * J, U, J, U, beta) < 1e-14
    assert pseudolikelihood.coupling_error(-3 * beta * J, -U / 3 + f, J, U, beta) < 1e-14
    assert pseudolikelihood.coupling_error(beta * J, U + f[:, None], J, U, beta) > 0.01


def test_fix_gauge_recovers_truth_from_transformed_parameters(model):
    J, U, beta = model
    f = np.array([0.1, 0.2, -0.5])
    K, V = pseudolikelihood.fix_gauge(-0.5 * beta * J, -2 * U + f, U)
    np.testing.assert_allclose(K, beta * J, atol=1e-14)
    np.testing.assert_allclose(V, U - U.mean(axis=0), atol=1e-14)


def test_mlm_training_and_pseudolikelihood_fit_find_the_same_couplings():
    # Same objective, two optimizers (torch L-BFGS through autograd, scipy L-BFGS-B on the
    # hand-written gradient): the same minimum. The objective is not convex in (A, V); at this size
    # (and at L = 20, q = 10) the starts we tried all reach one minimum, at L = 6, q = 3 some do not.
    J, U = potts.random_couplings(8, 4, seed=0)
    s = potts.sample(J, U, 1.0, 2000, burn_in=50, seed=1)
    K, V = pseudolikelihood.fit_pseudolikelihood(s, 4, lam=1e-4, init_seed=0)
    layer = factored_attention.FactoredAttention(8, 4, init_seed=0).double()
    final = factored_attention.fit_factored(layer, s, lam=1e-4)
    A, W = layer.attention().detach().numpy(), layer.V.detach().numpy()
    assert abs(final - pseudolikelihood.pl_objective(K, V, s, lam=1e-4)[0]) < 1e-10
    assert abs(final - pseudolikelihood.pl_objective(A, W, s, lam=1e-4)[0]) < 1e-12
    e_pl, e_mlm = pseudolikelihood.coupling_error(K, V, J, U, 1.0), pseudolikelihood.coupling_error(A, W, J, U, 1.0)
    assert e_pl < 0.15 and abs(e_pl - e_mlm) < 1e-5


def test_softmax_attention_rows_are_distributions():
    layer = factored_attention.FactoredAttention(5, 3, softmax=True, init_seed=2)
    A = layer.attention()
    torch.testing.assert_close(A.sum(1), torch.ones(5))
    assert torch.all(A.diagonal() == 0) and torch.all(A >= 0)
    assert layer(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 3)


def test_train_mlm_lowers_the_loss_and_is_seeded(model):
    J, U, beta = model
    s = potts.sample(J, U, beta, 400, burn_in=10, seed=6)
    runs = []
    for _ in range(2):
        layer = factored_attention.FactoredAttention(L, Q, init_seed=0)
        before = potts_mlm.test_loss(layer, s, Q)
        hist, converged = potts_mlm.train_mlm(layer, s, s[:100], Q, steps=90, batch_size=32, lr=0.1,
                                              eval_every=30)
        runs.append(hist)
    assert [h[0] for h in runs[0]] == [30, 60, 90] and runs[0] == runs[1] and not converged
    truth = potts.neg_log_pseudolikelihood(J, U, beta, s[:100])               # 0.983 < before = 1.099
    assert min(v for _, v, _ in runs[0]) < truth + 0.6 * (before - truth)
    assert potts_mlm.test_loss(layer, s[:100], Q) == min(v for _, v, _ in runs[1])  # best state restored


def test_train_mlm_stops_at_the_plateau_and_halves_the_rate(model):
    J, U, beta = model
    s = potts.sample(J, U, beta, 200, burn_in=10, seed=6)
    layer = factored_attention.FactoredAttention(L, Q, init_seed=0)
    hist, converged = potts_mlm.train_mlm(layer, s, s[:100], Q, steps=5000, batch_size=32, lr=0.2,
                                          eval_every=20, patience=2, n_decays=1, min_delta=0.0)
    steps, losses, rates = zip(*hist)
    assert converged and steps[-1] < 5000                  # stopped by the criterion, not the cap
    assert rates[0] == 0.2 and rates[-1] == 0.1 and set(rates) == {0.2, 0.1}
    best = int(np.argmin(losses))
    assert len(hist) - 1 - best >= 2                       # the last evaluations did not improve
    for bad, match in [(dict(patience=0), "patience"), (dict(lr_decay=1.0), "lr_decay"),
                       (dict(n_decays=-1), "n_decays"), (dict(min_delta=-1.0), "min_delta")]:
        with pytest.raises(ValueError, match=match):
            potts_mlm.train_mlm(layer, s, s, Q, steps=1, **bad)


def test_vanilla_baseline_is_seeded_and_masked_logits_never_leak():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = potts_mlm.vanilla_transformer(L, Q, 2, init_seed=0), potts_mlm.vanilla_transformer(L, Q, 2, init_seed=0)
    assert torch.equal(state, torch.random.get_rng_state())              # global stream untouched
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = potts_mlm.vanilla_transformer(L, Q, 2, init_seed=1)
    assert not torch.equal(a.embed.weight, c.embed.weight)
    a.eval()
    s = torch.as_tensor(np.random.default_rng(0).integers(Q, size=(6, L)))
    logits = potts_mlm.masked_logits(a, s, Q)
    assert logits.shape == (6, L, Q)
    t = s.clone()
    t[:, 2] = (t[:, 2] + 1) % Q                                         # change only the masked target
    torch.testing.assert_close(potts_mlm.masked_logits(a, t, Q)[:, 2], logits[:, 2], rtol=0, atol=0)
    assert not torch.allclose(potts_mlm.masked_logits(a, t, Q)[:, 0], logits[:, 0])   # other sites see it


# --- the identity against the energy, computed independently ----------------------------------------

def energy_loss(J, U, beta, s):
    """-(1/(nL)) sum log p(s_i | s_-i), each conditional from the q energies E(s with s_i = a)."""
    return -np.take_along_axis(conditionals_from_energy(J, U, beta, s), s[:, :, None], 2).mean()


def test_factored_mlm_conditionals_and_gradients_equal_brute_force_energy_differences(model):
    # Every conditional, for every colour a (not only the observed one), of the layer run with site i
    # masked, against softmax_a(-beta E(s with s_i = a)) from the Hamiltonian alone; then the
    # gradient of the MLM loss against finite differences of that energy-based loss along
    # symmetric directions of J and U (the directions in which a Potts model can move).
    J, U, beta = model
    s = np.random.default_rng(7).integers(Q, size=(60, L))             # any sequences, not samples
    layer = set_layer(J, U, beta)
    logits = potts_mlm.masked_logits(layer, torch.as_tensor(s), Q)
    brute = conditionals_from_energy(J, U, beta, s)
    np.testing.assert_allclose(torch.log_softmax(logits, -1).detach().numpy(), brute, rtol=0, atol=1e-12)
    loss = potts_mlm.mlm_loss(layer, torch.as_tensor(s), Q)
    assert abs(loss.item() - energy_loss(J, U, beta, s)) < 1e-13
    loss.backward()
    gA, gV = layer.scores.grad.numpy(), layer.V.grad.numpy()
    h = 1e-5
    for i, j in [(0, 1), (1, 3), (2, 3)]:
        E = np.zeros((L, L))
        E[i, j] = E[j, i] = 1.0
        fd = (energy_loss(J + h * E, U, beta, s) - energy_loss(J - h * E, U, beta, s)) / (2 * h)
        assert abs(fd - beta * (gA[i, j] + gA[j, i])) < 1e-8
    for a, b in [(0, 0), (0, 2), (1, 2)]:
        E = np.zeros((Q, Q))
        E[a, b] = E[b, a] = 1.0
        fd = (energy_loss(J, U + h * E, beta, s) - energy_loss(J, U - h * E, beta, s)) / (2 * h)
        assert abs(fd - (gV[a, b] + gV[b, a]) * (1 if a != b else 0.5)) < 1e-8
    # a wrong temperature is caught: the check can fail
    assert abs(loss.item() - energy_loss(J, U, 1.1 * beta, s)) > 1e-3


def test_full_pseudolikelihood_embeds_the_potts_model_and_has_exact_gradients(model):
    J, U, beta = model
    s = np.random.default_rng(8).integers(Q, size=(40, L))
    W = np.einsum("ij,ab->iajb", beta * J, U)
    logp = pseudolikelihood.full_log_conditionals(W, np.zeros((L, Q)), s)
    np.testing.assert_allclose(logp, conditionals_from_energy(J, U, beta, s), rtol=0, atol=1e-12)
    rng = np.random.default_rng(9)
    W, b = rng.standard_normal((L, Q, L, Q)), rng.standard_normal((L, Q))
    _, dW, db = pseudolikelihood.full_pl_objective(W, b, s, lam=0.2)
    h = 1e-6
    for X, dX, idx in ((W, dW, (0, 1, 2, 0)), (W, dW, (3, 2, 1, 1)), (b, db, (2, 1))):
        X[idx] += h
        up = pseudolikelihood.full_pl_objective(W, b, s, lam=0.2)[0]
        X[idx] -= 2 * h
        down = pseudolikelihood.full_pl_objective(W, b, s, lam=0.2)[0]
        X[idx] += h
        assert abs((up - down) / (2 * h) - dX[idx]) < 1e-7
    assert np.all(dW[1, :, 1, :] == 0)                                  # no self-coupling


def test_full_pseudolikelihood_fit_approaches_the_optimum_and_checks_arguments(model):
    J, U, beta = model
    s = potts.sample(J, U, beta, 3000, burn_in=20, seed=13)
    test = potts.sample(J, U, beta, 2000, burn_in=20, seed=14)
    W, b = pseudolikelihood.fit_full_pseudolikelihood(s, Q, lam=1e-3)
    logp = pseudolikelihood.full_log_conditionals(W, b, test)
    excess = -np.take_along_axis(logp, test[:, :, None], 2).mean() - energy_loss(J, U, beta, test)
    assert 0 < excess < 0.02                     # 84 parameters, 12,000 targets: close, not below
    with pytest.raises(ValueError, match="W must have shape"):
        pseudolikelihood.full_pl_objective(W[:, :, :2], b, s)
    with pytest.raises(ValueError, match="h must have shape"):
        pseudolikelihood.full_log_conditionals(W, b[0], s)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        pseudolikelihood.fit_full_pseudolikelihood(s, Q, lam=-1.0)
    with pytest.raises(ValueError, match="must be finite"):
        pseudolikelihood.full_pl_objective(W * np.nan, b, s)


def test_ring_couplings_are_softmax_compatible_and_checked():
    J, U = potts.ring_couplings(7, 3, r=2, seed=1)
    potts.check_potts(J, U, 1.0)
    np.testing.assert_allclose(J.sum(axis=1), 1.0)
    assert np.all(J >= 0) and np.count_nonzero(J[0]) == 4 and J[0, 1] == J[0, 6] == 0.25
    assert np.array_equal(U, potts.ring_couplings(7, 3, r=1, seed=1)[1])
    with pytest.raises(ValueError, match="r must be in 1..3"):
        potts.ring_couplings(7, 3, r=4)
