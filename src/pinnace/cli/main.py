"""``pinnace``: serve, init, hash and the other commands. Every option also reads ``PINNACE_*``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from pinnace import __version__
from pinnace.cli.gateway import gateway_command, keygen_command
from pinnace.cli.init import hash_command, init_command
from pinnace.errors import PinnaceError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "PINNACE"})
@click.version_option(__version__, prog_name="pinnace")
def main() -> None:
    """Serve trained models over the Open Inference Protocol (REST and gRPC)."""


@main.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Data listener address.")
@click.option("--http-port", default=8000, show_default=True, help="REST port.")
@click.option("--grpc-port", default=8001, show_default=True, help="gRPC port; 0 turns gRPC off.")
@click.option("--management-host", default="127.0.0.1", show_default=True, help="Management listener address.")
@click.option("--management-port", default=8002, show_default=True, help="Management port; 0 turns it off.")
@click.option("--grpc-management-port", default=8003, show_default=True,
              help="gRPC repository (management) port on the management host; 0 turns it off.")
@click.option("--management-token", default=None, help="Bearer token for the management API (random if unset).")
@click.option("--max-body-bytes", default=64 * 1024 * 1024, show_default=True, help="Largest request body.")
@click.option("--grpc-max-message-bytes", default=64 * 1024 * 1024, show_default=True,
              help="Largest gRPC message received or sent.")
@click.option("--workers", default=1, show_default=True, help="Server processes sharing the port.")
@click.option("--graceful-timeout", default=30.0, show_default=True, help="Seconds in-flight requests get on SIGTERM.")
@click.option("--shutdown-delay", default=0.0, show_default=True,
              help="Seconds to keep serving after SIGTERM, readiness failing, before the listeners close.")
@click.option("--strict-readiness/--no-strict-readiness", default=True, show_default=True,
              help="Ready only when every model is ready.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--log-level", default="info", show_default=True, help="Level, then optional module=level pairs.")
@click.option("--tracing", type=click.Choice(["off", "console", "otlp"]), default="off", show_default=True,
              help="Export OpenTelemetry spans.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One log line per request (logger pinnace.access).")
@click.option("--payload-log", default=None,
              help="Directory or http(s):// URL for the payloads of models whose manifest sets payload_log.")
@click.option("--payload-log-max-bytes", default=100 * 1024 * 1024, show_default=True,
              help="Rotate a payload log file at this size.")
@click.option("--payload-log-backups", default=5, show_default=True, help="Rotated payload log files kept per model.")
@click.option("--sagemaker", is_flag=True, help="Also answer GET /ping and POST /invocations.")
def serve(
    repository: Path,
    host: str,
    http_port: int,
    grpc_port: int,
    management_host: str,
    management_port: int,
    grpc_management_port: int,
    management_token: str | None,
    max_body_bytes: int,
    grpc_max_message_bytes: int,
    workers: int,
    graceful_timeout: float,
    shutdown_delay: float,
    strict_readiness: bool,
    log_format: str,
    log_level: str,
    tracing: str,
    access_log: bool,
    payload_log: str | None,
    payload_log_max_bytes: int,
    payload_log_backups: int,
    sagemaker: bool,
) -> None:
    """Serve every model in REPOSITORY."""
    from pinnace.observability.logging import configure_logging
    from pinnace.server.app import serve as run
    from pinnace.settings import ServerSettings

    settings = ServerSettings(
        repository=repository,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port or None,
        management_host=management_host,
        management_port=management_port or None,
        grpc_management_port=grpc_management_port or None,
        management_token=management_token,
        max_body_bytes=max_body_bytes,
        grpc_max_message_bytes=grpc_max_message_bytes,
        workers=workers,
        graceful_timeout_s=graceful_timeout,
        shutdown_delay_s=shutdown_delay,
        strict_readiness=strict_readiness,
        log_format=log_format,
        log_level=log_level,
        tracing=tracing,
        access_log=access_log,
        payload_log=payload_log,
        payload_log_max_bytes=payload_log_max_bytes,
        payload_log_backups=payload_log_backups,
        sagemaker=sagemaker,
    )
    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--log-level") from None
    if workers > 1:
        from pinnace.server.workers import run_workers

        sys.exit(run_workers(settings))
    _run_async(run(settings))


main.add_command(init_command)
main.add_command(hash_command)
main.add_command(gateway_command)
main.add_command(keygen_command)


def _run_async(coro: object) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        try:
            runner.run(coro)  # type: ignore[arg-type]
        except PinnaceError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
