"""``pinnace gateway CONFIG`` and ``pinnace keygen``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("gateway")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address.")
@click.option("--port", default=8000, show_default=True, help="Listen port.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--log-level", default="info", show_default=True, help="Level, then optional module=level pairs.")
def gateway_command(config: Path, host: str, port: int, log_format: str, log_level: str) -> None:
    """Run the API gateway described by CONFIG (reloaded on SIGHUP and when the file changes)."""
    from pinnace.gateway.app import run_gateway
    from pinnace.gateway.config import GatewayConfigError
    from pinnace.observability.logging import configure_logging

    configure_logging(log_level, log_format)
    try:
        run_gateway(config, host, port)
    except GatewayConfigError as exc:
        raise click.ClickException(exc.message) from None


@click.command("keygen")
def keygen_command() -> None:
    """Print a new gateway API key and the sha256 to put in the gateway config."""
    from pinnace.gateway.auth import new_key

    key, digest = new_key()
    click.echo(f"key:    {key}\nsha256: {digest}")
