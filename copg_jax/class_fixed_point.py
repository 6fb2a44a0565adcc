"""Fixed points and the best policy *in a policy class* (SPEC §7).

With a parametric class ``θ(w)`` (:mod:`copg_jax.policies`) a method's population update
in parameter space is the pull-back of its exact direction,

    ``G(w) = (∂θ/∂w)ᵀ expected(θ(w))``,

and its population fixed point is a root ``G(w) = 0``. Under a class that can represent
π* every method whose logit-space fixed point is π* has it as a root; under a
misspecified one the roots of different methods differ: each method weighs the
directions that the class cannot follow by its own data distribution (for CoPG, by the
behaviour policies μ1, μ2), so where its root lies is a finding, not a given.

The **best in class** is the root of ``∇_w J(θ(w))`` reached by exact ascent from the
class's initialization (π_ref), ``J = J* − regret`` (a local optimum for a network; for
the tabular class it is π*). ``J(best) ≥ J`` of every point the same ascent can reach;
no method can beat ``J*``.

Solver (both cases): ``warm_steps`` Adam steps along ``G`` from the initial parameters
(:func:`copg_jax.fixed_point._warm_start`), then damped Newton on the raveled parameters,
``Δ = lstsq(∂G/∂w, −G)`` (min-norm: the Jacobian is singular, e.g. along the per-context
logit shift and a network's symmetries), capped at norm :data:`MAX_STEP` (a trust region:
uncapped steps were seen to jump into saturated tanh units, where ``G ≈ 0`` trivially and
``J`` is far below the best), then the same backtracking. Accepted when
``‖G‖ ≤ tol``, Newton's distance estimate ``‖J⁺G‖ ≤ xtol`` and the parameters are finite
(:class:`copg_jax.fixed_point.SolverOptions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from copg_jax import policies
from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.dtypes import float_dtype
from copg_jax.fixed_point import SolverOptions, _backtrack, _cast_problem, _norm, _warm_start
from copg_jax.kinds import kind_of

Array = jax.Array

#: Relative cut-off of the Jacobian's singular values in lstsq: directions a network
#: barely moves are dropped (their ~1e-13 singular values would amplify rounding noise
#: in ``J⁺G`` into a spurious distance at an exact root).
RCOND = 1e-8

#: Default solver settings for a policy class: a network's warm start needs more steps
#: than a table's (measured: an MLP of width 8 reached the root after 20 000 Adam
#: steps, not after 5 000), and Newton more iterations under the trust region.
CLASS_OPTIONS = SolverOptions(warm_steps=20_000, warm_lr=0.2, newton_iters=200)

#: Largest Newton step (Euclidean norm in parameter space) before backtracking.
MAX_STEP = 0.5


class ClassFixedPoint(NamedTuple):
    """A root of a parameter-space direction.

    Attributes:
      params: the parameters there (the class's pytree).
      logits: ``θ(params)``; probs: the policy.
      value: ``J(θ(params))``, the KL-regularized objective; regret: ``J* − value``.
      residual: ``‖G(params)‖``; converged: the acceptance test (module doc).
      iterations: warm-start steps + Newton iterations.
      start: where the solver started: ``-1`` the class's initialization, ``i`` the
        ``i``-th of :func:`best_in_class`'s ``starts``.
    """

    params: Any
    logits: Array
    probs: Array
    value: Array
    regret: Array
    residual: Array
    converged: Array
    iterations: Array
    start: Array


def objective(problem, hp, logits) -> Array:
    """``J(θ) = J* − regret(θ)``, from the kind's target and metrics (differentiable)."""
    kind = kind_of(problem)
    target = kind.target(problem, hp)
    probs = kind.probs(logits)
    return target["value"] - kind.metrics(problem, logits, probs, hp, target)["regret"]


def _method_direction(method: Method, ctx: Ctx):
    def g(logits):
        aux = None
        if method.init_aux is not None:
            aux = method.init_aux(ctx, jax.random.PRNGKey(0))
        if method.pre_step is not None:
            aux = method.pre_step(ctx, logits, aux)
        return method.expected(ctx, logits, aux)

    return g


def _newton(g_flat, x: Array, newton_iters: int):
    """Damped Newton on ``G(x) = 0``: ``(x, ‖G(x)‖, iterations)``; stops when no
    backtracked step decreases ``‖G‖`` (machine precision) or after ``newton_iters``."""

    def step_at(x):
        step = jnp.linalg.lstsq(jax.jacfwd(g_flat)(x), -g_flat(x), rcond=RCOND)[0]
        return jnp.where(jnp.all(jnp.isfinite(step)), step, jnp.full_like(step, jnp.inf))

    def capped(step):
        # A trust region: a network's Jacobian is near-singular far from a root, and an
        # uncapped min-norm step jumps to saturated units where G vanishes trivially.
        return step * jnp.minimum(1.0, MAX_STEP / _norm(step))

    def cond(c):
        x, r, it, stalled = c
        return (r > 0) & (it < newton_iters) & ~stalled

    def body(c):
        x, r, it, _ = c
        step = capped(step_at(x))
        alpha, r_new = _backtrack(g_flat, x, step, r)
        ok = r_new < r
        x_new = jnp.where(ok, x + alpha * step, x)
        return x_new, jnp.where(ok, r_new, r), it + 1, ~ok

    init = (x, _norm(g_flat(x)), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    x, r, it, _ = jax.lax.while_loop(cond, body, init)
    return x, r, it, _norm(step_at(x))


def _solve(logit_direction, problem, hp, cfg: StaticConfig, params0, opts: SolverOptions,
           grad_of=None, start: int = -1) -> ClassFixedPoint:
    """The root of the pull-back of ``logit_direction`` (or of ``grad_of``'s gradient in
    parameter space, when given) from the parameters ``params0``."""
    spec = cfg.policy
    x0, unravel = ravel_pytree(params0)

    def g_flat(x):
        params = unravel(x)
        if grad_of is not None:
            return ravel_pytree(jax.grad(grad_of)(params))[0]
        logits, pull = policies.logits_and_pullback(spec, problem, params)
        return ravel_pytree(pull(logit_direction(logits)))[0]

    x = _warm_start(g_flat, x0, opts)
    x, r, it, dist = _newton(g_flat, x, opts.newton_iters)
    ok = (r <= opts.tol) & (dist <= opts.xtol) & jnp.all(jnp.isfinite(x))
    return _point(unravel(x), problem, hp, cfg, r, ok, it + opts.warm_steps, start)


def _point(params, problem, hp, cfg: StaticConfig, residual, converged, iterations,
           start: int) -> ClassFixedPoint:
    """The record of ``params``: logits, policy, J and regret there."""
    logits = policies.logits(cfg.policy, problem, params)
    value = objective(problem, hp, logits)
    j_star = kind_of(problem).target(problem, hp)["value"]
    return ClassFixedPoint(params, logits, kind_of(problem).probs(logits), value,
                           j_star - value, residual, converged,
                           jnp.asarray(iterations, jnp.int32), jnp.asarray(start, jnp.int32))


def _evaluated(params, problem, hp, cfg: StaticConfig, opts: SolverOptions, value_of,
               start: int) -> ClassFixedPoint:
    """``params`` as a candidate without solving: J there, ``‖∇_w J‖`` as its residual."""
    r = _norm(ravel_pytree(jax.grad(value_of)(params))[0])
    return _point(params, problem, hp, cfg, r, r <= opts.tol, 0, start)


def _prepare(problem, hp, options, fields):
    dtype = float_dtype()
    problem = _cast_problem(problem, dtype)
    hp = {k: jnp.asarray(v, dtype) for k, v in hp.items()}
    options = CLASS_OPTIONS if options is None else options
    return problem, hp, SolverOptions.of(options, **fields).resolved(dtype)


def class_fixed_point(method: Method, problem, hp, cfg: StaticConfig, key: Array | None = None,
                      options: SolverOptions | None = None, **fields) -> ClassFixedPoint:
    """``method``'s population fixed point in the parameters of ``cfg.policy``: a root of
    ``(∂θ/∂w)ᵀ expected(θ(w))`` (module doc). ``hp`` resolved; ``key`` draws a network's
    initial weights (default ``PRNGKey(0)``), where the solver starts."""
    cfg = cfg.replace(mode="exact")
    method.check_config(cfg)
    if method.expected is None:
        raise ValueError(f"method: {method.name!r} has no expected direction (closed-form "
                         "updates are tabular only)")
    problem, hp, opts = _prepare(problem, hp, options, fields)
    key = jax.random.PRNGKey(0) if key is None else key
    g = _method_direction(method, Ctx(problem, hp, cfg, jnp.zeros((), jnp.int32)))
    return _solve(g, problem, hp, cfg, policies.init_params(cfg.policy, problem, key), opts)


def best_in_class(problem, hp, cfg: StaticConfig, key: Array | None = None,
                  options: SolverOptions | None = None, starts: Sequence[Any] = (),
                  **fields) -> ClassFixedPoint:
    """The best policy of ``cfg.policy`` found by exact ascent on ``J(θ(w))`` (module
    doc), a root of ``∇_w J``: from the class's initialization and from each parameter
    pytree of ``starts`` (e.g. the methods' class fixed points), the one of highest J.
    ``hp`` needs the KL strength ``beta``.

    Why several starts: a network's J is not concave in w, and ascent from π_ref can end
    in a slow region or a worse local optimum (measured: an MLP of width 16 on 3 contexts
    ended at regret 0.0105, not converged, where IS-PG's root, whose exact twin is
    ``2∇J``, had reached regret 0 from the same start along rounding-different paths).
    Starting also from every method's root makes ``J(best) ≥ J`` at each of them, so the
    reported best is an upper bound for every fixed point reported beside it; it is still
    only a lower bound on the true ``max_w J`` of a network class."""
    problem, hp, opts = _prepare(problem, hp, options, fields)
    key = jax.random.PRNGKey(0) if key is None else key
    spec = cfg.policy

    def value_of(params):
        return objective(problem, hp, policies.logits(spec, problem, params))

    inits = [policies.init_params(spec, problem, key), *starts]
    found = [_solve(None, problem, hp, cfg, w, opts, grad_of=value_of, start=i - 1)
             for i, w in enumerate(inits)]
    # The starts themselves are candidates too: an ascent's endpoint is not guaranteed to
    # have a higher J than where it started (Adam's first steps are lr-sized).
    found += [_evaluated(w, problem, hp, cfg, opts, value_of, i) for i, w in enumerate(starts)]
    best = found[0]
    for fp in found[1:]:
        better = fp.value > best.value
        best = jax.tree_util.tree_map(lambda a, b, c=better: jnp.where(c, a, b), fp, best)
    return best
