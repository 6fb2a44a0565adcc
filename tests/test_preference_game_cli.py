"""The ``experiments.preference_game`` command line, end to end (subprocesses).

* Tiny runs (few steps, 1 τ) of ``--game`` egpo (2 games), dice, bt and of ``--matrix``/
  ``--ref_logits`` from .npy files write summary.json (documented keys: final gap/KL per
  method, per-game lists, ``nash`` per τ, ``pi_star_bandit`` for bt), curves.npz and gap.png.
* Exact-mode EGPO reaches a duality gap < 1e-6 on non-transitive dice (τ = 0.1) with a
  non-uniform reference (with uniform μ the start ln μ is already the equilibrium).
* ``--setting=egpo`` records the authors' lr of the τ, Nash-MD-PG's β = 2 lr/K and
  probability labels; a τ outside the authors' table is a one-line error.
* Bad inputs exit with code 2 and a one-line ``error: ...`` naming the flag, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_jobs import run_jobs

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("nash_md", "omd", "online_ipo2", "nash_md_pg", "egpo")
TINY = ["--steps", "20", "--log_every", "10", "--seeds", "2", "--tau", "0.1", "--noprogress"]


def _skewed(k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.uniform(size=(k, k))
    return np.where(np.tri(k, k, -1, bool), u, np.where(np.tri(k, k, 0, bool), 0.5, 1 - u.T))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every invocation, started at once (each is a Python start-up); name -> (code, err,
    out folder)."""
    base = tmp_path_factory.mktemp("pg")
    mats = base / "mats"
    mats.mkdir()
    np.save(mats / "P.npy", np.stack([_skewed(4, 0), _skewed(4, 1)]))
    np.save(mats / "logits.npy", np.array([0.3, -0.2, 1.0, 0.0]))
    from copg_jax.envs.games import dice_matrix

    np.save(mats / "dice.npy", dice_matrix())
    np.save(mats / "dice_logits.npy", np.array([1.0, 0.0, -1.0]))
    np.save(mats / "rect.npy", np.full((3, 4), 0.5))
    bad = _skewed(3, 2)
    bad[0, 1] += 0.1
    np.save(mats / "skew.npy", bad)
    jobs = {
        "egpo": ["--game", "egpo", "--num_games", "2", "--num_actions", "5", *TINY],
        # One method each elsewhere (every method costs a compile; the egpo run has all five).
        "dice": ["--game", "dice", "--methods", "nash_md_pg", *TINY],
        "bt": ["--game", "bt", "--methods", "omd", *TINY],
        "matrix": ["--matrix", str(mats / "P.npy"), "--ref_logits", str(mats / "logits.npy"),
                   "--methods", "online_ipo2", *TINY],
        "dice_exact": ["--matrix", str(mats / "dice.npy"), "--ref_logits",
                       str(mats / "dice_logits.npy"), "--exact", "--methods", "egpo",
                       "--lr", "0.5", "--steps", "300", "--tau", "0.1", "--seeds", "1",
                       "--noprogress"],
        "egpo_setting": ["--game", "egpo", "--num_games", "2", "--num_actions", "5",
                         "--setting", "egpo", "--exact", "--tau", "0.01", "--steps", "20",
                         "--methods", "nash_md_pg", "--noprogress"],
        "bad_setting_tau": ["--setting", "egpo", "--exact", "--tau", "0.5", "--steps", "20"],
        "bad_rect": ["--matrix", str(mats / "rect.npy"), *TINY],
        "bad_skew": ["--matrix", str(mats / "skew.npy"), *TINY],
        "bad_tau": ["--game", "dice", "--steps", "20", "--tau", "0"],
        "bad_game": ["--game", "chess", *TINY],
    }
    return run_jobs("experiments.preference_game", base, jobs)


def _summary(runs, name):
    code, err, out = runs[name]
    assert code == 0, err
    assert (out / "curves.npz").exists() and (out / "gap.png").exists()
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("name,n_games,k,methods", [
    ("egpo", 2, 5, METHODS), ("dice", 1, 3, ("nash_md_pg",)), ("bt", 1, 3, ("omd",)),
    ("matrix", 2, 4, ("online_ipo2",)),
])
def test_tiny_runs_write_summary(runs, name, n_games, k, methods):
    s = _summary(runs, name)
    assert len(s["grid"]) == 1 and s["grid"][0]["hparams"]["tau"] == 0.1
    assert set(s["grid"][0]["methods"]) == set(methods)
    for m in methods:
        st = s["grid"][0]["methods"][m]
        for key in ("final_gap_mean", "final_gap_ci95", "final_kl_to_nash_mean"):
            assert key in st, (m, key)
        assert np.isfinite(st["final_gap_mean"])
        if n_games > 1:
            assert len(st["final_gap_by_instance"]) == n_games
    nash = np.asarray(s["nash"]["tau=0.1"])
    assert nash.shape == (n_games, k)
    np.testing.assert_allclose(nash.sum(-1), 1.0, atol=1e-9)
    if name == "dice":
        np.testing.assert_allclose(nash[0], np.full(3, 1 / 3), atol=1e-9)
    if name == "bt":
        star = np.asarray(s["pi_star_bandit"]["tau=0.1"])
        assert star.shape == (3,) and np.argmax(star) == 0
        assert np.max(np.abs(star - nash[0])) > 1e-3  # the two targets differ
    if name == "matrix":
        mu = np.asarray(s["games"]["ref_probs"][0])
        z = np.exp([0.3, -0.2, 1.0, 0.0])
        np.testing.assert_allclose(mu, z / z.sum(), atol=1e-6)


def test_exact_egpo_solves_dice(runs):
    s = _summary(runs, "dice_exact")
    st = s["grid"][0]["methods"]["egpo"]
    assert st["mode"] == "exact"
    assert st["final_gap_mean"] < 1e-6
    curves = np.load(runs["dice_exact"][2] / "curves.npz")
    assert curves["egpo/gap"][0, 0, 0, 0] > 1e-3  # it started away from π*_τ


def test_egpo_setting_records_authors_step(runs):
    s = _summary(runs, "egpo_setting")
    cfg = s["config"]
    assert cfg["setting"] == "egpo" and cfg["labels"] == "probability"
    assert cfg["hparams"]["nash_md_pg"] == {"lr": 0.02, "mix": 2 * 0.02 / 5}
    assert cfg["static"]["num_steps"] == 20 and cfg["static"]["optimizer"] == "sgd"


@pytest.mark.parametrize("name,flag", [("bad_rect", "--matrix"), ("bad_skew", "--matrix"),
                                       ("bad_tau", "--tau"), ("bad_game", "--game"),
                                       ("bad_setting_tau", "--tau")])
def test_bad_input_is_one_line_error(runs, name, flag):
    code, err, out = runs[name]
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and flag in lines[0]
    assert not out.exists()
