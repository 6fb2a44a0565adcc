"""The one interface every method implements.

A method is a frozen record of pure functions (optax-style: no hidden state). Every
function of a method takes the same first three arguments, ``(ctx, logits, aux)``, where
``ctx`` is a :class:`Ctx` (problem, hyperparameter leaves, static config, step index):

* ``estimate(ctx, logits, aux, batch)``: an *ascent* direction in logit space from a
  batch of data (a typed record of the problem kind, :mod:`copg_jax.batches`);
* ``expected(ctx, logits, aux)``: its exact twin, the expectation of ``estimate`` over the
  data distribution (a finite sum, no sampling). An optax optimizer applies ``-direction``;
* ``exact_step(ctx, logits, aux) -> (logits, aux)``: a closed-form update acting on logits
  directly (mirror descent, MMD, Nash-MD's closed form, PMD, ...). A method may have
  both an estimator and a closed form;
* ``sample(ctx, logits, aux, key) -> batch``: its on-policy sampler;
* ``pre_step(ctx, logits, aux) -> aux``: refreshes extra state before every update
  (e.g. MDPO's anchor policy);
* ``init_aux(ctx, key) -> aux``: extra state (moving magnet, anchor policy, ...).

Data in sampled mode comes from one of three sources (``cfg.data``):

* ``"offline"``: a fixed dataset drawn once per seed from the problem's behaviour
  distributions, reshuffled every epoch and cut into minibatches (remainder dropped);
* ``"fresh"``: a new batch from the behaviour distributions at every step;
* ``"on_policy"``: the method's own ``sample`` (draws from π, or from a geometric
  mixture). On-policy methods always use it.

Hyperparameters are a flat ``dict[str, scalar array]`` (pytree leaves: vmappable, so a
grid of values compiles once); each method declares the ones it reads, with defaults
(``Method.hparams``) and domains (the standard ones of :data:`HPARAM_DOMAINS`, or its own in
``Method.domains``). Structure (sizes, step counts, optimizer kind, number of samples)
lives in the hashable :class:`StaticConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from copg_jax import validation as v
from copg_jax.dtypes import float_dtype
from copg_jax.policies import PolicySpec

Array = jax.Array
Batch = Any  # a batch record of the problem kind (copg_jax.batches, Trajectories)
HParams = Mapping[str, Array]

DATA_SOURCES = ("offline", "fresh", "on_policy")
OPTIMIZERS = ("adam", "sgd")
MODES = ("sampled", "exact")
STEP_RTOL = 1e-9  # eta = 1/beta computed in floating point may give eta·beta = 1 + 1 ulp

#: A hyperparameter's domain: ``(low, high, low_open, high_open)``.
Domain = tuple[float, float, bool, bool]

#: The standard hyperparameters and their domains; a method that reads another one
#: declares its domain in ``Method.domains``.
HPARAM_DOMAINS: dict[str, Domain] = {
    "beta": (0.0, np.inf, True, True),  # KL strength, > 0
    "tau": (0.0, np.inf, True, True),  # game regularization, > 0
    "lr": (0.0, np.inf, True, True),  # optimizer learning rate, > 0
    "eta": (0.0, np.inf, True, True),  # mirror-descent step, > 0
    "clip_eps": (0.0, np.inf, True, True),  # PPO clip ε, > 0
    "trunc": (0.0, np.inf, True, True),  # IS truncation level c̄, > 0
    "mix": (0.0, 1.0, False, False),  # Nash-MD-PG mixture coefficient, in [0, 1]
    "magnet_lr": (0.0, 1.0, False, False),  # MMD moving-magnet rate, in [0, 1]
}


def stable_eta(default: float, strengths) -> float:
    """``min(default, 1/max(strengths))``: a default step with ``η·s ≤ 1`` for every
    strength ``s`` of a grid (see ``Method.step_strength``)."""
    return min(float(default), 1.0 / max(float(x) for x in strengths))


@dataclasses.dataclass(frozen=True)
class StaticConfig:
    """Everything that changes the compiled program (hashable).

    Attributes:
      mode: ``"sampled"`` or ``"exact"`` (expected update, no sampling).
      data: data source in sampled mode for off-policy methods (see module doc).
      num_steps: total number of updates.
      log_every: metrics are recorded every ``log_every`` updates (and at step 0).
      batch_size: groups (pairs, or k-tuples) per minibatch.
      num_samples: k, samples per group (2 = pairs; CoPG k-sample / RLOO use k > 2).
      dataset_size: groups in the offline dataset.
      optimizer: ``"adam"`` or ``"sgd"`` for gradient methods.
      inner_steps: m, SGD steps per outer iteration (``mdpo``).
      eta_schedule: ``"constant"`` or ``"nash_md"`` (η_t = 2/(τ(t+2)), NLHF Thm.).
      baseline: baseline of ``is_pg``-family estimators: ``"none"``, ``"value"`` (E_π[R]),
        or ``"regularized_value"`` (E_π[R_β^π]), all computed exactly.
      policy: the policy class (:class:`copg_jax.policies.PolicySpec`): tabular logits
        by default, or a log-linear / MLP class over context features whose parameters
        receive the method's direction pulled back by one vjp.
    """

    mode: str = "sampled"
    data: str = "offline"
    num_steps: int = 1000
    log_every: int = 10
    batch_size: int = 512
    num_samples: int = 2
    dataset_size: int = 10_000
    optimizer: str = "adam"
    inner_steps: int = 1
    eta_schedule: str = "constant"
    baseline: str = "regularized_value"
    policy: PolicySpec = PolicySpec()

    def __post_init__(self):
        if not isinstance(self.policy, PolicySpec):
            raise ValueError(f"policy: must be a PolicySpec, got {self.policy!r}")
        v.check_choice("mode", self.mode, MODES)
        v.check_choice("data", self.data, DATA_SOURCES)
        v.check_choice("optimizer", self.optimizer, OPTIMIZERS)
        v.check_choice("eta_schedule", self.eta_schedule, ("constant", "nash_md"))
        v.check_choice("baseline", self.baseline, ("none", "value", "regularized_value"))
        for name in ("num_steps", "log_every", "batch_size", "dataset_size", "inner_steps"):
            v.check_int_at_least(name, getattr(self, name), 1)
        v.check_int_at_least("num_samples", self.num_samples, 2)
        if self.num_steps % self.log_every:
            raise ValueError(
                f"log_every: must divide num_steps={self.num_steps}, got {self.log_every}"
            )
        if self.mode == "sampled" and self.data == "offline":
            if self.batch_size > self.dataset_size:
                raise ValueError(
                    f"batch_size: must be <= dataset_size={self.dataset_size} for offline "
                    f"data, got {self.batch_size}"
                )

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset_size // self.batch_size

    def replace(self, **kw) -> StaticConfig:
        return dataclasses.replace(self, **kw)


class Ctx(NamedTuple):
    """What every function of a method receives first (built inside the traced step).

    Attributes:
      problem: the problem instance (its type names its kind, :func:`copg_jax.kinds.kind_of`).
      hp: the hyperparameters as scalar leaves (``{"beta": ..., "lr": ...}``).
      cfg: the static configuration.
      t: the unbatched int32 step index of the update (0 at initialization).
    """

    problem: Any
    hp: HParams
    cfg: StaticConfig
    t: Array | int = 0


@dataclasses.dataclass(frozen=True)
class Method:
    """A method: pure functions plus the facts the harness needs about them.

    Attributes:
      name: the registry name used by every CLI and results file.
      kind: the name of its problem kind (``"bandit"``, ``"game"``, ``"mdp"``, or any
        kind registered with :func:`copg_jax.kinds.register_kind`).
      hparams: the numeric hyperparameters it reads, with defaults.
      doc: one line: the update rule and the paper.
      on_policy: sampled mode draws with ``sample`` (ignores ``cfg.data``).
      estimate / expected: gradient estimator and its exact twin (ascent directions).
      exact_step: closed-form update used in exact mode (takes precedence over
        ``expected``). Methods with only ``exact_step`` are exact-only.
      sample: on-policy batch sampler.
      init_aux(ctx, key): extra state (moving magnet, anchor policy, ...), default ``None``.
      pre_step(ctx, logits, aux) -> aux: called before every update (e.g. MDPO refreshes
        its anchor policy π_k every ``cfg.inner_steps`` updates).
      lookahead: extragradient (EGPO): a half step ``θ_{t+½}`` of the optimizer along
        ``g(θ_t)``, then the direction is evaluated again at ``θ_t`` with the look-ahead
        logits passed as ``aux`` (they supply the opponent) and applied from ``θ_t``
        (:func:`copg_jax.train.train_step`). Such a method has no aux state of its own.
      num_samples_free: accepts ``cfg.num_samples > 2``.
      step_strength: for a linearized mirror-descent step
        ``ln π_{t+1} = (1 − η s) ln π_t + η s ln π_ref + η·(reward) + c`` (md, pmd, Nash-MD,
        OMD, EGPO), the name of its regularization strength ``s`` (``"beta"`` or
        ``"tau"``). The step is a geometric mixture of π_t and the target only for
        ``0 < η s ≤ 1`` (``η s = 1``: soft policy iteration); beyond it the weight of
        π_t is negative and the iteration oscillates, then diverges (``η s > 2``), so
        :meth:`check_step` refuses ``η s > 1``. None for other methods.
      decomposable: ``estimate(batch) = (1/B) Σ_b g(θ; group_b)``, a mean over the groups
        of a per-group term that does not depend on the rest of the batch; such bandit
        estimates may be computed from counts of distinct groups
        (:mod:`copg_jax.batch_counts`). Default False (the raw batch is always correct):
        a method opts in only when that identity holds. Not e.g. self-normalized IS or
        a batch-mean baseline, whose terms depend on the whole batch.
      domains: domains of hyperparameters outside :data:`HPARAM_DOMAINS` (or narrower
        ones for this method), ``name -> (low, high, low_open, high_open)``.
    """

    name: str
    kind: str
    hparams: Mapping[str, float]
    doc: str
    on_policy: bool = False
    estimate: Callable[..., Array] | None = None
    expected: Callable[..., Array] | None = None
    exact_step: Callable[..., tuple[Array, Any]] | None = None
    sample: Callable[..., Batch] | None = None
    init_aux: Callable[..., Any] | None = None
    pre_step: Callable[..., Any] | None = None
    lookahead: bool = False
    num_samples_free: bool = False
    decomposable: bool = False
    step_strength: str | None = None
    domains: Mapping[str, Domain] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        from copg_jax.kinds import kind_names

        v.check_choice("kind", self.kind, kind_names())
        unknown = set(self.hparams) - set(HPARAM_DOMAINS) - set(self.domains)
        if unknown:
            raise ValueError(f"hparams: {self.name} names hyperparameters without a domain "
                             f"{sorted(unknown)}; declare them in domains=")
        if self.estimate is None and self.exact_step is None and self.expected is None:
            raise ValueError(f"{self.name}: needs estimate, expected or exact_step")
        if self.lookahead and (self.init_aux is not None or self.pre_step is not None):
            raise ValueError(f"lookahead: {self.name} receives the look-ahead logits as aux; "
                             "it cannot also keep aux state (init_aux / pre_step)")

    @property
    def has_sampled_mode(self) -> bool:
        return self.estimate is not None

    def check_config(self, cfg: StaticConfig) -> None:
        if cfg.mode == "sampled" and not self.has_sampled_mode:
            raise ValueError(
                f"mode: method {self.name!r} is exact-only (closed-form update); "
                f"use mode='exact' or its sampled counterpart"
            )
        if cfg.mode == "exact" and self.exact_step is None and self.expected is None:
            raise ValueError(f"mode: method {self.name!r} has no exact mode")
        self._check_policy(cfg)
        if cfg.num_samples != 2 and not self.num_samples_free:
            raise ValueError(
                f"num_samples: method {self.name!r} works on pairs (num_samples=2), "
                f"got {cfg.num_samples}"
            )

    def _check_policy(self, cfg: StaticConfig) -> None:
        """Closed-form updates act on logits and extragradient steps on the optimizer's
        logits: both are for the tabular class only."""
        if cfg.policy.tabular:
            return
        from copg_jax.kinds import get_kind
        from copg_jax.policies import check_supported

        check_supported(cfg.policy, get_kind(self.kind))
        if cfg.mode == "exact" and self.exact_step is not None:
            raise ValueError(f"policy: {self.name!r} is a closed-form update on logits "
                             f"(tabular only); the {cfg.policy.name} class needs a gradient "
                             "method, or policy='tabular'")
        if self.lookahead:
            raise ValueError(f"policy: {self.name!r} is an extragradient method (tabular "
                             f"only), got the {cfg.policy.name} class")

    def check_step(self, hp: Mapping[str, Any], cfg: StaticConfig) -> None:
        """Refuses ``η·s > 1`` (``s`` = hp ``step_strength``) for a constant step: outside
        ``(0, 1]`` the linearized step extrapolates past π_t (see ``step_strength``)."""
        s = self.step_strength
        if s is None or cfg.eta_schedule != "constant" or v.is_traced(hp[s], hp["eta"]):
            return
        eta, strength = float(hp["eta"]), float(hp[s])
        if eta * strength > 1.0 + STEP_RTOL:
            raise ValueError(
                f"eta: {self.name} needs 0 < eta·{s} <= 1 (its linearized step weights ln π_t"
                f" by 1 − eta·{s}), got eta={eta:g} with {s}={strength:g} (eta·{s} = "
                f"{eta * strength:g}); use eta <= 1/{s} = {1.0 / strength:g}"
            )

    def domain(self, name: str) -> Domain | None:
        """The domain of hyperparameter ``name`` for this method (its own, else the
        standard one); None for a name no registered method knows."""
        if name in self.domains:
            return self.domains[name]
        if name in HPARAM_DOMAINS:
            return HPARAM_DOMAINS[name]
        from copg_jax.algos.registry import known_domains

        return known_domains().get(name)

    def resolve_hparams(self, hp: Mapping[str, Any] | None) -> dict[str, Any]:
        """Fills defaults, refuses unknown names and out-of-domain values (when concrete).
        A name this method does not read is kept (a sweep shares one setting among its
        methods) if some method knows it."""
        out = dict(self.hparams)
        for k, val in dict(hp or {}).items():
            if self.domain(k) is None:
                from copg_jax.algos.registry import known_domains

                known = sorted({*HPARAM_DOMAINS, *known_domains()})
                raise ValueError(f"hparams: unknown hyperparameter {k!r}; known: {known}")
            out[k] = val
        for k, val in out.items():
            lo, hi, lo_open, hi_open = self.domain(k)
            v.check_in_range(k, val, lo, hi, lo_open=lo_open, hi_open=hi_open)
            v.check_representable(k, val, float_dtype())
        return out
