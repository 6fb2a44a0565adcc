"""Bad inputs are refused at the door with a one-line ``ValueError`` naming the field and
the offending value (library), or ``error: ...`` on one line with exit code 2 (CLI).

One table per entry point: the public constructors (``make_bandit``, ``make_game``,
``load_game``, ``make_mdp``, ``load_mdp``, ``StaticConfig``, ``Method.resolve_hparams``,
``get_method``), sweep validation (``SweepSpec`` through ``sweep.validate`` / ``sweep``),
results folders, and the ``experiments.copg_bandit`` CLI (cases not in ``test_cli.py``).
Each row gives the texts the message must contain: the field and the value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from copg_jax import results as rs
from copg_jax import sweep as sw
from copg_jax.algos.base import StaticConfig
from copg_jax.algos.registry import get_method
from copg_jax.envs.bandit import make_bandit, paper_bandit
from copg_jax.envs.games import load_game, make_game
from copg_jax.envs.mdp import load_mdp, make_mdp

ROOT = Path(__file__).resolve().parents[1]
T_OK = np.full((2, 2, 2), 0.5)
R_OK = np.zeros((2, 2))
RHO_OK = np.array([0.5, 0.5])
HALF = np.full((2, 2), 0.5)
CFG = StaticConfig(num_steps=10, log_every=5, batch_size=4, dataset_size=16)


def _npy(d: Path, name: str, arr) -> Path:
    np.save(d / name, arr, allow_pickle=True)  # the writer may pickle; the reader must not
    return d / name


def _npz(d: Path, name: str, **arrays) -> Path:
    np.savez(d / name, **arrays)
    return d / name


def _empty(d: Path, name: str) -> Path:
    (d / name).write_bytes(b"")
    return d / name


def _spec(**kw) -> sw.SweepSpec:
    base = dict(experiment="bad_inputs", problem_kind="bandit", methods=["copg"],
                grid={"lr": [1e-2]}, num_seeds=1, cfg=CFG)
    return sw.SweepSpec(**{**base, **kw})


def _other_experiment_folder(d: Path) -> Path:
    out = d / "other"
    rs.prepare_folder(out, {"experiment": "preference_game", "tau": [0.1]}, resume=False,
                      overwrite=False)
    return out


# id -> (call taking a temporary folder, texts the message must contain)
CASES = {
    # ---- bandits
    "bandit-mu1-negative": (lambda d: make_bandit([1, 2, 3], mu1=[-0.1, 0.5, 0.6]),
                            ["mu1", "-0.1"]),
    "bandit-mu1-sum-not-1": (lambda d: make_bandit([1, 2, 3], mu1=[0.2, 0.2, 0.2]),
                             ["mu1", "sum 0.6"]),
    "bandit-mu2-wrong-length": (lambda d: make_bandit([1, 2, 3], mu2=[0.5, 0.5]),
                                ["mu2", "(3)", "(2,)"]),
    "bandit-rewards-nan": (lambda d: make_bandit([1, np.nan, 3]), ["rewards", "nan"]),
    "bandit-rewards-inf": (lambda d: make_bandit([1, np.inf, 3]), ["rewards", "inf"]),
    "bandit-mu1-nan": (lambda d: make_bandit([1, 2], mu1=[np.nan, 1.0]), ["mu1", "nan"]),
    "bandit-ref-zero": (lambda d: make_bandit([1, 2, 3], ref_probs=[0.5, 0.5, 0.0]),
                        ["ref_probs", "0."]),
    "bandit-one-arm": (lambda d: make_bandit([1.0]), ["rewards", "(1,)"]),
    "bandit-unknown-noise": (lambda d: make_bandit([1, 2], noise="poisson"),
                             ["noise", "poisson"]),
    "bandit-bernoulli-rewards": (lambda d: make_bandit([1, 2], noise="bernoulli"),
                                 ["rewards", "2."]),
    "bandit-gaussian-scale-0": (lambda d: make_bandit([1, 2], noise="gaussian",
                                                      noise_scale=0.0),
                                ["noise_scale", "0.0"]),
    "bandit-rewards-strings": (lambda d: make_bandit(["a", "b"]), ["rewards", "<U1"]),
    # ---- games
    "game-not-square": (lambda d: make_game(np.full((2, 3), 0.5)), ["P", "(2, 3)"]),
    "game-diagonal-not-half": (lambda d: make_game([[0.4, 0.5], [0.5, 0.6]]),
                               ["P[0, 0]", "0.4"]),
    "game-P-plus-PT-not-1": (lambda d: make_game([[0.5, 0.7], [0.7, 0.5]]),
                             ["P + Pᵀ = 1", "1.4"]),
    "game-entry-outside-01": (lambda d: make_game([[0.5, 1.5], [-0.5, 0.5]]), ["P", "1.5"]),
    "game-entry-nan": (lambda d: make_game([[0.5, np.nan], [0.5, 0.5]]), ["P", "nan"]),
    "game-string-matrix": (lambda d: make_game(np.array([["a", "b"], ["c", "d"]])),
                           ["P", "<U1"]),
    "game-ref-zero": (lambda d: make_game(HALF, [1.0, 0.0]), ["ref_probs", "index 1"]),
    "load_game-pickled-object-array": (
        lambda d: load_game(_npy(d, "obj.npy", np.array([[0.5, "x"], [None, 0.5]],
                                                        dtype=object))),
        ["matrix", "allow_pickle=False"]),
    "load_game-string-array": (
        lambda d: load_game(_npy(d, "str.npy", np.array([["a", "b"], ["c", "d"]]))),
        ["matrix", "<U1"]),
    "load_game-int-array": (lambda d: load_game(_npy(d, "int.npy", np.array([[1, 0], [1, 1]]))),
                            ["matrix", "int64"]),
    "load_game-empty-file": (lambda d: load_game(_empty(d, "e.npy")), ["matrix", "empty"]),
    "load_game-missing-file": (lambda d: load_game(d / "nope.npy"), ["matrix", "nope.npy"]),
    "load_game-batch-member-bad": (
        lambda d: load_game(_npy(d, "b.npy", np.stack([HALF, [[0.5, 0.9], [0.9, 0.5]]]))),
        ["matrix[1]", "1.8"]),
    "load_game-ref-wrong-length": (
        lambda d: load_game(_npy(d, "g.npy", HALF), _npy(d, "l.npy", np.zeros(3))),
        ["ref_logits", "(3,)"]),
    # ---- MDPs
    "mdp-T-rows-not-1": (lambda d: make_mdp(np.full((2, 2, 2), 0.4), R_OK, RHO_OK, 3),
                         ["T", "sum 0.8"]),
    "mdp-T-negative": (lambda d: make_mdp(np.array([[[1.5, -0.5]] * 2] * 2), R_OK, RHO_OK, 3),
                       ["T", "-0.5"]),
    "mdp-r-wrong-shape": (lambda d: make_mdp(T_OK, np.zeros((3, 2)), RHO_OK, 3),
                          ["r", "(3, 2)"]),
    "mdp-r-inf": (lambda d: make_mdp(T_OK, [[0, np.inf], [0, 0]], RHO_OK, 3), ["r", "inf"]),
    "mdp-rho0-sum": (lambda d: make_mdp(T_OK, R_OK, [0.5, 0.6], 3), ["rho0", "sum 1.1"]),
    "mdp-horizon-0": (lambda d: make_mdp(T_OK, R_OK, RHO_OK, 0), ["horizon", "0"]),
    "mdp-discount-above-1": (lambda d: make_mdp(T_OK, R_OK, RHO_OK, 3, discount=1.5),
                             ["discount", "1.5"]),
    "mdp-string-T": (lambda d: make_mdp(np.full((2, 2, 2), "a"), R_OK, RHO_OK, 3),
                     ["T", "<U1"]),
    "load_mdp-missing-rho0": (
        lambda d: load_mdp(_npz(d, "m.npz", T=T_OK, r=R_OK, horizon=np.int64(3))),
        ["rho0", "missing"]),
    "load_mdp-T-rows-not-1": (
        lambda d: load_mdp(_npz(d, "m.npz", T=np.full((2, 2, 2), 0.4), r=R_OK, rho0=RHO_OK,
                                horizon=np.int64(3))),
        ["T", "0.8"]),
    "load_mdp-r-wrong-shape": (
        lambda d: load_mdp(_npz(d, "m.npz", T=T_OK, r=np.zeros(2), rho0=RHO_OK,
                                horizon=np.int64(3))),
        ["r", "(2,)"]),
    "load_mdp-float-horizon": (
        lambda d: load_mdp(_npz(d, "m.npz", T=T_OK, r=R_OK, rho0=RHO_OK, horizon=3.0)),
        ["horizon", "3."]),
    "load_mdp-pickled-object-T": (
        lambda d: load_mdp(_npz(d, "m.npz", T=np.array([[0.5, None]], dtype=object), r=R_OK,
                                rho0=RHO_OK, horizon=np.int64(3))),
        ["T", "allow_pickle=False"]),
    "load_mdp-empty-file": (lambda d: load_mdp(_empty(d, "e.npz")), ["mdp", "e.npz"]),
    "load_mdp-npy-not-npz": (lambda d: load_mdp(_npy(d, "m.npy", np.zeros(3))),
                             ["mdp", "m.npy"]),
    # ---- static config, hyperparameters, methods
    "config-batch_size-0": (lambda d: StaticConfig(batch_size=0), ["batch_size", "0"]),
    "config-unknown-optimizer": (lambda d: StaticConfig(optimizer="rmsprop"),
                                 ["optimizer", "rmsprop"]),
    "config-log_every-not-divisor": (lambda d: StaticConfig(num_steps=10, log_every=3),
                                     ["log_every", "3"]),
    "config-batch-above-dataset": (lambda d: StaticConfig(batch_size=100, dataset_size=10),
                                   ["batch_size", "100"]),
    "config-float-num_steps": (lambda d: StaticConfig(num_steps=10.0), ["num_steps", "10.0"]),
    "config-num_samples-1": (lambda d: StaticConfig(num_samples=1), ["num_samples", "1"]),
    "config-exact-only-method-sampled": (lambda d: get_method("md").check_config(CFG),
                                         ["mode", "md"]),
    "hparam-beta-0": (lambda d: get_method("copg").resolve_hparams({"beta": 0.0}),
                      ["beta", "0.0"]),
    "hparam-beta-negative": (lambda d: get_method("copg").resolve_hparams({"beta": -1.0}),
                             ["beta", "-1.0"]),
    "hparam-beta-inf": (lambda d: get_method("copg").resolve_hparams({"beta": np.inf}),
                        ["beta", "inf"]),
    "hparam-beta-nan": (lambda d: get_method("copg").resolve_hparams({"beta": np.nan}),
                        ["beta", "nan"]),
    "hparam-tau-negative": (
        lambda d: get_method("nash_md", "game").resolve_hparams({"tau": -2.0}),
        ["tau", "-2.0"]),
    "hparam-lr-0": (lambda d: get_method("copg").resolve_hparams({"lr": 0.0}), ["lr", "0.0"]),
    "hparam-mix-above-1": (
        lambda d: get_method("nash_md_pg", "game").resolve_hparams({"mix": 1.5}),
        ["mix", "1.5"]),
    "hparam-mix-negative": (
        lambda d: get_method("nash_md_pg", "game").resolve_hparams({"mix": -0.1}),
        ["mix", "-0.1"]),
    "hparam-clip_eps-0": (lambda d: get_method("ppo_clip").resolve_hparams({"clip_eps": 0.0}),
                          ["clip_eps", "0.0"]),
    "hparam-unknown-name": (lambda d: get_method("copg").resolve_hparams({"gamma": 0.9}),
                            ["hparams", "gamma"]),
    "hparam-string-value": (lambda d: get_method("copg").resolve_hparams({"beta": "big"}),
                            ["beta", "big"]),
    "method-unknown": (lambda d: get_method("nope"), ["method", "nope"]),
    "method-wrong-problem": (lambda d: get_method("copg", "game"), ["method", "copg", "game"]),
    # ---- sweeps and results folders
    "sweep-no-methods": (lambda d: sw.validate(_spec(methods=[])), ["methods", "[]"]),
    "sweep-seeds-0": (lambda d: sw.validate(_spec(num_seeds=0)), ["seeds", "0"]),
    "sweep-empty-grid": (lambda d: sw.validate(_spec(grid={"lr": []})), ["lr", "grid"]),
    "sweep-method-twice": (lambda d: sw.validate(_spec(methods=["copg", "copg"])),
                           ["methods", "copg"]),
    "sweep-unknown-method": (lambda d: sw.validate(_spec(methods=["nope"])),
                             ["method", "nope"]),
    "sweep-grid-lr-negative": (lambda d: sw.validate(_spec(grid={"lr": [1e-2, -1.0]})),
                               ["lr", "-1.0"]),
    "sweep-grid-unknown-name": (lambda d: sw.validate(_spec(grid={"lrr": [1e-2]})),
                                ["hparams", "lrr"]),
    "sweep-method_cfg-bad": (
        lambda d: sw.validate(_spec(method_cfg={"copg": {"num_samples": 1}})),
        ["num_samples", "1"]),
    "sweep-folder-of-another-experiment": (
        lambda d: sw.sweep(_spec(), paper_bandit(), _other_experiment_folder(d),
                           progress=False),
        ["out", "other", "preference_game"]),
    "results-out-is-a-file": (
        lambda d: rs.prepare_folder(_empty(d, "afile"), {}, resume=False, overwrite=False),
        ["out", "afile"]),
    "results-resume-without-config": (
        lambda d: rs.prepare_folder(d, {}, resume=True, overwrite=False),
        ["resume", "config.json"]),
}

MESSAGES: dict[str, str] = {}  # id -> message (for reports)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_naming_field_and_value(case, tmp_path):
    call, texts = CASES[case]
    with pytest.raises(ValueError) as info:
        call(tmp_path)
    msg = str(info.value)
    MESSAGES[case] = msg
    assert "\n" not in msg, msg
    for text in texts:
        assert text in msg, (text, msg)


# ------------------------------------------------------------------------------ the CLI

SMALL = ["--seeds", "1", "--epochs", "1", "--num_pairs", "64", "--batch_size", "32",
         "--methods", "copg,md", "--noprogress"]

# flags -> texts the one-line ``error:`` must contain (cases test_cli.py does not cover)
CLI_CASES = {
    "mu1-negative": (["--mu1=-0.1,0.5,0.6"], ["--mu1", "-0.1"]),
    "mu2-sum-not-1": (["--mu2=0.3,0.3,0.3"], ["--mu2", "0.9"]),
    "ref-zero": (["--ref=0,0.5,0.5"], ["--ref", "0."]),
    "ref-wrong-length": (["--ref=0.5,0.5"], ["--ref", "2 entries"]),
    "rewards-inf": (["--rewards=1,inf,2"], ["--rewards", "inf"]),
    "lr-0": (["--lr=0"], ["lr", "0.0"]),
    "eta-negative": (["--eta=-1"], ["eta", "-1.0"]),
    "mu_mix-1": (["--mu_mix=0.5,1"], ["--mu_mix", "1"]),
    "batch-above-pairs": (["--batch_size=128"], ["--batch_size", "128"]),
    "folder-of-another-experiment": (["--out={other}"], ["out", "preference_game"]),
}


def _popen(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen([sys.executable, "-m", "experiments.copg_bandit", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """All bad invocations, started at once (each is a Python start-up)."""
    base = tmp_path_factory.mktemp("cli")
    other = base / "other"
    other.mkdir()
    (other / rs.CONFIG).write_text(json.dumps(
        {"fingerprint": "0" * 16, "config": {"experiment": "preference_game"}}))
    procs = {}
    for i, (case, (flags, _)) in enumerate(CLI_CASES.items()):
        flags = [f.format(other=other) for f in flags]
        out = [] if any(f.startswith("--out") for f in flags) else ["--out", str(base / f"o{i}")]
        procs[case] = _popen([*SMALL, *out, *flags])
    results = {}
    for case, p in procs.items():
        out, err = p.communicate(timeout=300)
        results[case] = (p.returncode, out, err)
    return base, other, results


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_line_error(cli_runs, case):
    base, other, results = cli_runs
    code, _, err = results[case]
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    MESSAGES[f"cli-{case}"] = lines[0]
    for text in CLI_CASES[case][1]:
        assert text in lines[0], (text, lines[0])
    i = list(CLI_CASES).index(case)
    assert not (base / f"o{i}").exists()
    assert sorted(p.name for p in other.iterdir()) == [rs.CONFIG]


# ------------------------------------------------------------------- NaN guard (sweep)


def _nan_after_estimate(ctx, logits, aux, batch):
    """Ascent along e_0 until the logit gap exceeds 5.5, then NaN: with SGD and lr = 1
    the gap is t after t updates, so the update at t = 6 is NaN and the first logged
    step (log_every = 5) with a NaN metric is 10; with lr = 1e-3 it stays finite."""
    import jax.numpy as jnp

    e0 = jnp.zeros_like(logits).at[0].set(1.0)
    return jnp.where(logits[0] - logits[1] > 5.5, jnp.nan, e0)


@pytest.fixture
def nan_method(monkeypatch):
    import dataclasses

    from copg_jax.algos import registry

    base = get_method("copg")
    m = dataclasses.replace(base, name="nan_after_6", estimate=_nan_after_estimate)
    monkeypatch.setitem(registry._REGISTRY, ("bandit", m.name), m)
    return m.name


def _nan_spec(name: str) -> sw.SweepSpec:
    cfg = StaticConfig(num_steps=20, log_every=5, batch_size=8, dataset_size=16,
                       optimizer="sgd")
    return sw.SweepSpec(experiment="nan_guard", problem_kind="bandit", methods=[name],
                        grid={"lr": [1e-3, 1.0]}, num_seeds=2, cfg=cfg, logs_per_chunk=1)


def test_check_nans_names_method_point_instance_seed_and_step(nan_method, tmp_path):
    problems = [paper_bandit(), paper_bandit()]
    # Off by default: the NaN ends up in the curves (from logged step 10 on, lr = 1 only).
    res = sw.sweep(_nan_spec(nan_method), problems, progress=False)
    reg = res.curves[f"{nan_method}/regret"]  # [G, I, S, L]
    assert np.all(np.isfinite(reg[0])) and np.all(np.isfinite(reg[1, ..., :2]))
    assert np.all(np.isnan(reg[1, ..., 2:]))

    out = tmp_path / "run"
    with pytest.raises(ValueError) as info:
        sw.sweep(_nan_spec(nan_method), problems, out, progress=False, check_nans=True)
    msg = str(info.value)
    MESSAGES["sweep-check_nans"] = msg
    assert "\n" not in msg
    for text in (f"method {nan_method!r}", "'lr': 1.0", "instance 0", "seed 0",
                 "logged step 10", "JAX_DEBUG_NANS=1"):
        assert text in msg, (text, msg)
    assert not (out / rs.CURVES).exists()
    # The failing chunk is not checkpointed: the checkpoint holds logged steps 0 and 5.
    ck = rs.read_npz(out / rs.CHECKPOINT / "group.npz")
    assert int(ck["chunk"]) == 1
