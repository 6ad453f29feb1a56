"""``kdcompress cache verify | clean``: check the offline asset cache by hash, rebuild or remove
entries."""

from __future__ import annotations

from typing import Annotated

import typer

from kdcompress.cli.app import app
from kdcompress.console import info

cache_app = typer.Typer(
    help="Check the offline asset cache (teachers, corpora) by hash, rebuild or remove entries.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")

NamesArgument = Annotated[
    list[str] | None,
    typer.Argument(help="Entries (me5-small, minilm-l6, mpnet-base, bible, imdb, zh-inews); all."),
]


@cache_app.command()
def verify(
    names: NamesArgument = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Rebuild damaged entries from the verified downloads.")
    ] = False,
) -> None:
    """Re-hash every cached file against the SHA-256 recorded when its entry was built.

    Exits 1 if an entry is damaged (and not fixed).

    Example: [bold]kdcompress cache verify --fix[/]
    """
    from kdcompress import cache
    from kdcompress.errors import ArtifactError
    from kdcompress.render import cache_table

    checks = [cache.verify(name) for name in cache.entry_names(names)]
    if fix:
        for check in checks:
            if check.state == cache.DAMAGED:
                info(f"rebuilding {check.name} ...")
                cache.rebuild(check.name)
        checks = [cache.verify(check.name) for check in checks]
    cache_table(checks)
    damaged = [c.name for c in checks if c.state == cache.DAMAGED]
    if damaged:
        raise ArtifactError(
            f"damaged cache entries: {', '.join(damaged)}; `kdcompress cache verify --fix` "
            "rebuilds them"
        )


@cache_app.command()
def clean(
    names: NamesArgument = None,
    all_entries: Annotated[
        bool, typer.Option("--all", help="Every entry (they are rebuilt on next use).")
    ] = False,
) -> None:
    """Remove cache entries; each is rebuilt from the downloads on next use.

    Example: [bold]kdcompress cache clean bible[/]
    """
    from kdcompress import cache
    from kdcompress.errors import UsageError

    if not names and not all_entries:
        raise UsageError("name the entries to remove, or pass --all")
    for name in cache.entry_names(names):
        if cache.remove(name):
            info(f"removed {name}")
