"""The ``kdcompress`` command line: options -> stage function -> rendered result.

Heavy libraries (torch, transformers, optimum, runtimes) are imported inside the commands, so
``kdcompress --help`` stays instant.

One module per command (or group of commands): each command turns its options into settings,
calls one stage (or the pipeline) and renders the result. ``app.py`` holds the Typer
application and ``main``; ``options.py`` the shared options and their checks.
"""

from __future__ import annotations

# Importing a command module registers its commands, in the order ``--help`` lists them.
# isort: off
from kdcompress.cli import profile, search, distill, export, evaluate, run, cache  # noqa: F401

# isort: on
from kdcompress.cli.app import app, main

__all__ = ["app", "main"]
