"""Token sequences: the toy language model of SPEC §8, exact by enumeration.

Prompts ``x ~ ρ`` (with features ``φ(x)``, one-hot by default), responses
``y = (y_1..y_L)`` over a vocabulary of V tokens, a sequence-level reward ``R(x, y)``,
and a sequence model ``ln π_w(y|x) = Σ_t ln π_w(y_t | x, y_<t)``. With ``N = V^L`` small
(at most :data:`MAX_SEQUENCES`) every quantity is an exact sum over the N sequences, so
the problem *is* a contextual bandit whose arms are the sequences
(:class:`TokenSequences` subclasses :class:`~copg_jax.envs.contextual.ContextualBandit`
and uses its kind): π*, J*, regret, reward and ``KL(π‖π_ref)`` come from the contextual
kind, and every contextual method's logit-space direction applies to the ``[X, N]``
sequence log-probabilities. Its pull-back through the sequence model
(:mod:`copg_jax.policies`, class ``gru``) is exact: for ``d = Σ_i c_i (e_{y_i} − π)``,
``(∂θ/∂w)ᵀ d = Σ_i c_i ∇_w ln π(y_i)`` since ``Σ_y π(y) ∇_w ln π(y) = 0``; and the pair
expectation of SPEC §7 is one weighted sum over the N sequences
(:func:`copg_jax.algos.bandit_methods.pair_expectation`), never over ``N²`` pairs.

Sequence ``n`` (row of :func:`all_sequences`) has tokens the base-V digits of ``n``, first
token slowest; the prefix trie numbers depth-t prefixes the same way, so the children of
prefix ``i`` are ``i·V + v``.

Rewards (:func:`sequence_rewards`): ``"sorted"`` (the fraction of adjacent non-decreasing
token pairs, shifted by the prompt: tokens are read as ``(y_t + x) mod V``), ``"pattern"``
(the fraction of positions whose token equals the prompt's target ``x mod V``), or
``"random_net"`` (a fixed random tanh network over the one-hot sequence and prompt,
standardized); or a user's table ``[X, V, …, V]``.

π_ref is the "SFT" model: the GRU sequence model fitted by exact maximum likelihood
(:func:`fit_sft`, Adam on ``Σ_x ρ(x) KL(q(·|x) ‖ π_w(·|x))``) to a reference ``q``,
or, with ``ref="uniform"``, its zero-head initialization (the uniform π_ref, whose
optimum has the closed form ``π* ∝ e^{R/β}``). It is also the starting policy.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from copg_jax import validation as v
from copg_jax.dtypes import float_dtype
from copg_jax.envs.contextual import ContextualBandit, make_contextual_bandit

#: Largest number of sequences V^L enumerated for exact metrics and training.
MAX_SEQUENCES = 4096
RULES = ("sorted", "pattern")
REWARDS = (*RULES, "random_net")
REFS = ("sft", "uniform")


@struct.dataclass
class TokenSequences(ContextualBandit):
    """A contextual bandit over the ``V^L`` sequences, with the SFT network's parameters
    (π_ref and the initial policy of the ``gru`` class) and the static ``vocab``,
    ``length`` and ``width`` of the sequence model."""

    sft_params: Any = None
    vocab: int = struct.field(pytree_node=False, default=0)
    length: int = struct.field(pytree_node=False, default=0)
    width: int = struct.field(pytree_node=False, default=0)


def check_enumerable(vocab: int, length: int) -> int:
    """``V^L``, or a ValueError naming the field when it exceeds :data:`MAX_SEQUENCES`."""
    v.check_int_at_least("vocab", vocab, 2)
    v.check_int_at_least("length", length, 1)
    n = vocab**length
    if n > MAX_SEQUENCES:
        raise ValueError(f"length: V^L = {vocab}^{length} = {n} sequences exceeds the "
                         f"enumeration limit {MAX_SEQUENCES} of exact metrics and exact "
                         "training; use a smaller --vocab or --length (sampled training "
                         "with Monte-Carlo metrics is not implemented)")
    return n


def all_sequences(vocab: int, length: int) -> np.ndarray:
    """``[V^L, L]`` int32: row n = the base-V digits of n, first token slowest."""
    n = np.arange(vocab**length)
    return np.stack([(n // vocab ** (length - 1 - t)) % vocab for t in range(length)],
                    axis=1).astype(np.int32)


def sequence_rewards(kind: str, num_prompts: int, vocab: int, length: int,
                     key: jax.Array | None = None) -> np.ndarray:
    """``[X, V^L]`` rewards of a rule (module doc); ``key`` draws the random network."""
    v.check_choice("reward", kind, REWARDS)
    seqs = all_sequences(vocab, length)
    if kind in RULES:
        x = np.arange(num_prompts)[:, None]
        return np.asarray(rule_rewards(kind, seqs[None], x, vocab), np.float64)
    key = jax.random.PRNGKey(0) if key is None else key
    k1, k2, k3 = jax.random.split(key, 3)
    onehot = np.eye(vocab)[seqs].reshape(len(seqs), -1)  # [N, L·V]
    hidden = 16
    w_seq = np.asarray(jax.random.normal(k1, (onehot.shape[1], hidden)))
    w_x = np.asarray(jax.random.normal(k2, (num_prompts, hidden)))
    w_out = np.asarray(jax.random.normal(k3, (hidden,)))
    h = np.tanh((onehot @ w_seq)[None] / np.sqrt(length) + w_x[:, None])
    r = h @ w_out
    return (r - r.mean()) / r.std()


def rule_rewards(kind: str, tokens, x, vocab: int):
    """The rule rewards (module doc) of ``tokens [..., L]`` for prompts ``x`` (broadcast
    against ``tokens[..., 0]``); NumPy or JAX arrays alike (the sampled toy LM of
    :mod:`copg_jax.envs.sampled_lm` scores its drawn sequences with it)."""
    if tokens.shape[-1] < 2 and kind == "sorted":
        raise ValueError("reward: 'sorted' needs length >= 2")
    x = x[..., None]
    if kind == "sorted":
        tok = (tokens + x) % vocab
        return (tok[..., 1:] >= tok[..., :-1]).mean(axis=-1)
    return (tokens == (x % vocab)).mean(axis=-1)


def check_reward_table(table, num_prompts: int | None = None,
                       enumerable: bool = True) -> np.ndarray:
    """A user's ``[X, V, …, V]`` table (L token axes) as ``[X, V^L]``; errors name it.
    ``enumerable``: refuse ``V^L`` above :data:`MAX_SEQUENCES` (the exact toy LM)."""
    t = np.asarray(table)
    if t.ndim < 2 or len(set(t.shape[1:])) != 1 or t.shape[1] < 2:
        raise ValueError(f"reward_table: expected shape [X, V, ..., V] (L token axes of equal "
                         f"size V >= 2), got {t.shape}")
    if num_prompts is not None and t.shape[0] != num_prompts:
        raise ValueError(f"reward_table: has {t.shape[0]} prompts, expected {num_prompts}")
    if enumerable:
        check_enumerable(t.shape[1], t.ndim - 1)
    v.check_finite("reward_table", t)
    return t.reshape(t.shape[0], -1).astype(np.float64)


def load_reward_table(path, enumerable: bool = True) -> np.ndarray:
    """A ``.npy`` reward table (``allow_pickle=False``), validated, in its shape
    ``[X, V, …, V]`` (the token axes give V and L)."""
    try:
        t = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"reward_table {str(path)!r}: cannot be read as .npy ({e})") from None
    if not isinstance(t, np.ndarray) or t.dtype.kind not in "iuf":
        raise ValueError(f"reward_table {str(path)!r}: expected one numeric array")
    try:
        check_reward_table(t, enumerable=enumerable)
        return t.astype(np.float64)
    except ValueError as e:
        raise ValueError(f"{e} (in {str(path)!r})") from None


def reference_teacher(key: jax.Array, num_prompts: int, vocab: int, length: int,
                      scale: float = 1.0) -> np.ndarray:
    """A random autoregressive distribution ``q(y|x)`` ``[X, V^L]``: token logits
    ``N(0, scale²)`` per (prompt, prefix), the reference an SFT model imitates."""
    nodes = sum(vocab**t for t in range(length))
    logits = scale * jax.random.normal(key, (num_prompts, nodes, vocab), float_dtype())
    return np.exp(np.asarray(prefix_log_probs(logits, vocab, length)))


def prefix_log_probs(token_logits: jax.Array, vocab: int, length: int) -> jax.Array:
    """``[X, V^L]`` sequence log-probs from per-prefix token logits ``[X, nodes, V]``
    (nodes ordered by depth, then base-V prefix index)."""
    lp = jax.nn.log_softmax(token_logits, axis=-1)
    seq = jnp.zeros(token_logits.shape[:1] + (1,), lp.dtype)
    start = 0
    for t in range(length):
        level = lp[:, start:start + vocab**t]  # [X, V^t, V]
        seq = (seq[:, :, None] + level).reshape(seq.shape[0], -1)
        start += vocab**t
    return seq


def prefix_conditionals(probs: jax.Array, vocab: int, length: int) -> jax.Array:
    """``[X, nodes, V]`` log ``π(v | prefix)`` of a sequence distribution ``[X, V^L]`` (the
    inverse of :func:`prefix_log_probs`); every prefix must have positive mass."""
    levels = []
    marg = probs  # [X, V^L]: marginals of depth-L prefixes
    for _ in range(length):
        m = marg.reshape(marg.shape[0], -1, vocab)  # [X, V^t, V]
        levels.append(jnp.log(m) - jnp.log(jnp.sum(m, axis=-1, keepdims=True)))
        marg = jnp.sum(m, axis=-1)
    return jnp.concatenate(levels[::-1], axis=1)


def fit_sft(model_init, model_apply, feats, teacher, context_probs, key, steps: int = 2000,
            lr: float = 0.02):
    """Exact maximum likelihood: Adam on ``Σ_x ρ(x) Σ_y q(y|x) (ln q − ln π_w)(y|x)``.
    Returns ``(params, final KL)``."""
    params = model_init(key)
    opt = optax.adam(lr)
    logq = jnp.log(jnp.maximum(teacher, 1e-300))

    def kl(p):
        lp = model_apply(p)
        return context_probs @ jnp.sum(teacher * (logq - lp), axis=-1)

    def step(c, _):
        p, s = c
        g = jax.grad(kl)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params, kl(params)


def make_toy_lm(num_prompts: int = 8, vocab: int = 4, length: int = 4,
                reward: str | np.ndarray = "sorted", ref: str = "sft", width: int = 16,
                behaviour_temperature: float = 2.0, sft_steps: int = 2000,
                key: jax.Array | None = None) -> TokenSequences:
    """A validated toy LM (module doc). ``reward``: a rule name or a ``[X, V, …, V]``
    table (then ``num_prompts``, ``vocab`` and ``length`` are the table's). Behaviour:
    ``μ1 = π_ref``, ``μ2 ∝ π_ref^{1/T}`` over whole sequences (``T`` =
    ``behaviour_temperature``, a flatter π_ref for T > 1)."""
    from copg_jax.policies import SequenceGRU

    if not isinstance(reward, str):
        table = check_reward_table(reward)
        num_prompts, vocab = table.shape[0], int(np.shape(reward)[1])
        length = np.ndim(reward) - 1
    v.check_int_at_least("prompts", num_prompts, 1)
    check_enumerable(vocab, length)
    v.check_choice("ref", ref, REFS)
    v.check_int_at_least("width", width, 1)
    v.check_positive("behaviour_temperature", behaviour_temperature)
    key = jax.random.PRNGKey(0) if key is None else key
    k_r, k_q, k_w = jax.random.split(key, 3)
    table = (sequence_rewards(reward, num_prompts, vocab, length, k_r)
             if isinstance(reward, str) else table)
    feats = jnp.eye(num_prompts, dtype=float_dtype())
    rho = jnp.full((num_prompts,), 1.0 / num_prompts, float_dtype())
    model = SequenceGRU(vocab=vocab, length=length, width=width, dtype=float_dtype())
    init = lambda k: model.init(k, feats)["params"]  # noqa: E731
    apply = lambda p: model.apply({"params": p}, feats)  # noqa: E731
    if ref == "uniform":
        params = init(k_w)  # the zero head: uniform over sequences
    else:
        teacher = reference_teacher(k_q, num_prompts, vocab, length)
        params, _ = fit_sft(init, apply, feats, jnp.asarray(teacher), rho, k_w, sft_steps)
    ref_probs = np.asarray(jnp.exp(apply(params)), np.float64)
    tempered = ref_probs ** (1.0 / behaviour_temperature)
    mu2 = tempered / tempered.sum(axis=-1, keepdims=True)
    base = make_contextual_bandit(table, ref_probs, ref_probs, mu2, np.asarray(rho), feats)
    return TokenSequences(**{f: getattr(base, f) for f in (
        "rewards", "ref_probs", "mu1", "mu2", "context_probs", "features", "noise_scale")},
        noise=base.noise, sft_params=params, vocab=vocab, length=length, width=width)


def as_tree_mdp(problem: TokenSequences):
    """The tabular MDP on the prefix tree: states ``(x, prefix)`` (``s = x·nodes + node``,
    nodes by depth), actions the V tokens, deterministic transitions to ``prefix·v``,
    horizon L, the sequence reward at the last step, ``ρ0`` = ρ on the roots and the
    reference/behaviour policies π_ref's token conditionals. Its soft-optimal policy
    composes to π*, and its J to the toy LM's J (tested)."""
    from copg_jax.envs.mdp import make_mdp

    nv, nl = problem.vocab, problem.length
    nx = problem.num_contexts
    offsets = np.cumsum([0] + [nv**t for t in range(nl)])
    nodes = int(offsets[-1])
    S = nx * nodes
    T = np.zeros((S, nv, S))
    r = np.zeros((S, nv))
    rewards = np.asarray(problem.rewards, np.float64)
    for x in range(nx):
        for t in range(nl):
            for i in range(nv**t):
                s = x * nodes + offsets[t] + i
                for a in range(nv):
                    if t + 1 < nl:
                        T[s, a, x * nodes + offsets[t + 1] + i * nv + a] = 1.0
                    else:
                        T[s, a, s] = 1.0
                        r[s, a] = rewards[x, i * nv + a]
    rho0 = np.zeros(S)
    rho0[np.arange(nx) * nodes] = np.asarray(problem.context_probs, np.float64)
    ref = np.exp(np.asarray(prefix_conditionals(problem.ref_probs, nv, nl), np.float64))
    return make_mdp(T, r, rho0, nl, ref.reshape(S, nv), ref.reshape(S, nv))


__all__ = ["MAX_SEQUENCES", "as_tree_mdp", "TokenSequences", "all_sequences",
           "check_enumerable", "check_reward_table", "fit_sft", "load_reward_table",
           "make_toy_lm", "prefix_conditionals", "prefix_log_probs", "reference_teacher",
           "sequence_rewards"]
