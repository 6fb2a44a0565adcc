"""Preference games (copg_jax.envs.games) and their exact solvers (copg_jax.exact.games)."""

from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copg_jax.envs import games as G
from copg_jax.exact import games as X
from copg_jax.exact.common import kl

TAUS = (1.0, 0.1, 0.01, 0.001)
K = 10  # most tests share this size (and batch size N) so compilations are reused
N = 8

# Module-level jitted functions: one compilation per (shape, dtype), shared by all tests.
nash = jax.jit(X.nash_equilibrium)
log_nash = jax.jit(X.log_nash_equilibrium)
solve_batch = jax.jit(jax.vmap(X.solve_nash, in_axes=(0, None)))
gap = jax.jit(X.duality_gap)
gap_batch = jax.jit(jax.vmap(X.duality_gap, in_axes=(0, 0, None)))
residual_batch = jax.jit(jax.vmap(X.fixed_point_residual, in_axes=(0, 0, None)))
pref = jax.jit(X.regularized_preference)
# P_τ(q ≻ π) for a batch of q, and P_τ(π ≻ q) for a batch of q.
pref_of_many = jax.jit(jax.vmap(X.regularized_preference, in_axes=(None, 0, None, None)))
pref_against_many = jax.jit(jax.vmap(X.regularized_preference, in_axes=(None, None, 0, None)))
best_response = jax.jit(X.best_response)
egpo_single = jax.jit(G.egpo_random, static_argnums=(1,))


@partial(jax.jit, static_argnums=(1, 2))
def egpo_batch(seed, n: int = N, k: int = K) -> G.PreferenceGame:
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.vmap(lambda key: G.egpo_random(key, k))(keys)


@partial(jax.jit, static_argnums=(1, 2))
def random_policies(seed, n: int = N, k: int = K, concentration=1.0) -> jax.Array:
    """``n`` policies ~ Dirichlet(concentration · 1)."""
    return jax.random.dirichlet(jax.random.PRNGKey(seed), concentration * jnp.ones(k), (n,))


def nash_batch(games: G.PreferenceGame, tau) -> jax.Array:
    sol = solve_batch(games, tau)
    assert bool(sol.converged.all())
    return jnp.exp(sol.log_probs)


def game_at(games: G.PreferenceGame, i: int) -> G.PreferenceGame:
    return jax.tree.map(lambda a: a[i], games)


@jax.jit
def fixed_point_map(game, pi, tau):
    return jax.nn.softmax(jnp.log(game.ref_probs) + game.P @ pi / tau)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------- games


def test_dice_matrix_by_enumeration_has_the_5_9_cycle():
    P = G.dice_matrix()
    # Independent brute force over all 36 face pairs of each pair of dice.
    faces = G.DICE_FACES
    for i, j in itertools.product(range(3), repeat=2):
        wins = sum(a > b for a, b in itertools.product(faces[i], faces[j]))
        ties = sum(a == b for a, b in itertools.product(faces[i], faces[j]))
        assert P[i, j] == pytest.approx((wins + 0.5 * ties) / 36, abs=1e-15)
    # A ≻ B, B ≻ C, C ≻ A, each with probability 5/9.
    for i in range(3):
        assert P[i, (i + 1) % 3] == pytest.approx(5 / 9, abs=1e-15)
        assert P[(i + 1) % 3, i] == pytest.approx(4 / 9, abs=1e-15)
    np.testing.assert_allclose(P + P.T, 1.0, atol=1e-15)
    np.testing.assert_allclose(np.diag(P), 0.5)
    # Unregularized Nash is uniform: every action ties against the uniform policy.
    np.testing.assert_allclose(P @ np.full(3, 1 / 3), 0.5, atol=1e-15)
    np.testing.assert_allclose(np.asarray(G.nontransitive_dice().P), P, atol=1e-7)


def test_cyclic_game_structure():
    rps = G.cyclic(3)
    np.testing.assert_allclose(rps.P, [[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    for k in (2, 4, 7, 8):
        P = np.asarray(G.cyclic(k, strength=0.3).P)
        np.testing.assert_allclose(P + P.T, 1.0, atol=1e-7)
        np.testing.assert_allclose(P @ np.full(k, 1 / k), 0.5, atol=1e-7)  # uniform Nash
        if k > 2:  # with K = 2 the only other action is opposite (d = K/2): a tie
            assert P[0, 1] == pytest.approx(0.8) and P[1, 0] == pytest.approx(0.2)
    np.testing.assert_array_equal(G.cyclic(2).P, 0.5)


def test_bradley_terry_matrix(x64):
    r = jnp.array([1.0, 0.5, 0.0, -1.0])
    g = G.bradley_terry(r, jnp.array([0.1, 0.2, 0.3, 0.4]))
    np.testing.assert_allclose(g.P, jax.nn.sigmoid(r[:, None] - r[None, :]), atol=1e-15)
    np.testing.assert_allclose(g.P + g.P.T, 1.0, atol=1e-15)
    np.testing.assert_array_equal(np.diag(g.P), 0.5)
    # Large τ: the equilibrium is the reference up to O(1/τ).
    pi = jnp.exp(log_nash(g, 1e3))
    np.testing.assert_allclose(pi, g.ref_probs, atol=1e-3)
    assert float(kl(pi, g.ref_probs)) < 1e-6
    # Small τ: the Condorcet winner (highest reward) takes all the mass.
    assert float(jnp.exp(log_nash(g, 1e-3))[0]) > 1 - 1e-12


def test_egpo_random_structure_and_vmap():
    games = egpo_batch(0)
    P = np.asarray(games.P)
    assert P.shape == (N, K, K) and games.ref_probs.shape == (N, K)
    assert games.num_actions == K
    low = np.tril_indices(K, -1)
    assert np.all((P[:, low[0], low[1]] >= 0) & (P[:, low[0], low[1]] <= 1))
    np.testing.assert_array_equal(P + np.swapaxes(P, 1, 2), 1.0)
    np.testing.assert_array_equal(np.diagonal(P, axis1=1, axis2=2), 0.5)
    np.testing.assert_allclose(np.asarray(games.ref_probs).sum(-1), 1.0, atol=1e-6)
    assert np.all(np.asarray(games.ref_probs) > 0)
    # Distinct instances; a single call, jitted or not, equals the vmapped one.
    assert not np.allclose(P[0], P[1])
    g = egpo_single(jax.random.split(jax.random.PRNGKey(0), N)[3], K)
    np.testing.assert_array_equal(g.P, P[3])
    np.testing.assert_allclose(g.ref_probs, games.ref_probs[3], rtol=1e-6)
    G.make_game(P[3], games.ref_probs[3])  # passes validation


def test_egpo_random_games_equal_the_games_drawn_one_by_one():
    """The CLI's batched builder: one compiled program, bitwise the games of
    ``egpo_random(fold_in(base, i), K)`` called eagerly, as the CLI did before (the committed
    results' problem digest; a jitted ``egpo_random`` fuses the softmax and may differ in
    the last bit)."""
    from copg_jax.envs.games import egpo_random_games

    base = jax.random.PRNGKey(3)
    batch = egpo_random_games(base, 4, 6)
    for i, g in enumerate(batch):
        one = G.egpo_random(jax.random.fold_in(base, i), 6)
        np.testing.assert_array_equal(g.P, one.P)
        np.testing.assert_array_equal(g.ref_probs, one.ref_probs)


def test_sample_preferences_frequencies_and_shapes():
    g = G.nontransitive_dice()
    y = jnp.array([[0, 1, 2], [0, 0, 1]])
    y2 = jnp.array([[1, 2, 0], [0, 2, 1]])
    out = G.sample_preferences(jax.random.PRNGKey(0), g, y, y2)
    assert out.shape == (2, 3) and out.dtype == g.P.dtype
    assert set(np.unique(np.asarray(out))) <= {0.0, 1.0}
    n = 20_000
    wins = G.sample_preferences(jax.random.PRNGKey(1), g, jnp.zeros(n, int), jnp.ones(n, int))
    p = 5 / 9
    z = (float(wins.mean()) - p) / np.sqrt(p * (1 - p) / n)
    assert abs(z) < 5
    assert float(G.sample_preferences(jax.random.PRNGKey(2), G.cyclic(3), 0, 1)) == 1.0


# ------------------------------------------------------------------------- equilibrium


def test_dice_equilibrium_uniform_reference_is_uniform(x64):
    g = G.nontransitive_dice()
    for tau in (10.0, 1.0, 1e-3):
        np.testing.assert_allclose(nash(g, tau), 1 / 3, atol=1e-12)


def test_dice_equilibrium_tends_to_uniform_as_tau_shrinks(x64):
    g = G.nontransitive_dice(jnp.array([0.7, 0.2, 0.1]))
    dev = {tau: float(jnp.max(jnp.abs(nash(g, tau) - 1 / 3))) for tau in (0.1, 1e-3, 1e-4)}
    assert dev[0.1] > 0.2  # not trivially uniform at moderate τ ...
    assert dev[1e-3] < 0.02 and dev[1e-4] < 0.2 * dev[1e-3]  # ... but → uniform, O(τ)
    for tau in (0.1, 1e-3, 1e-4):
        pi = nash(g, tau)
        np.testing.assert_allclose(pi, fixed_point_map(g, pi, tau), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("tau", TAUS)
def test_fixed_point_on_random_egpo_games(x64, tau):
    games = egpo_batch(1)
    pis = nash_batch(games, tau)
    np.testing.assert_allclose(pis.sum(-1), 1.0, atol=1e-13)
    for i in range(N):
        g, pi = game_at(games, i), pis[i]
        np.testing.assert_allclose(pi, fixed_point_map(g, pi, tau), rtol=1e-9, atol=1e-10)
    assert float(residual_batch(games, pis, tau).max()) < 1e-10  # max |ln π − ln BR(π)|
    assert int(solve_batch(games, tau).trials.max()) < 150  # well inside max_trials = 200
    assert float(gap_batch(games, pis, tau).max()) < 1e-20
    # π*_τ is an equilibrium: no policy beats it in the regularized game.
    others = random_policies(2, 256)
    g, pi = game_at(games, 0), pis[0]
    vals = pref_of_many(g, others, pi, tau)
    assert float(vals.max()) <= 0.5 + 1e-12
    assert float(pref(g, pi, pi, tau)) == pytest.approx(0.5, abs=1e-15)


def test_log_nash_is_finite_where_probabilities_underflow(x64):
    g = G.bradley_terry(jnp.array([1.0, 0.5, 0.0, -1.0]))
    tau = 1e-4
    log_pi = log_nash(g, tau)
    pi = jnp.exp(log_pi)
    assert bool(jnp.all(jnp.isfinite(log_pi)))
    assert float(log_pi[3]) < -800 and float(pi[3]) == 0.0  # underflows in float64
    # ln π*_τ = logsoftmax(ln μ + Pπ/τ), checked in log space where π underflows.
    rhs = jax.nn.log_softmax(jnp.log(g.ref_probs) + g.P @ pi / tau)
    np.testing.assert_allclose(log_pi, rhs, rtol=1e-12, atol=1e-9)


def test_nash_float32_is_accurate_to_rounding():
    games = egpo_batch(3)
    assert games.P.dtype == jnp.float32
    for tau in (0.1, 0.01):
        pis = nash_batch(games, tau)
        assert pis.dtype == jnp.float32
        # Rounding floor of Pπ/τ is ~eps/τ in log space.
        assert float(residual_batch(games, pis, tau).max()) < 100 * 1.2e-7 / tau
    with jax.enable_x64(True):
        pis64 = nash_batch(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), games), 0.01)
    np.testing.assert_allclose(pis, pis64, atol=1e-4)


def test_nash_jit_vs_nojit_and_vmap_vs_loop(x64):
    games = egpo_batch(4)
    tau = 0.01
    batched = nash_batch(games, tau)
    for i in range(N):
        np.testing.assert_allclose(nash(game_at(games, i), tau), batched[i], rtol=1e-10, atol=1e-14)
    g = game_at(games, 0)
    np.testing.assert_allclose(X.nash_equilibrium(g, tau), batched[0], rtol=1e-10, atol=1e-14)
    pis = random_policies(0)
    gb = gap_batch(games, pis, tau)
    for i in range(N):
        np.testing.assert_allclose(gap(game_at(games, i), pis[i], tau), gb[i], rtol=1e-12)
    np.testing.assert_allclose(X.duality_gap(g, pis[0], tau), gb[0], rtol=1e-12)
    # τ may be traced, e.g. vmapped over a grid of τ.
    taus = jnp.array([1.0, 0.01])
    per_tau = jax.jit(jax.vmap(X.nash_equilibrium, in_axes=(None, 0)))(g, taus)
    np.testing.assert_allclose(per_tau[1], batched[0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(per_tau[0], nash(g, 1.0), rtol=1e-10, atol=1e-14)


# -------------------------------------------------------------------------- duality gap


@jax.jit
def closed_form_gap(g, pi, tau):
    """Textbook form ``2[τ ln Σ μ exp(Pπ/τ) + τ KL(π‖μ)] − 1`` (valid for P + Pᵀ = 1)."""
    lse = jax.nn.logsumexp(jnp.log(g.ref_probs) + g.P @ pi / tau)
    return 2 * (tau * lse + tau * kl(pi, g.ref_probs)) - 1


def test_duality_gap_matches_definitions_and_best_responses(x64):
    games = egpo_batch(5)
    pis = random_policies(6, N, K, 0.5)
    for seed, (i, tau) in enumerate(itertools.product(range(4), (1.0, 0.1, 0.01))):
        g, pi = game_at(games, i), pis[i]
        gp = float(gap(g, pi, tau))
        assert gp > 0
        assert gp == pytest.approx(float(closed_form_gap(g, pi, tau)), rel=1e-9, abs=1e-12)
        # Definition: max_{π'} P_τ(π' ≻ π) − min_{π'} P_τ(π ≻ π'), both attained at BR(π).
        br = best_response(g, pi, tau)
        np.testing.assert_allclose(br, fixed_point_map(g, pi, tau), rtol=1e-12)
        upper, lower = pref(g, br, pi, tau), pref(g, pi, br, tau)
        assert gp == pytest.approx(float(upper - lower), rel=1e-9, abs=1e-12)
        # Brute force: no random policy does better than the best response.
        others = random_policies(seed, 256, K, 0.3)
        assert float(pref_of_many(g, others, pi, tau).max()) <= upper + 1e-12
        assert float(pref_against_many(g, pi, others, tau).min()) >= lower - 1e-12


def test_duality_gap_by_grid_search_on_dice(x64):
    g = G.nontransitive_dice(jnp.array([0.5, 0.3, 0.2]))
    tau = 0.1
    n = 200
    a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    mask = a + b <= n
    grid = jnp.asarray(np.stack([a[mask], b[mask], n - a[mask] - b[mask]], -1) / n)
    pi = jnp.array([0.6, 0.1, 0.3])
    upper = pref_of_many(g, grid, pi, tau).max()
    lower = pref_against_many(g, pi, grid, tau).min()
    gp = gap(g, pi, tau)
    assert float(upper - lower) <= float(gp) + 1e-12
    assert float(upper - lower) == pytest.approx(float(gp), abs=1e-3)


def test_duality_gap_general_formula_without_skew_symmetry(x64):
    # For any P the gap is τ[KL(π‖BR₁) + KL(π‖BR₂)]; check against the definition.
    P = jax.random.uniform(jax.random.PRNGKey(7), (K, K))
    g = G.PreferenceGame(P=P, ref_probs=jnp.full(K, 1 / K))
    pi = random_policies(8)[0]
    tau = 0.3
    lmu = jnp.log(g.ref_probs)
    br1 = jax.nn.softmax(lmu + P @ pi / tau)
    br2 = jax.nn.softmax(lmu - P.T @ pi / tau)
    expected = pref(g, br1, pi, tau) - pref(g, pi, br2, tau)
    np.testing.assert_allclose(gap(g, pi, tau), expected, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    log_tau=st.floats(-3.0, 1.0),
    concentration=st.sampled_from([0.05, 0.5, 5.0]),
)
def test_duality_gap_is_nonnegative(seed, log_tau, concentration):
    g = egpo_single(jax.random.PRNGKey(seed), K)
    pi = random_policies(seed, 1, K, concentration)[0]
    tau = 10.0**log_tau
    assert float(gap(g, pi, tau)) >= 0.0
    pi_zero = jnp.where(jnp.arange(K) == 0, 0.0, pi + 1e-3)  # policies with zeros too
    pi_zero = pi_zero / pi_zero.sum()
    assert float(gap(g, pi_zero, tau)) >= 0.0


def test_duality_gap_zero_only_at_equilibrium(x64):
    games = egpo_batch(9)
    for tau in (1.0, 0.01):
        pis = nash_batch(games, tau)
        gaps_star = gap_batch(games, pis, tau)
        gaps_mu = gap_batch(games, games.ref_probs, tau)
        assert float(gaps_star.max()) < 1e-20
        assert float(gaps_mu.min()) > 1e-6
        # At π*, BR(π*) = π*.
        np.testing.assert_allclose(
            best_response(game_at(games, 0), pis[0], tau), pis[0], rtol=1e-10
        )


def test_duality_gap_float32_nonnegative_and_small_at_nash():
    games = egpo_batch(10)
    pis = random_policies(0)
    for tau in TAUS:
        assert float(gap_batch(games, pis, tau).min()) > 0
        assert float(gap_batch(games, nash_batch(games, tau), tau).max()) < 1e-9


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "P, pattern",
    [
        (np.full((2, 3), 0.5), r"^P: must be a square 2-D matrix.*\(2, 3\)"),
        (np.array([0.5, 0.5]), r"^P: must be a square"),
        (np.array([[0.5]]), r"^P: a game needs at least 2 actions"),
        (np.array([[0.5, np.nan], [0.5, 0.5]]), r"^P: entries must be finite"),
        (np.array([[0.5, 1.2], [-0.2, 0.5]]), r"^P: entries .* \[0, 1\], got 1\.2"),
        (np.array([[0.6, 0.5], [0.5, 0.5]]), r"^P: the diagonal must be 1/2.*P\[0, 0\] = 0\.6"),
        (
            np.array([[0.5, 0.7, 0.5], [0.3, 0.5, 0.5], [0.5, 0.4, 0.5]]),
            r"^P: must satisfy P \+ Pᵀ = 1.*worst pair \(1, 2\).*= 0\.9",
        ),
        (np.array([["a", "b"], ["c", "d"]]), r"^P: must be numeric"),
    ],
)
def test_make_game_rejects_bad_matrices(P, pattern):
    with pytest.raises(ValueError, match=pattern):
        G.make_game(P)


@pytest.mark.parametrize(
    "ref, pattern",
    [
        ([0.5, 0.5], r"^ref_probs: expected shape \(3\), got \(2,\)"),
        ([0.5, 0.3, 0.1], r"^ref_probs: probabilities must sum to 1"),
        ([1.2, -0.1, -0.1], r"^ref_probs: probabilities must be >= 0"),
        ([0.5, 0.5, 0.0], r"^ref_probs: the reference policy must have full support.*index 2"),
        ([0.5, np.inf, 0.0], r"^ref_probs: entries must be finite"),
    ],
)
def test_make_game_rejects_bad_reference(ref, pattern):
    with pytest.raises(ValueError, match=pattern):
        G.make_game(G.dice_matrix(), ref)


def test_constructor_argument_errors():
    with pytest.raises(ValueError, match="^rewards: expected a vector"):
        G.bradley_terry(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="^rewards: entries must be finite"):
        G.bradley_terry([0.0, np.nan])
    with pytest.raises(ValueError, match="^K: must be >= 2"):
        G.cyclic(1)
    with pytest.raises(ValueError, match="^K: must be an integer"):
        G.cyclic(3.0)
    with pytest.raises(ValueError, match=r"^strength: must lie in \[0, 0\.5\]"):
        G.cyclic(3, strength=0.7)
    with pytest.raises(ValueError, match="^K: must be >= 2"):
        G.egpo_random(jax.random.PRNGKey(0), 1)
    with pytest.raises(ValueError, match="^ref_probs: the reference policy must have full"):
        G.nontransitive_dice([1.0, 0.0, 0.0])


def test_make_game_skips_checks_when_traced():
    bad = np.full((3, 3), 0.9)  # invalid, but its values are unknown under jit
    g = jax.jit(lambda P: G.make_game(P))(bad)
    assert g.P.shape == (3, 3) and g.ref_probs.shape == (3,)


# ------------------------------------------------------------------------------ loading


def test_load_game_round_trip(tmp_path):
    g = game_at(egpo_batch(0), 0)
    logits = np.log(np.asarray(g.ref_probs, dtype=np.float64)) + 3.0
    np.save(tmp_path / "P.npy", np.asarray(g.P, dtype=np.float64))
    np.save(tmp_path / "ref.npy", logits)
    loaded = G.load_game(tmp_path / "P.npy", str(tmp_path / "ref.npy"))
    np.testing.assert_allclose(loaded.P, g.P, atol=1e-7)
    np.testing.assert_allclose(loaded.ref_probs, g.ref_probs, rtol=1e-5)
    uniform = G.load_game(tmp_path / "P.npy")
    np.testing.assert_allclose(uniform.ref_probs, 1 / K)

    games = egpo_batch(1, 3, 4)  # float32
    np.save(tmp_path / "Pn.npy", np.asarray(games.P))
    np.save(tmp_path / "refn.npy", np.log(np.asarray(games.ref_probs)))
    batch = G.load_game(tmp_path / "Pn.npy", tmp_path / "refn.npy")
    assert batch.P.shape == (3, 4, 4) and batch.ref_probs.shape == (3, 4)
    np.testing.assert_allclose(batch.P, games.P)
    np.testing.assert_allclose(batch.ref_probs, games.ref_probs, rtol=1e-5)
    np.save(tmp_path / "ref4.npy", np.zeros(4))
    shared = G.load_game(tmp_path / "Pn.npy", tmp_path / "ref4.npy")
    np.testing.assert_allclose(shared.ref_probs, 0.25)


def test_load_game_errors(tmp_path):
    def save(name, arr):
        np.save(tmp_path / name, arr)
        return tmp_path / name

    good = save("good.npy", G.dice_matrix())
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "junk.npy").write_text("not an array")
    np.savez(tmp_path / "arch.npz", P=G.dice_matrix())
    cases = [
        (tmp_path / "missing.npy", None, r"^matrix: file not found"),
        (tmp_path / "empty.npy", None, r"^matrix: file .* is empty"),
        (tmp_path / "junk.npy", None, r"^matrix: cannot read"),
        (save("obj.npy", np.array([{"a": 1}], dtype=object)), None, r"^matrix: cannot read"),
        (tmp_path / "arch.npz", None, r"^matrix: expected a \.npy file"),
        (save("zero.npy", np.zeros((0, 0))), None, r"^matrix: .* empty array"),
        (save("int.npy", np.eye(3, dtype=int)), None, r"^matrix: .*floating.*int64"),
        (save("str.npy", np.array([["a"]])), None, r"^matrix: .*floating"),
        (save("rect.npy", np.full((3, 2), 0.5)), None, r"^matrix: expected a square"),
        (save("4d.npy", np.full((1, 1, 3, 3), 0.5)), None, r"^matrix: expected a square"),
        (
            save("skew.npy", np.array([[0.5, 0.9], [0.9, 0.5]])),
            None,
            r"^matrix: must satisfy P \+ Pᵀ = 1.*worst pair \(0, 1\)",
        ),
        (
            save("stack.npy", np.stack([G.dice_matrix(), G.dice_matrix().T * 0 + 0.7])),
            None,
            r"^matrix\[1\]: the diagonal",
        ),
        (good, save("r2.npy", np.zeros(2)), r"^ref_logits: expected shape \(3,\).*got \(2,\)"),
        (good, save("r33.npy", np.zeros((3, 3))), r"^ref_logits: expected shape \(3,\)"),
        (good, save("rnan.npy", np.array([0.0, np.nan, 1.0])), r"^ref_logits: .*finite"),
        (good, save("rint.npy", np.zeros(3, dtype=int)), r"^ref_logits: .*floating"),
        (good, tmp_path / "empty.npy", r"^ref_logits: file .* is empty"),
        (good, save("rwide.npy", np.array([0.0, 0.0, -800.0])), r"^ref_logits: .*full support"),
    ]
    for matrix, ref, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            G.load_game(matrix, ref)
    with pytest.raises(ValueError, match=r"^--matrix: file not found"):
        G.load_game(tmp_path / "missing.npy", matrix_field="--matrix")
    stack = save("stack2.npy", np.stack([G.dice_matrix()] * 2))
    with pytest.raises(ValueError, match=r"^ref_logits: expected shape \(3,\) or \(2, 3\)"):
        G.load_game(stack, save("r4.npy", np.zeros((2, 4))))


def test_unconverged_nash_is_nan_not_a_best_effort_at_another_tau():
    """With too few continuation trials the solver stops at a larger τ (``converged``
    False). ``nash_equilibrium`` / ``log_nash_equilibrium`` (and so the training target
    of the game kind, and ``kl_to_nash``) must then be NaN, not that other τ's equilibrium;
    a converged solve is returned unchanged."""
    from copg_jax.kinds import get_kind

    g = egpo_single(jax.random.PRNGKey(3), K)
    tau = 1e-3
    sol = X.solve_nash(g, tau, max_trials=1)
    assert not bool(sol.converged)
    assert np.all(np.isfinite(sol.log_probs))  # a best effort exists ...
    # ... and it is not π*_τ: its fixed-point residual at τ is far from 0.
    assert float(X.fixed_point_residual(g, jnp.exp(sol.log_probs), tau)) > 1e-3
    assert np.all(np.isnan(X.nash_equilibrium(g, tau, max_trials=1)))
    assert np.all(np.isnan(X.log_nash_equilibrium(g, tau, max_trials=1)))
    full = X.solve_nash(g, tau)
    assert bool(full.converged)
    np.testing.assert_array_equal(log_nash(g, tau), full.log_probs)
    target = get_kind("game").target(g, {"tau": jnp.asarray(tau)})
    np.testing.assert_array_equal(target["log_probs"], full.log_probs)
    m = get_kind("game").metrics(g, jnp.zeros(K), jnp.full(K, 1 / K), {"tau": tau},
                                 {"probs": jnp.full(K, jnp.nan), "log_probs": jnp.full(K, jnp.nan)})
    assert np.isnan(float(m["kl_to_nash"]))


def test_gap_of_policies_side_by_side_is_the_gap_of_each_within_float32_error():
    """duality_gap on ``[K, B]`` (actions first, how the training loop evaluates logged
    snapshots) vs ``vmap`` over ``[K]``: near π*_τ at τ = 0.001, where a float32 gap of
    ~1e-6 carries a relative error of order 1e-2 (logits Pπ/τ ~ 1e3 rounded at ~1e-4), the two
    float32 evaluations differ by no more than each one differs from float64 (×2 slack)."""
    game = G.egpo_random(jax.random.PRNGKey(4), 10)
    tau = 0.001
    with jax.enable_x64(True):
        g64 = G.PreferenceGame(P=jnp.asarray(game.P, jnp.float64),
                               ref_probs=jnp.asarray(game.ref_probs, jnp.float64))
        log_nash = X.log_nash_equilibrium(g64, tau)
        noise = 1e-3 * jax.random.normal(jax.random.PRNGKey(5), (64, 10), jnp.float64)
        pis = np.asarray(jax.nn.softmax(log_nash[None, :] + noise), np.float32)
        # The float64 gap of the very float32 policies both evaluations see.
        exact = np.asarray(jax.vmap(lambda p: X.duality_gap(g64, p, tau))(
            jnp.asarray(pis, jnp.float64)))
    pis = jnp.asarray(pis)
    one = np.asarray(jax.jit(jax.vmap(lambda p: X.duality_gap(game, p, tau)))(pis))
    side = np.asarray(jax.jit(lambda p: X.duality_gap(game, p.T, tau))(pis))
    assert side.shape == (64,) and np.all(side >= 0)
    err = np.maximum(np.abs(one - exact), np.abs(side - exact))
    assert np.all(np.abs(side - one) <= 2 * err + 1e-12)
    assert np.median(np.abs(one - exact) / exact) < 0.1  # the float32 error being compared
