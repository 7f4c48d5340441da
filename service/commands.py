"""`metacluster serve` and `metacluster keys ...`: the service's commands in the
`metacluster` CLI, registered as entry points (group ``metacluster.commands``) so the
library lists and loads them without importing the service."""

from __future__ import annotations

import json
from types import ModuleType

import click

from metacluster.errors import ConfigError


def _embedded() -> ModuleType:
    """`service.embedded`, or a one-line error when the service's packages are missing."""
    try:
        import service.embedded as embedded
    except ImportError as exc:
        raise ConfigError(
            f"the service is not installed ({exc.name or exc}); "
            "install it with: pip install 'metacluster[api]'"
        ) from None
    return embedded


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def serve(host: str, port: int, as_json: bool) -> None:
    """Run the HTTP API with an embedded worker (no external services needed)."""
    _embedded().serve(host, port)
    if as_json:
        click.echo(json.dumps({"stopped": True, "host": host, "port": port}))


@click.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--name", required=True, help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def keys_create(name: str, as_json: bool) -> None:
    """Create an API key; the key is shown only once."""
    embedded = _embedded()
    where, exists = embedded.describe_database()
    click.echo(
        f"{'using' if exists else 'creating a new'} key database {where} "
        "(set METACLUSTER_DATA_DIR to choose another)",
        err=True,
    )
    result = embedded.create_key(name)
    out = {k: result[k] for k in ("id", "name", "key") if k in result}
    if as_json:
        click.echo(json.dumps(out))
    else:
        for key, value in out.items():
            click.echo(f"{key}: {value}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def keys_list(as_json: bool) -> None:
    """List API keys (id, name, prefix, created, revoked); secrets are never stored."""
    rows = _embedded().list_keys()
    if as_json:
        click.echo(json.dumps({"keys": rows}))
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        click.echo(f"{row['id']}  {row['prefix']}...  {row['name']}  {row['created_at']}  {state}")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke the API key KEY_ID (its id from `keys list`, or a unique prefix of it)."""
    row = _embedded().revoke_key(key_id)
    if as_json:
        click.echo(json.dumps(row))
    else:
        click.echo(f"revoked {row['id']} ({row['name']})")


__all__ = ["keys", "serve"]
