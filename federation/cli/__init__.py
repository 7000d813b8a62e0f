"""``fedctl``: the composition root of the federation controller.

Errors reach the user as one line on stderr and a non-zero exit, never a
traceback.  Every subcommand is wired here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from agents.client import RegistryError
from federation.cli import admin, agent, ca, common, dashboard, failover, policy, registry, sim, vm
from federation.model import ValidationError
from federation.shared import logs
from federation.shared.loop import UnknownLoop

EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"fedctl: {message} (see fedctl --help)\n")
        raise SystemExit(EXIT_USAGE)


def _version() -> str:
    try:
        return version("federation")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fedctl",
        description="One control plane for services across Kubernetes clusters and VMs.",
    )
    parser.add_argument("--version", action="version", version=f"fedctl {_version()}")
    registry.add_client_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    registry.add_commands(commands)
    vm.add_command(agent.add_commands(commands))
    ca.add_commands(commands)
    policy.add_commands(commands)
    admin.add_commands(commands)
    dashboard.add_commands(commands)
    failover.add_command(commands)
    sim.add_commands(commands)
    completion = commands.add_parser("completion", help="shell completion: bash or zsh")
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(handler=lambda args: _completion(parser, args.shell))
    return parser


def _completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """Print the completion script (``source <(fedctl completion bash)``)."""
    import shtab

    sys.stdout.write(shtab.complete(parser, shell=shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    # Long-running commands (those with --log-format) log; one-shot
    # commands speak only through their output and their one-line error.
    if hasattr(args, "log_format"):
        logs.configure(args.log_level, args.log_format)
    else:
        logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr)
    try:
        handler = args.handler
        return int(handler(args))
    except (
        common.CommandError,
        common.UsageError,
        ValidationError,
        RegistryError,
        UnknownLoop,
        OSError,
    ) as err:
        sys.stderr.write(f"fedctl: {err}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("fedctl: interrupted\n")
        return 130
