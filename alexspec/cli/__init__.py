"""The `alexspec` command line.

Exit codes: 0 success, 2 bad input (a spec problem, a bad argument, a missing file, an
unusable checkpoint: SpecError and BadInput; a network or batch too big for the memory),
3 training diverged, 1 an internal error (any other exception: a bug, printed with its
traceback and a request to report it), 130 Ctrl-C, 143 SIGTERM (both unwind, so what a command
was writing is removed, not left half-written; training saves and exits 0).
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager, nullcontext, redirect_stderr
import errno
import io
from pathlib import Path
import signal
import sys
import textwrap
import threading
import traceback

from alexspec import __version__, settings
from alexspec.cli import bench_command, interop_commands, spec_commands, train_commands, unknown_arguments
from alexspec.cli.common import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERNAL, print_problems, resolve_spec, write_out
from alexspec.errors import BadInput, SpecError, TrainingError, first_line
from alexspec.memory_check import is_out_of_memory

__all__ = ["main", "build_parser", "resolve_spec", "write_out"]

OUT_OF_MEMORY_HINT = ("a smaller --batch or --precision bf16 needs less; `alexspec report SPEC --batch N --dtype bf16` "
                      "sizes a network's activations, gradients and optimizer state for a batch; a checkpoint "
                      "already written is kept whole")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexspec", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Define a network (AlexNet and its cousins) in one YAML file; alexspec checks it, "
                    "infers every shape, parameter count, MAC and byte, compiles it to a PyTorch module with "
                    "Triton kernels, and trains it.",
        epilog=textwrap.dedent("""
            start here:
              alexspec train                     train the bundled digits net on real images (CPU, seconds)
              alexspec report alexnet            the paper's AlexNet, layer by layer
              alexspec validate my-net.yaml      find every problem in a spec at once
              alexspec compile alexnet -o build/ a readable PyTorch module, its IR and a diagram
              alexspec schema > alexspec.schema.json    for editor completion

            Run `alexspec COMMAND --help` for each command's options and examples.
            Specs are described in docs/spec-language.md.
        """))
    parser.add_argument("--version", action="version", version=f"alexspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, func, examples: dict) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=textwrap.dedent(examples[name]),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    for group in (spec_commands, train_commands, bench_command, interop_commands):
        group.add_parsers(command)
    return parser


def _command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command stands, so that it unwinds as for Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextmanager
def _sigterm_unwinds():
    """Within: SIGTERM (`kill`, a job scheduler's stop) raises Terminated instead of ending the process
    where it stands, so what a command was writing is cleaned up (prepare-data's shard temporaries,
    each atomic write's temporary file) as for Ctrl-C. Training installs its own handler: it saves."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _error_line(rank: int):
    """How a process says what stopped it: as is, or under torchrun, from a process other than
    rank 0, with its rank in front (the others' lines are often the same as rank 0's)."""
    prefix = f"rank {rank}: " if rank else ""
    return lambda text: print(prefix + text, file=sys.stderr)


def unusable_path(exc: OSError) -> str:
    """What an OSError says of its path, with what to do where the cause is a usual one."""
    path = Path(exc.filename) if exc.filename else None
    if path is None:
        return f"{exc.strerror or exc}"
    if exc.errno == errno.ENOTDIR:
        file = next((part for part in reversed(path.parents) if part.is_file()), path.parent)
        return f"{path}: {file} is a file, not a folder; give a path in a folder"
    if exc.errno == errno.EISDIR:
        return f"{path} is a folder; give a file (a path in it, {path / 'NAME'})"
    if exc.errno == errno.ENOSPC:
        return f"cannot write {path}: the disk is full; free some space or write to another disk"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: {exc.strerror} (check its and its folder's permissions, or give another path)"
    return f"{path}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    rank = settings.current().rank
    with redirect_stderr(io.StringIO()) if rank else nullcontext():  # usage errors: rank 0 prints the same
        args, extras = parser.parse_known_args(argv)
        if not getattr(args, "func", None):
            if extras:
                parser.error(f"unrecognized arguments: {' '.join(extras)}")
            parser.print_help()
            return 0
        if extras:  # the command's own usage, and the option meant
            command_parser = _command_parsers(parser)[args.command]
            command_parser.error(unknown_arguments.explain(extras, argv, command_parser, args.command))
    tell = _error_line(rank)
    try:
        with _sigterm_unwinds():
            return args.func(args)
    except SpecError as error:
        if not rank:  # every process reads the same spec: rank 0 lists its problems
            print_problems(error)
        return EXIT_BAD_INPUT
    except BadInput as error:  # arguments, checkpoints, data, devices: each carries its own message (a line each)
        for line in str(error).splitlines() or [""]:
            tell(f"alexspec {args.command}: {line}")
        return EXIT_BAD_INPUT
    except TrainingError as error:
        tell(f"alexspec {args.command}: {error}")
        return EXIT_DIVERGED
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a path that cannot be written (or read): which, and what to do
        tell(f"alexspec {args.command}: {unusable_path(exc)}")
        return EXIT_BAD_INPUT
    except Terminated:
        tell("stopped by SIGTERM")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        tell("interrupted")
        return 130
    except Exception as exc:  # anything else is a bug in alexspec, not in the input: show where
        if is_out_of_memory(exc):
            tell(f"alexspec {args.command}: out of memory ({first_line(exc, 160)}); {OUT_OF_MEMORY_HINT}")
            return EXIT_BAD_INPUT
        traceback.print_exc()
        tell(f"alexspec {args.command}: internal error (a bug in alexspec {__version__}, not in your input); "
            "please report it with the traceback above")
        return EXIT_INTERNAL
