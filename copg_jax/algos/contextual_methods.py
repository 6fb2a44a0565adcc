"""Every per-group bandit method, lifted to contextual bandits (SPEC §7).

In context ``x`` a contextual bandit is the bandit of CoPG §5, and the objective is the
ρ-average ``J(π) = Σ_x ρ(x) J_x(π(·|x))``, so ``∂J/∂θ[x] = ρ(x) ∇J_x``. A lifted method
keeps its bandit formulas unchanged:

* ``estimate``: each group ``b`` of a batch (context ``x_b ~ ρ``) gives the bandit
  method's direction ``g_x(θ[x_b]; group_b)`` on a one-group batch, added into row
  ``x_b``; the batch direction is their sum over ``B``. Its expectation is
  ``ρ(x) E[g_x]`` in row x — the exact twin ``expected = ρ ∘ (bandit expected per
  context)``. This is the bandit method's estimate only when it is a mean of per-group
  terms (``Method.decomposable``), so only those methods are lifted (not the
  self-normalized IS-PG, whose weights depend on the whole batch).
* ``sample`` (on-policy): ``x ~ ρ``, then the bandit sampler in context ``x``;
* ``exact_step``, ``pre_step``, ``init_aux``: the bandit ones in every context (tabular
  class only for closed forms, :meth:`copg_jax.algos.base.Method.check_config`).

Exact-only bandit methods (closed forms) are lifted too; so the contextual registry has
the bandit names, each with the same doc and hyperparameters.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from copg_jax.algos import bandit_methods  # noqa: F401  (registers the bandit methods)
from copg_jax.algos.base import Ctx, Method
from copg_jax.algos.registry import _REGISTRY, register
from copg_jax.batches import ContextGroups
from copg_jax.envs.contextual import context_bandit, per_context
from copg_jax.kinds.contextual import sample_contexts

Array = jax.Array


def _at(ctx: Ctx, x) -> Ctx:
    """The context of the bandit of context ``x``."""
    return ctx._replace(problem=context_bandit(ctx.problem, x))


def _row(aux, x):
    return jax.tree_util.tree_map(lambda a: a[x], aux)


def _per_context(fn, ctx: Ctx, logits, aux):
    """``fn(ctx_x, logits[x], aux[x])`` for every context, stacked (leading axis X)."""
    bandits = per_context(ctx.problem)
    return jax.vmap(lambda b, th, a: fn(ctx._replace(problem=b), th, a))(bandits, logits, aux)


def lift_estimate(estimate):
    def lifted(ctx: Ctx, logits, aux, batch: ContextGroups) -> Array:
        def one(b):
            x = batch.x[b]
            return estimate(_at(ctx, x), logits[x], _row(aux, x), batch.group(b))

        n = batch.x.shape[0]
        per_group = jax.vmap(one)(jnp.arange(n))  # [n, K]
        return jnp.zeros_like(logits).at[batch.x].add(per_group) / n

    return lifted


def lift_expected(expected):
    def lifted(ctx: Ctx, logits, aux) -> Array:
        rho = ctx.problem.context_probs
        return rho[:, None] * _per_context(expected, ctx, logits, aux)

    return lifted


def lift_sample(sample):
    def lifted(ctx: Ctx, logits, aux, key) -> ContextGroups:
        k_x, k_g = jax.random.split(key)
        n = ctx.cfg.batch_size
        x = sample_contexts(k_x, ctx.problem, n)
        one_cfg = ctx.cfg.replace(batch_size=1)

        def one(xb, kb):
            g = sample(_at(ctx, xb)._replace(cfg=one_cfg), logits[xb], _row(aux, xb), kb)
            return jax.tree_util.tree_map(lambda a: a[0], g)

        g = jax.vmap(one)(x, jax.random.split(k_g, n))
        return ContextGroups(x=x, y=g.y, r=g.r, pref=g.pref)

    return lifted


def lift_per_context(fn):
    """``fn(ctx, logits, aux)`` (a closed-form step or a pre-step) in every context."""
    def lifted(ctx: Ctx, logits, aux):
        return _per_context(fn, ctx, logits, aux)

    return lifted


def lift_init_aux(init_aux):
    def lifted(ctx: Ctx, key):
        bandits = per_context(ctx.problem)
        keys = jax.random.split(key, ctx.problem.num_contexts)
        return jax.vmap(lambda b, k: init_aux(ctx._replace(problem=b), k))(bandits, keys)

    return lifted


def _maybe(lift, fn):
    return None if fn is None else lift(fn)


def lift(method: Method) -> Method:
    """The contextual twin of a bandit ``method`` (module doc)."""
    if method.kind != "bandit" or method.lookahead:
        raise ValueError(f"method: {method.name!r} is not a per-group bandit method")
    if method.estimate is not None and not method.decomposable:
        raise ValueError(f"method: {method.name!r} is not decomposable over groups; its "
                         "contextual estimate would not be the per-context one")
    return dataclasses.replace(
        method, kind="contextual",
        estimate=_maybe(lift_estimate, method.estimate),
        expected=_maybe(lift_expected, method.expected),
        exact_step=_maybe(lift_per_context, method.exact_step),
        sample=_maybe(lift_sample, method.sample),
        init_aux=_maybe(lift_init_aux, method.init_aux),
        pre_step=_maybe(lift_per_context, method.pre_step),
    )


def _liftable(method: Method) -> bool:
    return (method.kind == "bandit" and not method.lookahead
            and (method.estimate is None or method.decomposable))


for _m in [m for m in list(_REGISTRY.values()) if _liftable(m)]:
    register(lift(_m))

__all__ = ["lift"]
