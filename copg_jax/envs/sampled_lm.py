r"""The toy LM above the enumeration limit: drawn sequences, Monte-Carlo metrics (SPEC §7–8).

When ``V^L`` exceeds :data:`copg_jax.envs.toy_lm.MAX_SEQUENCES` nothing is enumerated.
Sequences are drawn from the GRU sequence model by ancestral sampling, and ``ln π_w(y|x)``
is computed for the drawn sequences only, by teacher forcing. The weights are those of
:class:`copg_jax.policies.SequenceGRU` (the same parameter tree: an enumerable problem's
SFT weights score a sequence here exactly as its trie does; tested), so

    ``ln π_w(y|x) = Σ_t ln softmax(head(h_t) / T)[y_t]``,
    ``h_0 = tanh(Dense(φ(x)))``,  ``h_{t+1} = GRU(h_t, emb(y_t))``      (:func:`rollout`),

with ``T = 1`` for the policy and ``T > 1`` for a token-tempered behaviour policy.

Metrics are Monte-Carlo estimates with their standard errors (:func:`mc_metrics`): with
``M`` draws ``y_m ~ π(·|x)`` per prompt,

    reward ``Ê[R] = Σ_x ρ(x) (1/M) Σ_m R(x, y_m)``,
    KL ``K̂ = Σ_x ρ(x) (1/M) Σ_m (ln π − ln π_ref)(y_m|x)`` (the unbiased estimator of
    ``E_x KL(π(·|x) ‖ π_ref(·|x))``),
    ``SE² = Σ_x ρ(x)² s_x² / M`` (stratified over prompts, ``s_x²`` the sample variance).

J* and the regret need ``Σ_y π_ref(y|x) e^{R(x,y)/β}`` over all sequences: they are not
estimated (a self-normalized estimate of a log-partition function is biased), and
``summary.json`` says so.

Behaviour: ``μ1 = π_ref`` and ``μ2`` = π_ref **tempered per token** (token logits / T),
which can be drawn autoregressively and scored exactly. The enumerated toy LM tempers whole
sequences (``π_ref^{1/T}`` normalized over the ``V^L`` sequences), which needs that
normalizer: above the limit ``μ2`` is a different, stated distribution.

π_ref: ``"uniform"`` (the zero head of the GRU), or ``"sft"``: the GRU fitted by maximum
likelihood (teacher forcing, Adam on ``−E_{y~q} ln π_w(y|x)`` with fresh draws every step;
:func:`fit_sft_sampled`) to a random GRU teacher ``q`` (the same architecture, its head drawn
with scale ``teacher_scale``), the sampled counterpart of :func:`copg_jax.envs.toy_lm.fit_sft`.
Rewards: the rules ``"sorted"`` and ``"pattern"`` (:func:`copg_jax.envs.toy_lm.rule_rewards`),
or a user's table ``[X, V^L]`` looked up by the sequence's base-V index. ``"random_net"``
standardizes over all ``V^L`` sequences and is refused above the limit.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from copg_jax import validation as v
from copg_jax.dtypes import float_dtype
from copg_jax.envs.toy_lm import REFS, RULES, rule_rewards

Array = jax.Array

#: Largest table ``X · V^L`` of rewards held in memory for a sampled problem.
MAX_TABLE_ENTRIES = 2**26


@struct.dataclass
class SampledLM:
    """Prompts ``x ~ ρ`` with one-hot features, the SFT weights of π_ref (also the
    starting policy) and the reward (a rule, or ``table [X, V^L]``)."""

    features: Array
    context_probs: Array
    ref_params: Any
    table: Array | None = None
    vocab: int = struct.field(pytree_node=False, default=0)
    length: int = struct.field(pytree_node=False, default=0)
    width: int = struct.field(pytree_node=False, default=0)
    reward: str = struct.field(pytree_node=False, default="sorted")
    behaviour_temperature: float = struct.field(pytree_node=False, default=2.0)

    @property
    def num_prompts(self) -> int:
        return self.features.shape[0]


def _apply(module: nn.Module, params, *args):
    return module.apply({"params": params}, *args)


def rollout(problem: SampledLM, params, x: Array, *, tokens: Array | None = None,
            key: Array | None = None, temperature: float = 1.0) -> tuple[Array, Array]:
    """``(tokens [B, L], ln π_w(tokens|x) [B])``: teacher-forced on ``tokens``, or drawn
    token by token with ``key`` (module doc; ``temperature`` divides the token logits)."""
    dt = problem.features.dtype
    kw = {"dtype": dt, "param_dtype": dt}
    dense, head = nn.Dense(problem.width, **kw), nn.Dense(problem.vocab, **kw)
    embed, cell = nn.Embed(problem.vocab, problem.width, **kw), nn.GRUCell(problem.width, **kw)
    h = jnp.tanh(_apply(dense, params["Dense_0"], problem.features[x]))
    keys = None if key is None else jax.random.split(key, problem.length)
    drawn, total = [], jnp.zeros(x.shape, dt)
    for t in range(problem.length):
        logits = _apply(head, params["Dense_1"], h)
        logits = logits if temperature == 1.0 else logits / temperature
        tok = (tokens[:, t] if keys is None
               else jax.random.categorical(keys[t], logits).astype(jnp.int32))
        total = total + jnp.take_along_axis(jax.nn.log_softmax(logits), tok[:, None],
                                            axis=-1)[:, 0]
        drawn.append(tok)
        if t + 1 < problem.length:
            h, _ = _apply(cell, params["GRUCell_0"], h, _apply(embed, params["Embed_0"], tok))
    return jnp.stack(drawn, axis=1), total


def log_probs(problem: SampledLM, params, x: Array, tokens: Array,
              temperature: float = 1.0) -> Array:
    """``ln π_w(tokens|x)`` ``[B]`` by teacher forcing (:func:`rollout`)."""
    return rollout(problem, params, x, tokens=tokens, temperature=temperature)[1]


def draw(problem: SampledLM, params, x: Array, key: Array,
         temperature: float = 1.0) -> tuple[Array, Array]:
    """``(y [B, L], ln π(y|x))`` with ``y ~ π_w(·|x)`` tempered per token."""
    return rollout(problem, params, x, key=key, temperature=temperature)


def rewards(problem: SampledLM, x: Array, tokens: Array) -> Array:
    """``R(x, y)`` ``[B]`` of drawn sequences: the rule, or the table at the base-V index."""
    if problem.table is None:
        return rule_rewards(problem.reward, tokens, x, problem.vocab).astype(
            problem.features.dtype)
    place = problem.vocab ** jnp.arange(problem.length - 1, -1, -1, dtype=jnp.int32)
    return problem.table[x, tokens @ place]


def mc_metrics(problem: SampledLM, params, key: Array, samples: int) -> dict[str, Array]:
    """Monte-Carlo ``expected_reward`` and ``kl_to_ref`` with their standard errors
    (``*_se``) from ``samples`` draws per prompt (module doc)."""
    nx = problem.num_prompts
    x = jnp.repeat(jnp.arange(nx), samples)
    y, lp = draw(problem, params, x, key)
    out = {}
    for name, val in (("expected_reward", rewards(problem, x, y)),
                      ("kl_to_ref", lp - log_probs(problem, problem.ref_params, x, y))):
        val = val.reshape(nx, samples)
        rho = problem.context_probs
        out[name] = rho @ jnp.mean(val, axis=1)
        out[f"{name}_se"] = jnp.sqrt(rho**2 @ jnp.var(val, axis=1, ddof=1) / samples)
    return out


def _init(vocab: int, width: int, feats: Array, key: Array):
    """SequenceGRU's initial weights: they do not depend on the length (flax draws each
    by its module's name), so a length-2 model, whose trie has V cells, draws the same
    ones as any length (tested)."""
    from copg_jax.policies import SequenceGRU

    model = SequenceGRU(vocab=vocab, length=2, width=width, dtype=feats.dtype)
    return model.init(key, feats)["params"]


def random_teacher(vocab: int, width: int, feats: Array, key: Array, scale: float = 1.0):
    """A random GRU ``q``: initial weights with a head drawn ``N(0, scale²)`` (bias) and
    ``N(0, scale²/width)`` (kernel), so its token logits have spread ≈ ``scale``."""
    k_w, k_b, k_k = jax.random.split(key, 3)
    params = _init(vocab, width, feats, k_w)
    kernel = params["Dense_1"]["kernel"]
    head = {"bias": scale * jax.random.normal(k_b, (vocab,), feats.dtype),
            "kernel": scale / np.sqrt(width) * jax.random.normal(k_k, kernel.shape,
                                                                 feats.dtype)}
    return {**params, "Dense_1": head}


def fit_sft_sampled(problem: SampledLM, teacher, key: Array, steps: int = 500,
                    batch: int = 512, lr: float = 0.02):
    """Maximum likelihood by teacher forcing: Adam on ``−mean ln π_w(y|x)``, ``x ~ ρ``,
    ``y ~ q(·|x)`` drawn afresh each step, from ``problem.ref_params``. Returns
    ``(params, Monte-Carlo KL(q‖π_w) on a fresh batch)``."""
    opt = optax.adam(lr)

    def data(k):
        k_x, k_y = jax.random.split(k)
        x = jax.random.categorical(k_x, jnp.log(problem.context_probs), shape=(batch,))
        y, lq = draw(problem, teacher, x, k_y)
        return x, y, lq

    def step(c, k):
        p, s = c
        x, y, _ = data(k)
        g = jax.grad(lambda w: -jnp.mean(log_probs(problem, w, x, y)))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    p0 = problem.ref_params
    keys = jax.random.split(key, steps + 1)
    (params, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), keys[:-1])
    x, y, lq = data(keys[-1])
    return params, jnp.mean(lq - log_probs(problem, params, x, y))


def as_sampled(problem, behaviour_temperature: float = 2.0) -> SampledLM:
    """An enumerable :class:`copg_jax.envs.toy_lm.TokenSequences` without enumeration: the
    same prompts, SFT weights and rewards (as a table), drawn and scored by sampling (its
    ``μ2`` becomes the token-tempered π_ref; module doc). For checking the sampled path
    against the exact one."""
    return SampledLM(features=problem.features, context_probs=problem.context_probs,
                     ref_params=problem.sft_params, table=problem.rewards,
                     vocab=problem.vocab, length=problem.length, width=problem.width,
                     reward="table", behaviour_temperature=behaviour_temperature)


def check_sampled_reward(reward, num_prompts: int, vocab: int, length: int):
    """The reward of a sampled problem: a rule name, or a table ``[X, V^L]`` (float)."""
    if isinstance(reward, str):
        if reward not in RULES:
            raise ValueError(f"reward: {reward!r} is not available above the enumeration "
                             f"limit (random_net standardizes over all V^L sequences); use "
                             f"one of {list(RULES)} or a --reward_table")
        if reward == "sorted" and length < 2:
            raise ValueError("reward: 'sorted' needs length >= 2")
        return None
    table = np.asarray(reward, np.float64)
    if table.size > MAX_TABLE_ENTRIES:
        raise ValueError(f"reward_table: {table.size} entries exceed {MAX_TABLE_ENTRIES}")
    v.check_shape("reward_table", table, (num_prompts, vocab**length))
    v.check_finite("reward_table", table)
    return jnp.asarray(table, float_dtype())


def make_sampled_lm(num_prompts: int = 8, vocab: int = 4, length: int = 8,
                    reward: str | np.ndarray = "sorted", ref: str = "sft", width: int = 16,
                    behaviour_temperature: float = 2.0, sft_steps: int = 500,
                    teacher_scale: float = 1.0, key: Array | None = None) -> SampledLM:
    """A validated sampled toy LM (module doc); ``reward`` a rule or a ``[X, V^L]`` table."""
    for name, val, lo in (("prompts", num_prompts, 1), ("vocab", vocab, 2),
                          ("length", length, 1), ("width", width, 1), ("sft_steps", sft_steps, 1)):
        v.check_int_at_least(name, val, lo)
    v.check_choice("ref", ref, REFS)
    v.check_positive("behaviour_temperature", behaviour_temperature)
    v.check_positive("teacher_scale", teacher_scale)
    table = check_sampled_reward(reward, num_prompts, vocab, length)
    key = jax.random.PRNGKey(0) if key is None else key
    k_q, k_w, k_fit = jax.random.split(key, 3)
    feats = jnp.eye(num_prompts, dtype=float_dtype())
    problem = SampledLM(features=feats,
                        context_probs=jnp.full((num_prompts,), 1.0 / num_prompts, feats.dtype),
                        ref_params=_init(vocab, width, feats, k_w), table=table, vocab=vocab,
                        length=length, width=width,
                        reward="table" if table is not None else reward,
                        behaviour_temperature=float(behaviour_temperature))
    if ref == "uniform":
        return problem
    teacher = random_teacher(vocab, width, feats, k_q, teacher_scale)
    params, _ = jax.jit(fit_sft_sampled, static_argnums=(3,))(problem, teacher, k_fit,
                                                              sft_steps)
    return problem.replace(ref_params=params)


__all__ = ["MAX_TABLE_ENTRIES", "SampledLM", "as_sampled", "check_sampled_reward", "draw",
           "fit_sft_sampled", "log_probs", "make_sampled_lm", "mc_metrics",
           "random_teacher", "rewards", "rollout"]
