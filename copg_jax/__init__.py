"""copg_jax: KL-regularized policy optimization on bandits, preference games and tabular MDPs.

Contrastive Policy Gradient (Flet-Berliac et al., 2024), Nash-MD (Munos et al., 2024),
EGPO (Zhou et al., 2025), mirror descent and policy-gradient baselines, all as pure,
jit-compiled, vmappable JAX functions with exact (expected-update) twins.
"""

__version__ = "0.1.0"
