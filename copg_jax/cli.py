"""``copg-jax <experiment> [flags]``: every experiment CLI from any folder.

Installed as a console script by ``pip install`` (``setup.cfg``); the same programs as
``python -m experiments.<module>`` from the repository root. Results go where ``--out``
says, relative to the folder the command runs in.
"""

from __future__ import annotations

import runpy
import sys

#: command -> experiment module
COMMANDS = {
    "bandit": "experiments.copg_bandit",
    "contextual": "experiments.contextual_bandit",
    "toy-lm": "experiments.toy_lm",
    "game": "experiments.preference_game",
    "mdp": "experiments.tabular_mdp",
    "diagnostics": "experiments.estimator_diagnostics",
}


def usage() -> str:
    lines = ["usage: copg-jax <experiment> [flags]   (copg-jax <experiment> --help for its "
             "flags and methods)", "", "experiments:"]
    for cmd, module in COMMANDS.items():
        lines.append(f"  {cmd:12s} python -m {module}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown experiment {argv[0]!r}; expected one of {list(COMMANDS)}",
              file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    sys.argv = [f"copg-jax {argv[0]}", *argv[1:]]
    runpy.run_module(COMMANDS[argv[0]], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
