"""Policy classes: parameters → logits for every context of a problem (SPEC §7).

A policy class maps parameters ``w`` to the logits ``θ(w)`` of a problem's contexts
(``[K]`` for a bandit, ``[X, K]`` for a contextual bandit). The estimators of every method
stay in logit space; the training step pulls a method's direction ``d = ĝ(θ)`` back to the
parameters with one vector–Jacobian product,

    ``g_w = (∂θ/∂w)ᵀ d``      (:func:`logits_and_pullback`),

so the exact twin of ``g_w`` is the pull-back of the exact direction, and where ``d`` is
the gradient of a surrogate ``L(θ)`` in logit space, ``g_w = ∇_w L(θ(w))`` (chain rule;
tested for CoPG, IPO, DPO, PG and IS-PG).

Classes (:class:`PolicySpec`, a static field of :class:`copg_jax.algos.base.StaticConfig`):

* ``tabular``: ``w = θ``, today's behaviour, bitwise (no vjp is taken).
* ``log_linear``: ``θ[x] = ln π_ref(·|x) + φ(x) W``, ``W ∈ R^{F×K}`` from zero, on the
  problem's context features ``φ`` (:attr:`copg_jax.kinds.base.ProblemKind.features`).
  With one-hot features it is the tabular class (``θ = ln π_ref + W``).
* ``mlp``: ``θ[x] = ln π_ref(·|x) + f_w(φ(x))``, a flax MLP with ``depth`` tanh layers of
  ``width`` units and a zero-initialized linear head.
* ``gru`` (token sequences, :mod:`copg_jax.envs.toy_lm`): ``θ[x, y] = ln π_w(y|x) =
  Σ_t ln π_w(y_t | x, y_<t)``, one GRU (:class:`SequenceGRU`) whose logits at every
  prefix come from the same weights; it starts at the problem's SFT weights (π_ref).
  A GRU rather than a causal transformer: over the prefix trie it costs one cell per
  prefix, ``Σ_{t<L} V^t`` (85 for V = L = 4), where a transformer attends over each of
  the ``V^L`` sequences (``V^L·L`` positions, 1 024), for the same exact log-probs.
* ``token_tabular``: one softmax table per (prompt, prefix), ``θ[x, y] = Σ_t
  log_softmax(w[x, prefix_t(y)])[y_t]``, from the token conditionals of π_ref: fully
  expressive, the tabular MDP on the prefix tree.

Every feature class (log-linear, MLP) is a *residual on the reference*: it starts at π_ref exactly
(``f_w = 0`` at initialization), as a fine-tuned language model starts at its SFT model.
Network weights are drawn from the run's key, so seeds differ in their initialization.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from copg_jax import validation as v

Array = jax.Array

POLICY_CLASSES = ("tabular", "log_linear", "mlp", "gru", "token_tabular")
SEQUENCE_CLASSES = ("gru", "token_tabular")


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """A policy class and its static sizes (hashable; part of the compiled program).

    Attributes:
      name: ``"tabular"``, ``"log_linear"`` or ``"mlp"`` (module doc).
      width: hidden units per layer of ``mlp``; the ``gru`` class takes the width of
        the problem's SFT model (a different ``width`` is refused).
      depth: hidden layers of ``mlp`` (``0``: a linear map of the features, which is
        ``log_linear`` with a bias).
    """

    name: str = "tabular"
    width: int = 16
    depth: int = 1

    def __post_init__(self):
        v.check_choice("policy", self.name, POLICY_CLASSES)
        v.check_int_at_least("policy_width", self.width, 1)
        v.check_int_at_least("policy_depth", self.depth, 0)

    @property
    def tabular(self) -> bool:
        return self.name == "tabular"


class MLP(nn.Module):
    """``depth`` tanh layers of ``width`` units, then a zero-initialized linear head."""

    width: int
    depth: int
    out: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.tanh(nn.Dense(self.width, dtype=self.dtype, param_dtype=self.dtype)(x))
        head = nn.Dense(self.out, dtype=self.dtype, param_dtype=self.dtype,
                        kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)
        return head(x)


class SequenceGRU(nn.Module):
    """Log-probs ``[X, V^L]`` of every sequence for every prompt from one GRU run over the
    prefix trie: ``h_0 = tanh(Dense(φ(x)))``, ``h(prefix·v) = GRU(h(prefix), emb(v))``,
    ``π(·|prefix) = softmax(head(h(prefix)))`` with a zero-initialized head (uniform at
    initialization)."""

    vocab: int
    length: int
    width: int
    dtype: Any

    @nn.compact
    def __call__(self, feats):
        kw = {"dtype": self.dtype, "param_dtype": self.dtype}
        nx, v = feats.shape[0], self.vocab
        h = nn.tanh(nn.Dense(self.width, **kw)(feats))[:, None, :]  # [X, 1, H]
        embed = nn.Embed(v, self.width, **kw)
        cell = nn.GRUCell(features=self.width, **kw)
        head = nn.Dense(v, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                        **kw)
        seq = jnp.zeros((nx, 1), self.dtype)
        for t in range(self.length):
            seq = (seq[:, :, None] + jax.nn.log_softmax(head(h), axis=-1)).reshape(nx, -1)
            if t + 1 < self.length:  # children of prefix i are i·V + v
                tokens = jnp.tile(jnp.arange(v), h.shape[1])
                inputs = jnp.broadcast_to(embed(tokens), (nx, tokens.shape[0], self.width))
                h, _ = cell(jnp.repeat(h, v, axis=1), inputs)
        return seq


def _sequence_model(spec: PolicySpec, problem) -> SequenceGRU:
    if spec.width != problem.width:
        raise ValueError(f"policy_width: the gru class uses the problem's SFT model of width "
                         f"{problem.width}, got {spec.width}")
    return SequenceGRU(vocab=problem.vocab, length=problem.length, width=problem.width,
                       dtype=problem.rewards.dtype)


def _check_sequences(spec: PolicySpec, problem) -> None:
    if spec.name in SEQUENCE_CLASSES and getattr(problem, "vocab", 0) < 2:
        raise ValueError(f"policy: the {spec.name} class needs a token-sequence problem "
                         f"(copg_jax.envs.toy_lm), got a {type(problem).__name__}")


def _inputs(spec: PolicySpec, problem) -> tuple[Array, Array]:
    """``(φ, ln π_ref)`` of a non-tabular class: the kind's features and base logits."""
    from copg_jax.kinds import kind_of

    kind = kind_of(problem)
    check_supported(spec, kind)
    return kind.features(problem), kind.init_logits(problem)


def check_supported(spec: PolicySpec, kind) -> None:
    """A non-tabular class needs a kind with context features (else a clear error)."""
    if not spec.tabular and kind.features is None:
        raise ValueError(f"policy: the {spec.name} class needs context features; the "
                         f"{kind.name} kind has none (use policy='tabular', or a "
                         "contextual problem)")


def _mlp(spec: PolicySpec, num_actions: int, dtype) -> MLP:
    return MLP(width=spec.width, depth=spec.depth, out=num_actions, dtype=dtype)


def init_params(spec: PolicySpec, problem, key: Array):
    """Initial parameters: the kind's initial logits (tabular), else the zero head of a
    residual on ``ln π_ref`` (``key`` draws the hidden weights of a network)."""
    if spec.tabular:
        from copg_jax.kinds import kind_of

        return kind_of(problem).init_logits(problem)
    _check_sequences(spec, problem)
    if spec.name == "gru":
        _sequence_model(spec, problem)  # checks the width
        return problem.sft_params
    if spec.name == "token_tabular":
        from copg_jax.envs.toy_lm import prefix_conditionals

        return prefix_conditionals(problem.ref_probs, problem.vocab, problem.length)
    feats, base = _inputs(spec, problem)
    dt = base.dtype
    if spec.name == "log_linear":
        return jnp.zeros((feats.shape[-1], base.shape[-1]), dt)
    return _mlp(spec, base.shape[-1], dt).init(key, feats.astype(dt))["params"]


def logits(spec: PolicySpec, problem, params) -> Array:
    """``θ(w)``: the logits of every context (module doc)."""
    if spec.tabular:
        return params
    _check_sequences(spec, problem)
    if spec.name == "gru":
        return _sequence_model(spec, problem).apply({"params": params}, problem.features)
    if spec.name == "token_tabular":
        from copg_jax.envs.toy_lm import prefix_log_probs

        return prefix_log_probs(params, problem.vocab, problem.length)
    feats, base = _inputs(spec, problem)
    feats = feats.astype(base.dtype)
    if spec.name == "log_linear":
        return base + feats @ params
    return base + _mlp(spec, base.shape[-1], base.dtype).apply({"params": params}, feats)


def logits_and_pullback(spec: PolicySpec, problem,
                        params) -> tuple[Array, Callable[[Array], Any]]:
    """``(θ(w), d ↦ (∂θ/∂w)ᵀ d)``; the identity for the tabular class (no vjp)."""
    if spec.tabular:
        return params, lambda d: d
    out, vjp = jax.vjp(lambda p: logits(spec, problem, p), params)
    return out, lambda d: vjp(d)[0]


def num_params(params) -> int:
    """The number of scalar parameters of a pytree."""
    return int(sum(jnp.size(a) for a in jax.tree_util.tree_leaves(params)))


__all__ = ["POLICY_CLASSES", "SEQUENCE_CLASSES", "PolicySpec", "MLP", "SequenceGRU",
           "check_supported", "init_params", "logits", "logits_and_pullback", "num_params"]
