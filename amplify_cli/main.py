"""The ``amplify`` command: one entry point, one module per subcommand.

This is the top layer: it assembles every part (the library's commands, the service, the exporters,
the trainers, the clients), so it lives above them and none of them imports it (docs/architecture.md).
Each part owns its subcommand modules, which define ``add_arguments(parser)`` and ``run(args) -> int``;
a module is imported only when its command runs, so ``amplify serve`` does not pay for the trainers'
imports. ``python -m amplify ...`` (``amplify/__main__.py``) and ``python -m amplify_cli ...`` run it too.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("amplify.commands.convert", "convert original AMPLIFY checkpoints into the project's format"),
    "inspect": ("amplify.commands.inspect", "summarize any checkpoint: config, parameters per part, size"),
    "init": ("amplify.commands.init", "write a randomly initialized bundle of a preset configuration"),
    "tokenize": ("clients.tokenize", "stream track files to a server's /encode and write the indices to HDF5"),
    "serve": ("service.cli", "run the HTTP inference service (torch, torchscript or onnx back end)"),
    "export": ("exporters.cli", "export a bundle or tokenizer to ONNX, TorchScript or a Triton model repository"),
    "train": ("training.train_command", "train a motion tokenizer, forward or inverse dynamics model (key=value config)"),
    "bundle": ("training.bundle", "join trained MT, FD, ID and vision weights into one servable bundle"),
    "build-default": ("training.default_bundle", "generate built-in-world data, train and bundle the default model"),
    "eval-world": ("training.eval_world", "closed-loop success rate of a bundle in the built-in world"),
}


def _usage() -> str:
    lines = ["usage: amplify <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'amplify <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``amplify <command> ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from amplify import __version__
        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"amplify: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from amplify.threads import apply_threads, configure_openmp

    configure_openmp()  # before the command's module loads torch (amplify/threads.py)
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"amplify {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    apply_threads()  # AMPLIFY_THREADS, OMP_NUM_THREADS, or the cores not busy (amplify/threads.py)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
