"""The NumPy benchmark baseline computes what the JAX code computes.

* Counting distinct pairs (``counts=True``, the identity of ``copg_jax.batch_counts``)
  gives the per-pair baseline's final regrets to float32 rounding: same random stream,
  only the order of the sums differs.
* The counts partition the batch, checked by brute force.
"""

from __future__ import annotations

import numpy as np

from benchmarks import numpy_baseline as nb
from copg_jax.envs.bandit import paper_bandit

METHODS = ["copg", "ipo", "pg", "pg_value_baseline", "is_pg", "is_pg_truncated", "rloo", "md"]


def paper_np() -> nb.BanditNP:
    p = paper_bandit()
    return nb.BanditNP(*(np.asarray(a) for a in (p.rewards, p.ref_probs, p.mu1, p.mu2)))


def test_counts_give_the_per_pair_baseline_to_rounding():
    bd = paper_np()
    raw, _ = nb.run_bandit_offline(bd, METHODS, 8, 2048, 256, 3, lr=1e-2)
    cnt, _ = nb.run_bandit_offline(bd, METHODS, 8, 2048, 256, 3, lr=1e-2, counts=True)
    for m in METHODS:
        np.testing.assert_allclose(cnt[m], raw[m], rtol=1e-4, atol=1e-6, err_msg=m)


def test_pair_counts_partition_the_batch():
    bd = paper_np()
    rng = np.random.default_rng(0)
    y, _, pref = bd.behaviour(rng, (4, 500))
    c = nb.pair_counts(bd, y, pref)
    assert c.shape == (4, 18) and np.all(c.sum(1) == 500)
    ty, _, tp = nb.pair_table(bd, 4, True)
    for s in range(4):
        for u in range(18):
            hits = np.all(y[s] == ty[s, u], axis=-1) & ((pref[s] > 0.5) == (tp[s, u] > 0.5))
            assert c[s, u] == hits.sum()
