"""The `scalesim-course` command: one sub-command per course task."""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module that defines `add_arguments(parser)` and `run(args) -> int`
COMMANDS = {
    "bench": "scalesim_course.bench",
    "release": "scalesim_course.release",
    "grade": "scalesim_course.grading",
    "serve": "scalesim_course.serve",  # imports fastapi, uvicorn and torch only when it runs
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with every available sub-command."""
    parser = argparse.ArgumentParser(prog="scalesim-course", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # not written yet
        doc = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else None
        p = sub.add_parser(name, help=doc, description=doc)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
