"""The `harness` command line: a thin dispatcher over `harness/commands/*`.

Start-up stays cheap: only argparse and the command modules' parsers are imported here; each command
imports what it needs when it runs. User mistakes (UserError, and OSError on a path such as an --output
that is a file) print one line and exit non-zero, and so does a missing optional extra (harness/extras.py).
SIGTERM stops a command the way Ctrl-C does (exit 143).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, NoReturn

from harness import __version__
from harness.errors import Terminated, UserError

COMMANDS = ("list", "plugins", "run", "score", "compare", "publish", "table", "cache", "agreement", "finetune",
            "convert", "serve")


class OneLineErrors(argparse.ArgumentParser):
    """argparse with its errors on one line (`harness run: error: ...; see harness run --help`), not after the
    whole usage: the commands' usages run to twenty lines. Its subcommands' parsers are of this class too."""

    commands: Any = None  # the subcommands' action (build_parser)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> OneLineErrors:
    parser = OneLineErrors(
        prog="harness",
        description="Reproducible evaluation of medical vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"medvlm-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = sub  # each command's own parser, for its own one-line errors
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"harness.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name == f"harness.commands.{name}":
                continue  # a command whose module is not there yet
            raise
        module.register(sub)
    return parser


def _on_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001 - signal handler signature
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """The `harness` command; `argv` None: the process's own arguments (the program itself, not a caller)."""
    status = _command(argv)
    if argv is None:
        _end_quietly_on_signal(status)
    return status


def _end_quietly_on_signal(status: int) -> None:
    """After the command has returned (its work saved and reported), Ctrl-C or SIGTERM while Python waits for a
    library's worker threads at exit ends the process with the command's own status: no traceback from threading's
    shutdown and no death by SIGINT, which scripts read as a failed command."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def end(signum: int, frame: object) -> None:  # noqa: ARG001 - signal handler signature
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    signal.signal(signal.SIGINT, end)
    signal.signal(signal.SIGTERM, end)


def _command(argv: list[str] | None) -> int:
    from harness.secrets import key_in_arguments

    leaked = key_in_arguments(list(sys.argv[1:] if argv is None else argv))
    if leaked:  # before argparse, whose own errors would echo it
        print(f"error: {leaked[1]} holds the API key of ${leaked[0]}: keys come from the environment only (given as "
              "an argument it would be written to results, caches and logs); remove it", file=sys.stderr)
        return 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named with the command's own help, not the top level's
        command = getattr(args, "command", None)
        owner = parser.commands.choices.get(command, parser) if command else parser
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    if getattr(args, "no_progress", False):  # run, score, finetune: the libraries' own bars too
        from harness.progress import silence_library_progress_bars

        silence_library_progress_bars()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and the like
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a path given on the command line (or HARNESS_CACHE_DIR) cannot be used
        if exc.filename is None:
            raise
        if isinstance(exc, (FileExistsError, NotADirectoryError)):  # mkdir of an output folder over a file
            print(f"error: cannot use {exc.filename}: a file is in the way where a folder is needed (give "
                  "another path)", file=sys.stderr)
        else:
            print(f"error: cannot use {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra is not installed (light core)
        from harness.extras import missing_extra_message

        message = missing_extra_message(exc.name)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{how}: finished work is saved; run the same command again to continue", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
