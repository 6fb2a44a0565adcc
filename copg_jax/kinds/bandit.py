"""The bandit problem kind: targets, metrics and behaviour data for the training loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from copg_jax.batches import Groups
from copg_jax.envs.bandit import Bandit, in_float64, sample_rewards
from copg_jax.exact import bandit as eb
from copg_jax.exact.common import kl, kl_logits
from copg_jax.kinds.base import ProblemKind, register_kind
from copg_jax.sampling import sample_categorical


def _init_logits(problem: Bandit) -> jax.Array:
    return jnp.log(problem.ref_probs)


def _target(problem: Bandit, hp) -> dict:
    beta = hp["beta"]
    log_probs = jax.nn.log_softmax(eb.optimal_logits(problem, beta))
    return {"probs": jnp.exp(log_probs), "log_probs": log_probs,
            "value": eb.optimal_value(problem, beta)}


def _metrics(problem: Bandit, logits, avg_probs, hp, target) -> dict:
    probs = jax.nn.softmax(logits)
    beta = hp["beta"]
    # From logits: accurate near π* (float32 at large β) and finite where π* underflows.
    d = (logits - jnp.log(problem.ref_probs)) - problem.rewards / beta  # θ − ln π* + c
    kl_opt = kl_logits(logits, target["log_probs"], d)
    return {
        "regret": beta * kl_opt,
        "kl_to_ref": kl(probs, problem.ref_probs),
        "kl_to_opt": kl_opt,
        "expected_reward": probs @ problem.rewards,
    }


def _behaviour_sample(key: jax.Array, problem: Bandit, n: int, cfg) -> Groups:
    """Groups of ``k = cfg.num_samples`` arms; element i ~ μ1 for even i, μ2 for odd i
    (so pairs are ``y ~ μ1, y' ~ μ2`` as in CoPG §5). Observed rewards are drawn once;
    ``pref`` is a Bradley–Terry label ``1{y ≻ y'} ~ Bernoulli(σ(R(y) − R(y')))`` for the
    first two elements, drawn once (IPO/DPO data)."""
    k = cfg.num_samples
    k_mu1, k_mu2, k_r, k_pref = jax.random.split(key, 4)
    n1 = (k + 1) // 2
    y1 = sample_categorical(k_mu1, problem.mu1, (n, n1))
    y2 = sample_categorical(k_mu2, problem.mu2, (n, k - n1))
    # Interleave: columns 0,2,4.. from μ1 and 1,3,.. from μ2.
    y = jnp.zeros((n, k), jnp.int32).at[:, 0::2].set(y1).at[:, 1::2].set(y2)
    r = sample_rewards(k_r, problem, y)
    logit = problem.rewards[y[:, 0]] - problem.rewards[y[:, 1]]
    pref = (jax.random.uniform(k_pref, (n,), dtype=r.dtype) < jax.nn.sigmoid(logit)).astype(
        r.dtype
    )
    return Groups(y=y, r=r, pref=pref)


BANDIT = register_kind(ProblemKind(
    name="bandit",
    problem_type=Bandit,
    reg_name="beta",
    init_logits=_init_logits,
    target=_target,
    metrics=_metrics,
    behaviour_sample=_behaviour_sample,
    metric_names=("regret", "kl_to_ref", "kl_to_opt", "expected_reward"),
    in_float64=in_float64,
))
