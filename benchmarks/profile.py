"""Micro-profile of the W1 data path and estimator pieces, 100 seeds (``vmap``), jitted,
best of 5: ``python -m benchmarks.profile``. Each line: milliseconds per call and the
seconds it would add to W1 (× calls per W1 run)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from copg_jax import data

S, N, B, K = 100, 10_000, 512, 3
STEPS, EPOCHS, METHODS = 1900, 100, 7


def best(f, *a, reps=5):
    jax.block_until_ready(f(*a))
    b = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*a))
        b = min(b, time.perf_counter() - t0)
    return b


def line(name, sec, calls):
    print(f"{name:52s} {sec * 1e3:8.2f} ms  x{calls:<6d} = {sec * calls:6.2f} s", flush=True)


def main() -> None:
    keys = jax.random.split(jax.random.PRNGKey(0), S)
    perm = jax.jit(jax.vmap(lambda k: data.permutation(k, N)))
    line("epoch shuffle data.permutation (current)", best(perm, keys), EPOCHS)
    xs = jax.random.bits(jax.random.PRNGKey(1), (S, N), jnp.uint32)
    line("  one sort round, XLA jnp.sort [100, 1e4] u32", best(jax.jit(jnp.sort), xs), 2 * EPOCHS)
    xn = np.asarray(xs)
    line("  one sort round, NumPy np.sort [100, 1e4] u32", best(lambda a: np.sort(a, -1), xn),
         2 * EPOCHS)
    line("jax.random.permutation (key/value sort)",
         best(jax.jit(jax.vmap(lambda k: jax.random.permutation(k, N))), keys), EPOCHS)
    ds = jax.random.randint(jax.random.PRNGKey(1), (S, N, 2), 0, K)
    idx = perm(keys)[:, :B]
    line("minibatch gather y[idx] (int32 [512, 2])",
         best(jax.jit(jax.vmap(lambda d, i: jnp.take(d, i, axis=0))), ds, idx), STEPS)
    y, v = ds[:, :B], jnp.ones((S, B, 2))
    scat = jax.jit(jax.vmap(lambda y, v: jnp.zeros(K).at[y.reshape(-1)].add(v.reshape(-1))))
    line("estimator scatter-add 1024 -> K (.at[].add)", best(scat, y, v), STEPS * METHODS)
    onehot = jax.jit(jax.vmap(lambda y, v: jnp.sum(
        jax.nn.one_hot(y.reshape(-1), K) * v.reshape(-1)[:, None], 0)))
    line("  same as a one-hot sum (proposal)", best(onehot, y, v), STEPS * METHODS)
    line("jax.random.uniform [100, 1024] (rloo draws)",
         best(jax.jit(jax.vmap(lambda k: jax.random.uniform(k, (2 * B,)))), keys), STEPS)


if __name__ == "__main__":
    main()
