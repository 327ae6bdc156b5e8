"""`maas keys …`: the bearer keys of a deployed stage, from the command line (logic in :mod:`maas_dev.keys`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from maas_dev.keys import KeyOperationError, KeyStore, key_store

console = Console()
keys_app = typer.Typer(
    help="Bearer keys of a deployed stage (its key table): create, list, revoke, rotate. A key is shown once.",
    no_args_is_help=True,
)
StageOption = Annotated[str, typer.Option(help="the stage the keys are for")]
RegionOption = Annotated[str | None, typer.Option(help="AWS region (default: the profile's)")]
EndpointOption = Annotated[str | None, typer.Option(help="AWS endpoint (e.g. a local moto server)")]


def _key_store(stage: str, region: str | None, endpoint_url: str | None) -> KeyStore:
    return key_store(stage, region=region, endpoint_url=endpoint_url)


def _key_failure(exc: Exception) -> typer.Exit:
    console.print(str(exc), style="red", markup=False)
    return typer.Exit(1)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="a tenant of the stage ([tenants] in its stage file)")],
    stage: StageOption = "dev",
    description: Annotated[str, typer.Option(help="a note kept with the key (who, what for)")] = "",
    region: RegionOption = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Create a key for a tenant and print it once (only its hash is stored: it cannot be shown again)."""
    try:
        new = _key_store(stage, region, endpoint_url).create(tenant, description=description)
    except KeyOperationError as exc:
        raise _key_failure(exc) from None
    console.print(f"key {new.key_id} for tenant {tenant} (stage {stage}); store it now, it is not shown again:")
    typer.echo(new.key)  # plain, alone on its line: scripts capture it


@keys_app.command("list")
def keys_list(stage: StageOption = "dev", region: RegionOption = None, endpoint_url: EndpointOption = None) -> None:
    """Every key of the stage: id, tenant, state, created (never a secret)."""
    import datetime

    table = Table("key id", "tenant", "state", "created (UTC)", "description", title=f"keys of stage {stage}")
    for info in _key_store(stage, region, endpoint_url).list():
        created = datetime.datetime.fromtimestamp(info.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(info.key_id, info.tenant, info.state(), created, info.description)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (maas_<id>_...; see `maas keys list`)")],
    stage: StageOption = "dev",
    region: RegionOption = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Revoke a key: refused once the authorizer's cache of it expires (the stage's authorizerCacheTtlS)."""
    try:
        info = _key_store(stage, region, endpoint_url).revoke(key_id)
    except KeyOperationError as exc:
        raise _key_failure(exc) from None
    console.print(f"revoked key {info.key_id} of tenant {info.tenant}")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="the key to replace")],
    stage: StageOption = "dev",
    grace_hours: Annotated[float, typer.Option(help="how long the old key keeps working (0: revoke it now)")] = 24.0,
    region: RegionOption = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Replace a key: print the new one once; the old one works for the grace period, then is refused."""
    try:
        new, old = _key_store(stage, region, endpoint_url).rotate(key_id, grace_s=grace_hours * 3600)
    except KeyOperationError as exc:
        raise _key_failure(exc) from None
    console.print(f"key {old.key_id} is {old.state()}; new key {new.key_id} for tenant {old.tenant}:")
    typer.echo(new.key)
