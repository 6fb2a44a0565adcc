"""Population fixed points: where each method's *exact* (expected) update converges.

A method's sampled updates drift, on average, along its ``expected`` direction (or, for
closed-form methods, iterate its ``exact_step``). Where that population update stops is
the method's own target, which need not be the regularized optimum π* of SPEC §1: naive
off-policy PG and IPO, for instance, are biased (CoPG §5, Fig. 1). Figures show this
target as a dashed line beside π*.

Two cases, following the training loop's precedence (``exact_step`` first):

* **closed-form methods** (``exact_step``: mirror descent, MMD, exact Nash-MD, PMD, ...):
  the map ``θ ↦ F(θ) = exact_step(θ)`` is iterated in a ``lax.while_loop`` (calling
  ``pre_step`` first, as the training loop does, and carrying ``aux``) until its
  *step-independent* residual is below ``tol``: the change per unit step,

      r_t = ‖C(log_softmax(F(θ_t)) − log_softmax(θ_t))‖ / η + ‖aux_{t+1} − aux_t‖ / η_aux,

  with ``C`` the centering of each logit row (softmax is blind to the row shift), ``η``
  the method's step (hp ``eta``, else ``lr``, else 1) and ``η_aux`` the
  smallest positive of its step-like hyperparameters (``eta``, ``magnet_lr``; the
  magnet of MMD moves by ``magnet_lr``). For an update of the form ``θ + η G(θ)`` (mirror
  descent: ``G = R + β ln π_ref − β ln π``; the proximal form divides it by ``1 + ηβ``)
  ``r_t = ‖C G(θ_t)‖`` is the
  residual of the fixed-point equation itself, whatever ``η``: a tiny step no longer
  "converges" at once (md with η = 1e-11 used to stop after one step at π_ref; MMD with
  ``magnet_lr = 1e-12``, whose fixed point is at infinity, used to stop as soon as its
  per-step change was below ``tol``). ``residual`` is the last ``r_t``; the step index
  ``t`` passed to ``exact_step`` is the iteration count. The step schedule must be
  constant (``cfg.eta_schedule="constant"``, checked): with a decreasing one the change
  vanishes because the step does, before the iterate reaches the fixed point.
  Rounding floor: ``r_t`` cannot go below about ``eps·‖θ‖/η``, so with float32 and
  ``η ≲ 1e-2`` pass a larger ``tol``.
* **gradient methods** (``expected``): solve ``g(θ) = expected(θ) = 0``.

  1. *Warm start*: ``warm_steps`` Adam ascent steps on the exact direction inside a
     ``lax.fori_loop``, with a learning rate decaying geometrically from ``warm_lr`` to
     ``warm_lr · 1e-3``. Adam is scale free, so one setting serves estimators whose
     directions differ by orders of magnitude (RLOO is ``k ∇J``, IPO's is ``O(1/β)``); it
     only has to land in Newton's basin, not to converge.
  2. *Newton polish* (``newton_iters``): ``Δ = lstsq(∂g/∂θ, −g)`` with ``jax.jacfwd``
     on the flattened logits, then backtracking (halving, up to 40 times) until
     ``‖g‖`` decreases. The Jacobian is singular: softmax is shift invariant, so the
     all-ones direction (per row ``[H, S, ·]`` for MDP logits ``[H, S, A]``) is in its null
     space; the min-norm least-squares solution ignores it. Stops at ``‖g‖ = 0``, when
     no backtracked step decreases ``‖g‖`` (machine precision), or after ``newton_iters``.

  ``residual = ‖g(θ)‖`` at the returned point.

Generic over problem kinds: the problem's type names its kind (:func:`copg_jax.kinds.kind_of`;
no kind string needed); the logits start at ``kind.init_logits(problem)`` (π_ref), may
be ``[K]`` (bandit, game) or any shape whose last axis is the action axis (MDP
``[H, S, A]``); the returned ``logits`` are normalized, ``log_softmax(θ, axis=-1)``.
The solver settings are one hashable record, :class:`SolverOptions`.

**Methods with an on-policy anchor** (``pre_step``, e.g. ``mdpo`` whose ``aux`` is the
anchor policy π_k): the direction is evaluated with ``aux = pre_step(θ, aux0, ..., t=0)``,
i.e. the anchor refreshed to the current policy, and Newton differentiates through that
dependence. This is the fixed point of the outer loop, where the anchor equals the policy
(for ``mdpo``: ``π_k = π``, where its direction is ``∇J``, so the fixed point is π*).
Other ``aux`` (e.g. from ``init_aux``) is held fixed at its initial value. Extragradient
methods (``lookahead``) are solved on their plain direction ``g``: if ``g(θ) = 0`` the
look-ahead point is ``θ`` itself, so the fixed points coincide.

**Fixed points at infinity.** Some population updates have no finite zero: the logits
diverge while ``‖g‖`` decays towards 0 only asymptotically (every direction of the form
``π ∘ (...)`` vanishes at the simplex vertices, e.g. unregularized PG, or RLOO if Newton
starts too far away). Such a run is reported with ``converged=False``, never as a wrong
finite answer. A gradient method's point is accepted iff ``residual ≤ tol``, Newton's
estimate of the remaining distance ``‖J⁺g‖ ≤ xtol`` (small at a regular root, O(1) while
sliding to infinity, where ``J`` shrinks with ``g``; the shift of each logit row, to which
softmax is blind, is removed from ``J⁺g`` first), and the logits are finite. The spread
of the logits is *not* a criterion: a finite root may be far from π_ref (CoPG or mirror
descent at β = 0.01 on the paper bandit: π* has logit spread 150, π*(y₃) ≈ 7e-66, and it
is a regular root with residual ~1e-17); ``max_logit_range`` (default ``inf``) only
adds an optional bound. A closed-form iteration that hits ``max_iters`` with its
residual still above ``tol`` (e.g. MMD with a moving magnet, which runs to the greedy
vertex) is ``converged=False``.

**Flat regions.** Where the exact direction is identically zero on an open set, the
starting point (π_ref) is a genuine fixed point of the population update and is returned
as such; e.g. PPO-clip on the paper bandit, where every ratio π_ref/μ is outside
``[1 − ε, 1 + ε]`` on the side that zeroes the gradient, so its exact update never moves.

**Precision.** float64 is used when the caller enabled ``jax_enable_x64`` (the problem's
floating leaves are then cast to float64); nothing is forced globally. Default ``tol``:
``1e-10`` in float64, ``1e-5`` in float32.

Example::

    with jax.enable_x64(True):
        fp = fixed_point("ipo", paper_bandit(), {"beta": 0.5})
        fp.probs, fp.residual, bool(fp.converged)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from copg_jax import validation as v
from copg_jax.algos.base import Ctx, Method, StaticConfig
from copg_jax.dtypes import float_dtype
from copg_jax.kinds import kind_of
from copg_jax.kinds.base import ProblemKind

Array = jax.Array
#: ``g`` on flattened logits: ``x ↦ expected(x.reshape(shape)).reshape(-1)``.
FlatDirection = Callable[[Array], Array]

#: No bound on the logit spread by default (see the module doc).
DEFAULT_MAX_LOGIT_RANGE = math.inf
#: Hyperparameters read as step sizes by the closed-form residual (module doc).
STEP_HPARAMS = ("eta", "magnet_lr")
#: Newton's backtracking halves the step at most this many times.
MAX_HALVINGS = 40


class FixedPoint(NamedTuple):
    """Result of :func:`fixed_point`.

    Attributes:
      logits: normalized logits ``log_softmax(θ, axis=-1)`` at the fixed point.
      probs: the policy there (``kind.probs(logits)``).
      residual: ``‖expected(θ)‖`` (gradient methods) or the last closed-form step's
        change per unit step (closed-form methods; module doc).
      converged: scalar bool array: residual ≤ tol, (gradient methods) Newton's distance
        estimate ``‖J⁺g‖ ≤ xtol``, and the logits are finite (with a spread ≤
        ``max_logit_range`` if one is given). False for a fixed point at infinity.
      iterations: closed-form iterations, or warm-start steps + Newton iterations.
    """

    logits: Array
    probs: Array
    residual: Array
    converged: Array
    iterations: Array


def default_tol(dtype=None) -> float:
    dtype = jnp.dtype(dtype or float_dtype())
    return 1e-10 if dtype == jnp.float64 else 1e-5


@dataclasses.dataclass(frozen=True)
class SolverOptions:
    """Settings of the fixed-point solvers (module doc), checked on construction.

    Hashable: it is part of the key of the compiled solver. Every public function takes
    ``options=`` and/or these fields as keywords (``fixed_point(..., warm_steps=1000)``).

    Attributes:
      max_iters: closed-form iterations at most (>= 1).
      tol: residual tolerance (> 0; default :func:`default_tol` of the working dtype:
        1e-10 float64, 1e-5 float32).
      xtol: largest accepted Newton distance estimate ``‖J⁺g‖`` at the returned point
        (gradient methods; > 0; default ``sqrt(tol)``).
      warm_steps: Adam warm-start steps of gradient methods (>= 0).
      warm_lr: the warm start's initial learning rate (> 0), decaying geometrically to
        ``warm_lr · 1e-3``.
      newton_iters: Newton iterations at most, after the warm start (>= 0).
      max_logit_range: optional largest accepted logit spread per row (> 0; default
        ``inf``: none; a finite root is accepted by its residual and Newton distance
        alone).
    """

    max_iters: int = 100_000
    tol: float | None = None
    xtol: float | None = None
    warm_steps: int = 5_000
    warm_lr: float = 0.05
    newton_iters: int = 50
    max_logit_range: float = DEFAULT_MAX_LOGIT_RANGE

    def __post_init__(self):
        for name, low in (("max_iters", 1), ("warm_steps", 0), ("newton_iters", 0)):
            v.check_int_at_least(name, getattr(self, name), low)
        for name in ("tol", "xtol", "warm_lr", "max_logit_range"):
            val = getattr(self, name)
            if val is not None and not val > 0:
                raise ValueError(f"{name}: must be > 0, got {val}")

    @classmethod
    def of(cls, options: SolverOptions | None = None, **fields) -> SolverOptions:
        """``options`` (default: all defaults) with the given ``fields`` replaced."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise ValueError(f"options: unknown solver option(s) {unknown}; known: {known}")
        options = cls() if options is None else options
        return dataclasses.replace(options, **fields) if fields else options

    def resolved(self, dtype) -> SolverOptions:
        """``tol`` and ``xtol`` filled in for ``dtype`` where they are ``None``."""
        tol = default_tol(dtype) if self.tol is None else self.tol
        xtol = tol**0.5 if self.xtol is None else self.xtol
        return dataclasses.replace(self, tol=tol, xtol=xtol)


def _kind(problem, problem_kind: str | ProblemKind | None = None) -> ProblemKind:
    """The problem's own kind (:func:`kind_of`). An explicit :class:`ProblemKind` is used
    as given (e.g. one that is not registered) if ``problem`` is of its type; a name
    must agree with the problem's kind."""
    if isinstance(problem_kind, ProblemKind):
        if not isinstance(problem, problem_kind.problem_type):
            raise ValueError(f"problem_kind: kind {problem_kind.name!r} is for "
                             f"{problem_kind.problem_type.__name__} problems, got "
                             f"{type(problem).__name__}")
        return problem_kind
    kind = kind_of(problem)
    if problem_kind is not None and problem_kind != kind.name:
        raise ValueError(f"problem_kind: {problem_kind!r} disagrees with the problem's "
                         f"kind {kind.name!r} ({type(problem).__name__})")
    return kind


def _cast_problem(problem, dtype):
    def cast(a):
        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.asarray(a, dtype)
        return a

    return jax.tree_util.tree_map(cast, problem)


def _normalize(logits: Array) -> Array:
    return jax.nn.log_softmax(logits, axis=-1)


def _centered(x: Array) -> Array:
    """``x`` minus its mean over the action axis: the part of a logit change softmax sees."""
    return x - jnp.mean(x, axis=-1, keepdims=True)


def _norm(x: Array) -> Array:
    """``‖x‖``, with ``inf`` for a non-finite one."""
    n = jnp.linalg.norm(x)
    return jnp.where(jnp.isfinite(n), n, jnp.inf)


def _spread_ok(logits: Array, max_range) -> Array:
    spread = jnp.max(logits, axis=-1) - jnp.min(logits, axis=-1)
    return jnp.all(jnp.isfinite(logits)) & jnp.all(spread <= max_range)


def _float_leaves(tree) -> list[Array]:
    return [
        x
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]


def _tree_change(new, old) -> Array:
    sq = [
        jnp.sum((a - b) ** 2) for a, b in zip(_float_leaves(new), _float_leaves(old), strict=True)
    ]
    return jnp.sqrt(sum(sq)) if sq else jnp.zeros(())


def _unit_steps(hp: Mapping[str, Array], dtype) -> tuple[Array, Array]:
    """``(η, η_aux)`` of the closed-form residual (module doc): η = hp ``eta``, else ``lr``,
    else 1; ``η_aux`` = the smallest positive value among :data:`STEP_HPARAMS` in ``hp``
    (else η). A step of 0 (``magnet_lr = 0``: the magnet is fixed) is not a step."""
    one = jnp.ones((), dtype)
    eta = hp["eta"] if "eta" in hp else hp.get("lr", one)
    eta_aux = jnp.asarray(eta, dtype)
    for name in STEP_HPARAMS:
        if name in hp:
            s = jnp.asarray(hp[name], dtype)
            eta_aux = jnp.where(s > 0, jnp.minimum(eta_aux, s), eta_aux)
    return jnp.asarray(eta, dtype), eta_aux


# ---------------------------------------------------------------------------------------
# Closed-form methods: iterate exact_step


def _closed_form(method: Method, ctx: Ctx, logits0, aux0, opts: SolverOptions):
    """Iterates ``pre_step`` + ``exact_step`` until the change per unit step
    ``r_t = ‖C(log_softmax(F(θ_t)) − log_softmax(θ_t))‖ / η + ‖aux_{t+1} − aux_t‖ / η_aux``
    is ``≤ tol`` or ``max_iters`` steps are taken (module doc)."""
    eta, eta_aux = _unit_steps(ctx.hp, logits0.dtype)

    def body(c):
        logits, aux, _, t = c
        ctx_t = ctx._replace(t=t)
        if method.pre_step is not None:
            aux = method.pre_step(ctx_t, logits, aux)
        new, new_aux = method.exact_step(ctx_t, logits, aux)
        change = jnp.sqrt(jnp.sum(_centered(_normalize(new) - _normalize(logits)) ** 2)) / eta
        change = change + _tree_change(new_aux, aux) / eta_aux
        change = jnp.where(jnp.isfinite(change), change, jnp.inf)
        return new, new_aux, change.astype(logits0.dtype), t + 1

    def cond(c):
        _, _, change, t = c
        # The initial change is +inf (no step taken yet); a later non-finite one stops.
        return (t == 0) | ((change > opts.tol) & (t < opts.max_iters) & jnp.isfinite(change))

    init = (logits0, aux0, jnp.asarray(jnp.inf, logits0.dtype), jnp.zeros((), jnp.int32))
    logits, _, change, t = jax.lax.while_loop(cond, body, init)
    logits = _normalize(logits)
    converged = (change <= opts.tol) & _spread_ok(logits, opts.max_logit_range)
    return logits, change, converged, t


# ---------------------------------------------------------------------------------------
# Gradient methods: warm start, Newton polish, acceptance test


def _direction(method: Method, ctx: Ctx, aux0) -> Callable[[Array], Array]:
    """``θ ↦ g(θ) = expected(θ)``, with an on-policy anchor refreshed to θ first
    (``aux = pre_step(θ, aux0)``; module doc); other ``aux`` is held at ``aux0``."""

    def g(theta):
        aux = aux0
        if method.pre_step is not None:
            aux = method.pre_step(ctx, theta, aux0)
        return method.expected(ctx, theta, aux)

    return g


def _warm_start(g: Callable[[Array], Array], logits0: Array, opts: SolverOptions) -> Array:
    """``warm_steps`` Adam ascent steps along ``g``, the learning rate decaying
    geometrically from ``warm_lr`` to ``warm_lr · 1e-3`` (module doc, step 1)."""
    sched = optax.exponential_decay(
        opts.warm_lr, transition_steps=max(opts.warm_steps, 1), decay_rate=1e-3
    )
    opt = optax.adam(sched)

    def warm(_, c):
        theta, st = c
        upd, st = opt.update(-g(theta), st, theta)
        return optax.apply_updates(theta, upd), st

    theta, _ = jax.lax.fori_loop(0, opts.warm_steps, warm, (logits0, opt.init(logits0)))
    return theta


def _newton_step(g_flat: FlatDirection, shape, x: Array) -> Array:
    """``Δ = lstsq(∂g/∂θ, −g)`` at the flattened logits ``x`` (min-norm least squares: the
    Jacobian is singular), without the shift of each logit row; ``inf`` if not finite."""
    step = jnp.linalg.lstsq(jax.jacfwd(g_flat)(x), -g_flat(x))[0]
    # Drop the shift of each row (softmax is invariant to it): numerically its singular
    # value is ~1e-17, not 0, and lstsq would blow rounding noise up along it (seen:
    # ‖J⁺g‖ = 0.07 at an exact root, all of it a shift, with μ 99% on one arm).
    step = step.reshape(shape)
    step = (step - jnp.mean(step, axis=-1, keepdims=True)).reshape(-1)
    return jnp.where(jnp.all(jnp.isfinite(step)), step, jnp.full_like(step, jnp.inf))


def _backtrack(g_flat: FlatDirection, x: Array, step: Array, r: Array):
    """``(α, ‖g(x + α Δ)‖)`` for the first ``α = 1, 1/2, 1/4, ...`` (at most
    :data:`MAX_HALVINGS` halvings) at which ``‖g‖`` drops below ``r``."""

    def cond(b):
        alpha, r_new, k = b
        return (r_new >= r) & (k < MAX_HALVINGS)

    def body(b):
        alpha, _, k = b
        alpha = alpha / 2
        return alpha, _norm(g_flat(x + alpha * step)), k + 1

    one = jnp.ones((), x.dtype)
    init = (one, _norm(g_flat(x + step)), jnp.zeros((), jnp.int32))
    alpha, r_new, _ = jax.lax.while_loop(cond, body, init)
    return alpha, r_new


def _newton(g_flat: FlatDirection, shape, x: Array, newton_iters: int):
    """Damped Newton on ``g(x) = 0`` from the flattened logits ``x`` (module doc, step 2):
    ``(x, ‖g(x)‖, iterations)``. Not stopped at ``r ≤ tol``: the polish is cheap and ends
    at machine precision, when no backtracked step decreases ``‖g‖`` any more."""

    def cond(c):
        x, r, it, stalled = c
        return (r > 0) & (it < newton_iters) & ~stalled

    def body(c):
        x, r, it, _ = c
        step = _newton_step(g_flat, shape, x)
        alpha, r_new = _backtrack(g_flat, x, step, r)
        ok = r_new < r
        x_new = jnp.where(ok, x + alpha * step, x)
        # Re-normalize so the logits stay canonical (g is shift invariant per row).
        x_new = _normalize(x_new.reshape(shape)).reshape(-1)
        return x_new, jnp.where(ok, _norm(g_flat(x_new)), r), it + 1, ~ok

    init = (x, _norm(g_flat(x)), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    x, r, it, _ = jax.lax.while_loop(cond, body, init)
    return x, r, it


def _accepted(logits: Array, r: Array, dist: Array, opts: SolverOptions) -> Array:
    """The convergence test of a gradient method's point: ``‖g‖ ≤ tol``, Newton's distance
    estimate ``‖J⁺g‖ ≤ xtol`` (small at a regular root, O(1) on the way to a root at
    infinity, e.g. a simplex vertex, where every direction of the form π ∘ (...) vanishes
    while the logits keep running away), finite logits within ``max_logit_range``."""
    return (r <= opts.tol) & (dist <= opts.xtol) & _spread_ok(logits, opts.max_logit_range)


def _gradient(method: Method, ctx: Ctx, logits0, aux0, opts: SolverOptions):
    """Solves ``g(θ) = expected(θ) = 0``: warm start, Newton polish, acceptance test."""
    shape = logits0.shape
    g = _direction(method, ctx._replace(t=jnp.zeros((), jnp.int32)), aux0)

    def g_flat(x):
        return g(x.reshape(shape)).reshape(-1)

    x = _normalize(_warm_start(g, logits0, opts)).reshape(-1)
    x, r, it = _newton(g_flat, shape, x, opts.newton_iters)
    dist = _norm(_newton_step(g_flat, shape, x))
    logits = _normalize(x.reshape(shape))
    return logits, r, _accepted(logits, r, dist, opts), it + opts.warm_steps


# ---------------------------------------------------------------------------------------
# Entry points


def _solve(method: Method, kind: ProblemKind, problem, hp, cfg: StaticConfig,
           options: SolverOptions, key: Array | None) -> FixedPoint:
    dtype = float_dtype()
    problem = _cast_problem(problem, dtype)
    hp = {k: jnp.asarray(v, dtype) for k, v in hp.items()}
    opts = options.resolved(dtype)
    logits0 = jnp.asarray(kind.init_logits(problem), dtype)
    key = jax.random.PRNGKey(0) if key is None else key
    ctx = Ctx(problem, hp, cfg)
    aux0 = method.init_aux(ctx, key) if method.init_aux else None
    solver = _closed_form if method.exact_step is not None else _gradient
    logits, res, conv, it = solver(method, ctx, logits0, aux0, opts)
    return FixedPoint(logits, kind.probs(logits), res, conv, it)


def solve_fixed_point(
    method: Method,
    problem,
    hp: Mapping[str, Array],
    cfg: StaticConfig,
    problem_kind: str | ProblemKind | None = None,
    *,
    options: SolverOptions | None = None,
    key: Array | None = None,
    **option_fields,
) -> FixedPoint:
    """The pure, traceable core of :func:`fixed_point` (jit/vmap over ``problem``, ``hp``).

    ``hp`` must already be resolved (:meth:`Method.resolve_hparams`); no validation of it
    here. ``problem_kind``, ``options``, ``option_fields`` and ``key`` as in
    :func:`fixed_point`.
    """
    kind = _kind(problem, problem_kind)
    options = SolverOptions.of(options, **option_fields)
    return _solve(method, kind, problem, hp, cfg, options, key)


def fixed_point(
    method: Method | str,
    problem,
    hp: Mapping[str, Any] | None = None,
    cfg: StaticConfig | None = None,
    problem_kind: str | ProblemKind | None = None,
    *,
    options: SolverOptions | None = None,
    key: Array | None = None,
    **option_fields,
) -> FixedPoint:
    """Population fixed point of ``method`` on ``problem`` (validated, jit-compiled).

    Args:
      method: a :class:`Method` or its registry name for the problem's kind.
      problem: a problem instance (bandit, game or MDP pytree); its type names its kind.
      hp: hyperparameters (defaults filled, domains checked, as in ``train.train``).
      cfg: static configuration (``num_samples``, ``baseline``, ``inner_steps`` matter);
        default ``StaticConfig(mode="exact")``. The exact functions are used whatever
        ``cfg.mode`` says.
      problem_kind: optional. Default: the problem's kind (:func:`copg_jax.kinds.kind_of`).
        A name (``"bandit"``, ``"game"``, ``"mdp"``, ...) must agree with it; a
        :class:`ProblemKind` (e.g. one that is not registered) is used as given.
      options: the solver settings (:class:`SolverOptions`; default its defaults).
      **option_fields: fields of :class:`SolverOptions` to override (``max_iters``,
        ``tol``, ``xtol``, ``warm_steps``, ``warm_lr``, ``newton_iters``,
        ``max_logit_range``), e.g. ``fixed_point(m, p, hp, warm_steps=1000)``.
      key: for ``init_aux`` (default ``PRNGKey(0)``).

    Returns:
      :class:`FixedPoint` (``converged`` is a scalar bool array; ``bool(fp.converged)``).
    """
    return fixed_points([method], problem, [hp], cfg, problem_kind, options=options,
                        key=key, **option_fields)[0]


def _methods_for(methods: Sequence[Method | str], kind: ProblemKind) -> list[Method]:
    """Registry look-up of the names; every method must be for ``kind``."""
    from copg_jax.algos.registry import get_method

    methods = [get_method(m, kind.name) if isinstance(m, str) else m for m in methods]
    for method in methods:
        if method.kind != kind.name:
            raise ValueError(f"problem_kind: method {method.name!r} is for "
                             f"{method.kind!r}, got a problem of kind {kind.name!r}")
    return methods


def _check_config(methods: Sequence[Method], cfg: StaticConfig) -> None:
    for method in methods:
        method.check_config(cfg)
        if method.exact_step is not None and cfg.eta_schedule != "constant":
            raise ValueError(f"eta_schedule: a closed-form fixed point ({method.name!r}) "
                             f"needs a constant step, got {cfg.eta_schedule!r}")


def fixed_points(
    methods: Sequence[Method | str],
    problem,
    hps: Sequence[Mapping[str, Any] | None],
    cfg: StaticConfig | None = None,
    problem_kind: str | ProblemKind | None = None,
    *,
    options: SolverOptions | None = None,
    key: Array | None = None,
    **option_fields,
) -> list[FixedPoint]:
    """:func:`fixed_point` of several methods (``hps[i]`` for ``methods[i]``) on one
    problem, solved in ONE compiled program.

    The solvers take milliseconds to run and about half a second each to compile; one
    program for all of them compiles about twice as fast as one per method (the paper
    figure's 8 methods: 2.6 s instead of 5.0 s). A method named several times (a grid of
    hyperparameters) is one solver ``vmap``-ed over its hyperparameters, so the program's
    size, and its compile time, do not grow with the grid. Same arguments and results as
    :func:`fixed_point`, one :class:`FixedPoint` per entry of ``methods``.
    """
    from copg_jax.train import to_hparams

    kind = _kind(problem, problem_kind)
    if len(methods) != len(hps):
        raise ValueError(f"hps: need one per method ({len(methods)}), got {len(hps)}")
    methods = _methods_for(methods, kind)
    cfg = (cfg or StaticConfig(mode="exact")).replace(mode="exact")
    _check_config(methods, cfg)
    hps = [to_hparams(m, hp) for m, hp in zip(methods, hps, strict=True)]
    options = SolverOptions.of(options, **option_fields)
    key = jax.random.PRNGKey(0) if key is None else key
    names = list(dict.fromkeys(m.name for m in methods))  # each method once, in order
    unique = tuple(next(m for m in methods if m.name == n) for n in names)
    rows = [[i for i, m in enumerate(methods) if m.name == n] for n in names]
    stacked = [jax.tree_util.tree_map(lambda *a: jnp.stack(a), *(hps[i] for i in ix))
               for ix in rows]
    solved = _compiled(unique, cfg, kind, options)(problem, stacked, key)
    out: list[FixedPoint | None] = [None] * len(methods)
    for ix, fp in zip(rows, solved, strict=True):
        for r, i in enumerate(ix):
            out[i] = jax.tree_util.tree_map(lambda a, r=r: a[r], fp)
    return out


# Compiled solvers, so that repeated calls (figures, tests) compile once. Methods are not
# hashable (their hparams are dicts): keyed by identity, and the entry holds the methods so
# that their ids cannot be reused while cached.
_CACHE: dict[tuple, tuple[tuple[Method, ...], Any]] = {}
_CACHE_SIZE = 128


def _cached(tag: str, methods: tuple[Method, ...], cfg: StaticConfig, kind: ProblemKind,
            options: SolverOptions, build: Callable[[], Any]):
    """``build()`` once per (tag, methods by identity, cfg, kind, dtype, options)."""
    key = (tag, tuple(id(m) for m in methods), cfg, kind, jnp.dtype(float_dtype()).name,
           options)
    hit = _CACHE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], methods, strict=True)):
        return hit[1]
    fn = build()
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[key] = (methods, fn)
    return fn


def _compiled(methods: tuple[Method, ...], cfg: StaticConfig, kind: ProblemKind,
              options: SolverOptions):
    def run(p, hs, k):  # hs: one {name: [n]} per method
        return [jax.vmap(lambda h, m=m: _solve(m, kind, p, h, cfg, options, k))(h)
                for m, h in zip(methods, hs, strict=True)]

    return _cached("solve", methods, cfg, kind, options, lambda: jax.jit(run))


def fixed_point_metrics(
    method: Method,
    problems,
    hp: Mapping[str, Any],
    cfg: StaticConfig,
    kind: ProblemKind,
    *,
    options: SolverOptions | None = None,
) -> list[dict[str, Any]]:
    """Each instance's population fixed point of ``method`` and the problem kind's metrics
    there (``kind.metrics`` at ``θ_fp``, with the average policy equal to ``π_fp``), in
    float64: one program vmapped over ``problems``, a stacked batch (a leading instance
    axis on every array leaf, as :func:`copg_jax.sweep.sweep` holds them),
    compiled once per method (``hp`` is an argument, so every grid point reuses it).

    Returns one dict per instance: ``converged``, ``residual`` and each metric of
    ``kind.metric_names`` (``None`` where the solver did not converge: a fixed point at
    infinity has no finite metrics to report). This is what
    ``copg_jax.sweep(..., fixed_points=True)`` stores as ``fixed_point_<metric>``.
    """
    (method,) = _methods_for([method], kind)
    cfg = cfg.replace(mode="exact")
    _check_config([method], cfg)
    options = SolverOptions.of(options)
    with jax.enable_x64(True):
        batch = (kind.in_float64 or (lambda p: _cast_problem(p, jnp.float64)))(problems)
        h = {k: jnp.asarray(v, jnp.float64) for k, v in method.resolve_hparams(hp).items()}
        out = jax.device_get(_metrics_program(method, kind, cfg, options)(batch, h))
    converged = np.asarray(out["converged"])
    rows = []
    for i, ok in enumerate(converged):
        row = {"converged": bool(ok), "residual": float(out["residual"][i])}
        row.update({m: float(out[m][i]) if ok else None for m in kind.metric_names})
        rows.append(row)
    return rows


def _metrics_program(method: Method, kind: ProblemKind, cfg: StaticConfig,
                     options: SolverOptions):
    def one(problem, hp):
        fp = _solve(method, kind, problem, hp, cfg, options, None)
        metrics = kind.metrics(problem, fp.logits, fp.probs, hp, kind.target(problem, hp))
        return {**metrics, "converged": fp.converged, "residual": fp.residual}

    return _cached("metrics", (method,), cfg, kind, options,
                   lambda: jax.jit(jax.vmap(one, in_axes=(0, None))))
