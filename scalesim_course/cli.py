"""The `scalesim-course` command: one sub-command per course task."""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module that defines `add_arguments(parser)` and `run(args) -> int`, or
# (module, one-line help) so that the help lists it without importing it. Only the chosen sub-command's module is imported: importing them all (nbgrader
# included) slows every command and the simulator's garbage collection.
COMMANDS = {
    "bench": ("scalesim_course.bench", "Measure the simulator's speed against SimPy"),
    "release": ("scalesim_course.release", "Generate the learner notebooks from solutions/"),
    "grade": ("scalesim_course.grading", "Grade a notebook with its hidden tests"),
}


def _load(module_name: str):
    """The sub-command's module, or None if it is not written yet."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: every sub-command listed, only the chosen one's module imported.

    Args:
        argv: the command line (without the program name); its first word that names a
            sub-command is the chosen one. None: import every sub-command (full help).
    """
    parser = argparse.ArgumentParser(prog="scalesim-course", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if a in COMMANDS), None) if argv is not None else None
    for name, spec in COMMANDS.items():
        module_name, help_text = (spec, None) if isinstance(spec, str) else spec
        if argv is not None and name != chosen:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        module = _load(module_name)
        if module is None:
            continue  # not written yet
        if help_text is None and module.__doc__:
            help_text = module.__doc__.strip().splitlines()[0]
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:   # listed but its module is missing
        print(f"scalesim-course: the {args.command} command is not available", file=sys.stderr)
        return 2
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
