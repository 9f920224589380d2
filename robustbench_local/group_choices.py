"""Config-group options on the command line checked before Hydra starts: an unknown one is one line, exit 2.

Hydra's own message for ``defense=nosuch`` is a multi-line report with exit status 1; bad input in this suite
is one line naming the problem and the valid choices, with exit status 2, like every other user error.
"""
from __future__ import annotations

from pathlib import Path


def unknown_choice(argv: list[str], conf_dir: Path) -> str | None:
    """The error line for the first ``group=option`` in ``argv`` whose option is not in ``conf_dir/group``."""
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        group, _, value = arg.lstrip("+~").partition("=")
        folder = conf_dir / group
        if "." in group or not folder.is_dir() or "(" in value or "${" in value:
            continue   # a key, not a group; Hydra's own groups (hydra/launcher); sweep functions
        choices = sorted(p.stem for p in folder.glob("*.yaml"))
        for option in value.split(","):   # a multirun sweep lists several
            if option and option not in choices:
                return (f"unknown {group} {option!r}. Available options in '{group}': {', '.join(choices)}")
    return None
