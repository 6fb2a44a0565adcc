"""``experiments.contextual_bandit`` and ``experiments.toy_lm`` end to end (subprocesses):
bad inputs are one-line errors naming the field with nothing written; small runs write
``summary.json`` with ``J_star`` and the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli_jobs import run_jobs

CB = "experiments.contextual_bandit"
LM = "experiments.toy_lm"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    good = dict(rewards=np.zeros((2, 3)), ref_probs=np.full((2, 3), 1 / 3),
                mu1=np.full((2, 3), 1 / 3), mu2=np.full((2, 3), 1 / 3),
                context_probs=np.array([0.5, 0.5]))
    np.savez(d / "rho.npz", **{**good, "context_probs": np.array([0.5, 0.6])})
    np.savez(d / "nan.npz", **{**good, "rewards": np.array([[0, np.nan, 0], [0, 0, 0]])})
    np.savez(d / "shape.npz", **{**good, "mu1": np.full((2, 4), 0.25)})
    table = np.zeros((2, 3, 3))
    table[0, 1, 1] = np.nan
    np.save(d / "nan_table.npy", table)
    np.save(d / "bad_table.npy", np.zeros((2, 3, 4)))
    return d


BAD = {
    CB: {
        "rho": (["--problem", "{d}/rho.npz"], "context_probs"),
        "nan": (["--problem", "{d}/nan.npz"], "rewards"),
        "shape": (["--problem", "{d}/shape.npz"], "mu1"),
        "policy": (["--policies", "tabular,transformer"], "--policies"),
        "sequence_class": (["--policies", "gru"], "--policies"),
        "md": (["--methods", "md", "--policies", "mlp", "--exact"], "policy: 'md'"),
    },
    LM: {
        "too_large_exact": (["--vocab", "4", "--length", "7", "--exact"],
                            "--exact: V^L = 4^7 = 16384 sequences exceed"),
        "sampled_policy": (["--length", "7", "--policy", "token_tabular"],
                           "--policy: V^L = 4^7"),
        "sampled_method": (["--length", "7", "--methods", "copg,md"], "--methods: ['md']"),
        "sampled_reward": (["--length", "7", "--reward", "random_net"],
                           "reward: 'random_net' is not available above"),
        "nan_table": (["--reward_table", "{d}/nan_table.npy"], "reward_table"),
        "bad_table": (["--reward_table", "{d}/bad_table.npy"], "reward_table: expected shape"),
        "ref": (["--ref", "teacher"], "--ref"),
        "policy": (["--policy", "mlp_big"], "--policy"),
    },
}


@pytest.mark.parametrize("module", [CB, LM])
def test_bad_inputs_are_one_line_errors_and_write_nothing(module, files, tmp_path):
    jobs = {k: [a.format(d=files) for a in args] + ["--seeds", "2"]
            for k, (args, _) in BAD[module].items()}
    results = run_jobs(module, tmp_path, jobs, timeout=600)
    for k, (rc, err, out) in results.items():
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
        assert rc == 2 and len(lines) == 1, (k, err[-2000:])
        assert BAD[module][k][1] in lines[0], (k, lines[0])
        assert not out.exists(), k


def test_small_runs_write_summaries_and_figures(tmp_path):
    cb = ["--contexts", "3", "--actions", "3", "--features", "2", "--seeds", "2", "--steps",
          "40", "--num_pairs", "256", "--batch_size", "32", "--methods", "copg,ipo,is_pg",
          "--noprogress"]
    lm = ["--prompts", "2", "--vocab", "2", "--length", "3", "--width", "4", "--seeds", "2",
          "--beta", "0.1,1", "--num_pairs", "64", "--batch_size", "16", "--noprogress"]
    # 17^3 = 4,913 sequences: above the enumeration limit, trained on drawn sequences
    sampled = ["--prompts", "2", "--vocab", "17", "--length", "3", "--width", "4", "--seeds",
               "2", "--beta", "0.1,1", "--num_pairs", "64", "--batch_size", "16", "--methods",
               "copg,dpo,ipo", "--mc_samples", "16", "--noprogress"]
    res = {**run_jobs(CB, tmp_path, {"cb": cb}, timeout=900),
           **run_jobs(LM, tmp_path, {"lm": lm, "sampled": sampled}, timeout=900)}
    rc, err, out = res["cb"]
    assert rc == 0, err[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert set(s["classes"]) == {"tabular", "log_linear", "mlp"} and s["J_star"] > 0
    for name, c in s["classes"].items():
        best = c["best_in_class"]["value"]
        for m, fp in c["fixed_points"].items():
            assert fp["value"] <= best + 1e-9, (name, m)  # the best in class bounds them
    assert (out / "regret_by_class.png").stat().st_size > 10_000
    rc, err, out = res["lm"]
    assert rc == 0, err[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert [e["hparams"]["beta"] for e in s["grid"]] == [0.1, 1.0]
    assert all(e["J_star"] > 0 and len(e["pi_star"]) == 2 for e in s["grid"])
    assert set(s["best_beta"]) == {"copg", "dpo", "ipo", "rloo", "is_pg"}
    assert set(s["claim"]) == {"dpo", "ipo"}
    for f in ("reward_vs_step", "final_reward_vs_beta", "reward_kl_frontier", "best_beta"):
        assert (out / f"{f}.png").stat().st_size > 10_000, f
    rc, err, out = res["sampled"]
    assert rc == 0, err[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["exact_metrics"] is False and s["J_star"] is None
    assert [e["hparams"]["beta"] for e in s["grid"]] == [0.1, 1.0]
    for e in s["grid"]:
        for m in ("copg", "dpo", "ipo"):
            st = e["methods"][m]
            assert 0 <= st["final_expected_reward_mean"] <= 1  # the rule's range
            assert np.isfinite(st["final_kl_to_ref_mean"])  # unbiased: may be < 0 at M = 16
            assert st["final_expected_reward_mc_se"] > 0 and "final_regret_mean" not in st
    assert set(s["claim"]) == {"dpo", "ipo"}
    assert (out / "best_beta.png").stat().st_size > 10_000
