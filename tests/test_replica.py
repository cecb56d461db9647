"""Tests of lib.replica: the reference table of the spec, exact limits, and simulation at finite L."""
import numpy as np
import pytest

from lib import replica

ALPHAS = [0.25, 0.5, 0.9, 1.1, 2, 4, 8]
# eps_g(alpha, lam) at nu = 3, g = 1 (shared/papers/potts-attention.md, section 5.6), 4 decimals
TABLE = {
    0.0: [0.4893, 0.7085, 3.3712, 3.6667, 0.6667, 0.4444, 0.3810],
    1e-3: [0.4890, 0.7045, 2.4299, 2.4387, 0.6589, 0.4433, 0.3806],
    1e-2: [0.4864, 0.6731, 1.1488, 1.0978, 0.6040, 0.4338, 0.3775],
    1e-1: [0.4654, 0.5292, 0.5353, 0.5164, 0.4447, 0.3890, 0.3614],
    1.0: [0.4016, 0.3924, 0.3815, 0.3780, 0.3693, 0.3630, 0.3594],
}


@pytest.mark.parametrize("lam", TABLE)
def test_reference_table(lam):
    got = [replica.generalization_error(a, lam, nu=3.0, g=1.0) for a in ALPHAS]
    np.testing.assert_allclose(got, TABLE[lam], rtol=0, atol=6e-5)


def test_exact_limits():
    nu, g = 3.0, 1.0
    G, _ = replica.semicircle_stieltjes(nu, g)
    assert abs(G - (3 - np.sqrt(5)) / 2) < 1e-15                       # 0.381966...
    # ridgeless, alpha > 1: alpha / (nu (alpha - 1)), approached continuously as lam -> 0
    for alpha in (1.5, 3.0):
        assert abs(replica.generalization_error(alpha, 1e-9, nu, g) - alpha / (nu * (alpha - 1))) < 1e-6
    assert abs(replica.generalization_error(1e6, 0.0, nu, g) - 1 / nu) < 1e-6     # infinite data: noise
    assert abs(replica.generalization_error(2.0, 1e8, nu, g) - G) < 1e-6          # infinite ridge: Var(x_i)


def test_stieltjes_derivative_and_semicircle_variance():
    z, g, h = 2.7, 1.1, 1e-6
    G, dG = replica.semicircle_stieltjes(z, g)
    assert abs((replica.semicircle_stieltjes(z + h, g)[0] - replica.semicircle_stieltjes(z - h, g)[0]) / (2 * h) - dG) < 1e-8
    J = replica.gaussian_couplings(400, g=1.0, seed=0)
    assert np.allclose(J, J.T) and np.all(np.diag(J) == 0)
    assert abs(np.mean(np.linalg.eigvalsh(J) ** 2) - 1.0) < 0.02     # semicircle of radius 2g: variance g^2


def test_simulation_matches_theory_at_finite_L():
    alphas, lams = [0.5, 2.0], [0.1, 1.0]
    eps = replica.simulate(300, alphas, lams, n_sites=4, n_draws=2, seed=0)
    assert eps.shape == (2, 2, 8)
    theory = np.array([[replica.generalization_error(a, lam) for lam in lams] for a in alphas])
    assert np.all(np.abs(eps.mean(axis=2) - theory) < 0.015)
    assert np.array_equal(eps, replica.simulate(300, alphas, lams, n_sites=4, n_draws=2, seed=0))


def test_ridge_errors_exact_at_the_teacher():
    # with samples of x exactly whitened, ridge 0 recovers w* and the error is the noise 1/nu
    L, nu = 30, 3.0
    J = replica.gaussian_couplings(L, seed=1)
    C = np.linalg.inv(nu * np.eye(L) - J)
    x = np.random.default_rng(0).multivariate_normal(np.zeros(L), C, size=200000)
    eps = replica.ridge_errors(x, C, J, nu, [0, 5], [0.0])
    assert np.all(np.abs(eps - 1 / nu) < 2e-3) and np.all(eps >= 1 / nu)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=0.5, lam=0.1, nu=2.0, g=1.0), "nu must exceed the semicircle edge"),
    (dict(alpha=0.0, lam=0.1), "alpha and g must be > 0"),
    (dict(alpha=-1.0, lam=0.1), "alpha must be a finite number >= 0"),
    (dict(alpha=0.5, lam=-0.1), "lam must be a finite number >= 0"),
    (dict(alpha=1.0, lam=0.0), "ridgeless error diverges at alpha = 1"),
])
def test_bad_arguments_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        replica.generalization_error(**kwargs)


def test_simulate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="nu must exceed"):
        replica.simulate(50, [1.0], [0.1], nu=1.5)
    with pytest.raises(ValueError, match=r"n_sites must be in 1\.\.50"):
        replica.simulate(50, [1.0], [0.1], n_sites=51)
    x, J = np.zeros((5, 4)), np.zeros((4, 4))
    with pytest.raises(ValueError, match="lams must be a finite number >= 0"):
        replica.ridge_errors(x, np.eye(4), J, 3.0, [0], [0.1, -1.0])
    with pytest.raises(ValueError, match=r"sites must be in 0\.\.3"):
        replica.ridge_errors(x, np.eye(4), J, 3.0, [4], [0.1])
    with pytest.raises(ValueError, match=r"C must have shape \(4, 4\)"):
        replica.ridge_errors(x, np.eye(3), J, 3.0, [0], [0.1])
    with pytest.raises(ValueError, match="x must be a finite"):
        replica.ridge_errors(x * np.nan, np.eye(4), J, 3.0, [0], [0.1])


@pytest.mark.parametrize("z", [1.5, 2.0, -3.0, np.nan, np.array([3.0, 1.0])])
def test_stieltjes_transform_rejects_points_on_or_inside_the_support(z):
    with pytest.raises(ValueError, match=r"z must be finite and > 2g = 2\.0"):   # used to be NaN
        replica.semicircle_stieltjes(z, g=1.0)


def test_symmetric_gaussian_checks_its_size():
    with pytest.raises(ValueError, match="L must be in >= 2"):
        replica.symmetric_gaussian(np.random.default_rng(0), 1)
