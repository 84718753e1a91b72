"""The ``halocut`` command line: argument parsing, thin ``drive_*`` functions, one error contract.

A :class:`~compiler.errors.HalocutError` (or a wrong argument) prints one line
``halocut: error: ...`` on stderr and exits with code 2; no traceback.

>>> main(["inspect", "vgg17"])  # prints the one-line error on stderr
2
"""

from __future__ import annotations

import argparse
import json
import sys

from compiler.errors import EXIT_USER_ERROR, HalocutError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise HalocutError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="halocut", description="Compile a CNN for a topology of heterogeneous machines.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    inspect = commands.add_parser("inspect", help="table of a model's layers: kind, shape, FLOPs, params, bytes")
    inspect.add_argument("model", help="torchvision or zoo name (vgg16, yolov2, ...) or path/to/file.py:factory")
    inspect.add_argument("--input-shape", help="input shape such as 1,3,224,224 (default: the model's own)")
    inspect.add_argument("--weights", help="local state_dict file (default: random initialisation)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    inspect.set_defaults(drive=drive_inspect)
    return parser


def drive_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from compiler.frontend import parse_shape
    from compiler.inspection import inspect_model

    shape = parse_shape(args.input_shape) if args.input_shape else None
    report = inspect_model(args.model, shape, args.weights)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        Console(width=None if sys.stdout.isatty() else 160).print(report.table())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``halocut`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USER_ERROR
        return args.drive(args)
    except HalocutError as error:
        print(f"halocut: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("halocut: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
