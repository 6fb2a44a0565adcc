"""The contextual-bandit problem kind (SPEC §7): the bandit kind in every context,
averaged over the context distribution ρ.

Logits are ``[X, K]``. The target is π*(·|x) per context and ``J* = Σ_x ρ(x) J*_x``; every
metric is the ρ-average of the bandit kind's per-context metric (regret
``J* − J(π) = Σ_x ρ(x) β KL(π(·|x) ‖ π*(·|x))``, KL to π_ref, KL to π*, expected reward).
Behaviour data: ``x ~ ρ``, then a bandit group in context ``x`` (pairs ``y ~ μ1(·|x),
y' ~ μ2(·|x)``, observed rewards, a Bradley–Terry label).
"""

from __future__ import annotations

import jax

from copg_jax.batches import ContextGroups
from copg_jax.envs.contextual import (
    ContextualBandit,
    context_bandit,
    in_float64,
    per_context,
)
from copg_jax.kinds.bandit import BANDIT
from copg_jax.kinds.base import ProblemKind, register_kind
from copg_jax.sampling import sample_categorical


def _target(problem: ContextualBandit, hp) -> dict:
    per = jax.vmap(BANDIT.target, in_axes=(0, None))(per_context(problem), hp)
    return {"probs": per["probs"], "log_probs": per["log_probs"],
            "values": per["value"], "value": problem.context_probs @ per["value"]}


def _metrics(problem: ContextualBandit, logits, avg_probs, hp, target) -> dict:
    per_target = {"probs": target["probs"], "log_probs": target["log_probs"]}
    per = jax.vmap(BANDIT.metrics, in_axes=(0, 0, 0, None, 0))(
        per_context(problem), logits, avg_probs, hp, per_target)
    return {k: problem.context_probs @ v for k, v in per.items()}


def sample_contexts(key: jax.Array, problem: ContextualBandit, n: int) -> jax.Array:
    """``n`` contexts ``x ~ ρ`` (int32)."""
    return sample_categorical(key, problem.context_probs, (n,))


def _behaviour_sample(key: jax.Array, problem: ContextualBandit, n: int,
                      cfg) -> ContextGroups:
    """``x ~ ρ``, then one bandit behaviour group in context ``x``
    (:data:`copg_jax.kinds.bandit.BANDIT`'s sampler with ``n = 1``)."""
    k_x, k_g = jax.random.split(key)
    x = sample_contexts(k_x, problem, n)

    def one(xb, kb):
        g = BANDIT.behaviour_sample(kb, context_bandit(problem, xb), 1, cfg)
        return jax.tree_util.tree_map(lambda a: a[0], g)

    g = jax.vmap(one)(x, jax.random.split(k_g, n))
    return ContextGroups(x=x, y=g.y, r=g.r, pref=g.pref)


CONTEXTUAL = register_kind(ProblemKind(
    name="contextual",
    problem_type=ContextualBandit,
    reg_name="beta",
    init_logits=BANDIT.init_logits,  # ln π_ref, here per context
    target=_target,
    metrics=_metrics,
    behaviour_sample=_behaviour_sample,
    metric_names=BANDIT.metric_names,
    features=lambda p: p.features,
    in_float64=in_float64,
))
