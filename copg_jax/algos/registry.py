"""Name → :class:`Method` registry used by the training loop, sweeps and CLIs."""

from __future__ import annotations

from copg_jax.algos.base import Domain, Method

_REGISTRY: dict[tuple[str, str], Method] = {}


def register(method: Method) -> Method:
    key = (method.kind, method.name)
    if key in _REGISTRY:
        raise ValueError(f"method: {method.name!r} is already registered for {method.kind}")
    _REGISTRY[key] = method
    return method


def _load_all() -> None:
    # Importing the modules registers their methods.
    import importlib

    for mod in ("bandit_methods", "contextual_methods", "game_methods", "mdp_methods"):
        try:
            importlib.import_module(f"copg_jax.algos.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"copg_jax.algos.{mod}":
                raise


def get_method(name: str, problem: str = "bandit") -> Method:
    """The method called ``name`` for a ``problem`` kind, or a ValueError listing the names."""
    _load_all()
    try:
        return _REGISTRY[(problem, name)]
    except KeyError:
        known = sorted(n for p, n in _REGISTRY if p == problem)
        raise ValueError(
            f"method: unknown method {name!r} for problem {problem!r}; known: {known}"
        ) from None


def list_methods(problem: str | None = None) -> list[str]:
    _load_all()
    return sorted(n for p, n in _REGISTRY if problem in (None, p))


def known_domains() -> dict[str, Domain]:
    """Domains that registered methods declare beyond the standard table."""
    _load_all()
    return {k: d for m in _REGISTRY.values() for k, d in m.domains.items()}
