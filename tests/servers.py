"""Starting real ``pinnace serve`` processes on free loopback ports, for e2e tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

MANAGEMENT_TOKEN = "test-management-token"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A running ``pinnace serve``; every listener on its own free port."""

    def __init__(self, repository: Path, *, grpc: bool = True, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.repository = repository
        self.http_port = free_port()
        self.management_port = free_port()
        self.grpc_port = free_port() if grpc else 0
        self.grpc_management_port = free_port() if grpc else 0
        self.token = MANAGEMENT_TOKEN
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.management_url = f"http://127.0.0.1:{self.management_port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.grpc_management_url = f"127.0.0.1:{self.grpc_management_port}"
        self.log_path = repository.parent / f"server-{self.http_port}.log"
        args = [
            sys.executable, "-m", "pinnace", "serve", str(repository),
            "--http-port", str(self.http_port),
            "--management-port", str(self.management_port),
            "--grpc-port", str(self.grpc_port),
            "--grpc-management-port", str(self.grpc_management_port),
            "--management-token", self.token,
            *extra,
        ]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def wait_ready(self, timeout: float = 60.0, *, path: str = "/v2/health/ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def wait_live(self, timeout: float = 30.0) -> None:
        self.wait_ready(timeout, path="/v2/health/live")

    def management_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextmanager
def running_server(repository: Path, **kwargs: object) -> Iterator[ServerProcess]:
    """Start a server, wait until ready, and always stop it."""
    server = ServerProcess(repository, **kwargs)  # type: ignore[arg-type]
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
