"""A real RedDB-compatible server (`python -m engine.server`) as a subprocess, for integration tests.

`RedDBServerProcess` owns one server: a loopback port, a data directory and
log files that survive restarts, so a test can stop it (SIGTERM), crash it
(SIGKILL), and start it again on the same port and directory. Fixtures:

- `reddb_server`: a started server, auth off, fresh directory; stopped at teardown.
- `reddb_server_factory(token=..., durable=..., extra_args=..., start=...)`: make more
  servers (e.g. with a token); every one is stopped at teardown, whatever happened.

The server's stdout and stderr go to files (never a pipe that could fill up);
`output()` returns them so tests can assert on what was, or was not, logged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the server may still lose a race for it: see start())."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedDBServerProcess:
    """One `python -m engine.server` subprocess on 127.0.0.1; restartable on the same port and dir."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        token: str | None = None,
        durable: bool = True,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_dir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.token = token
        self.durable = durable
        self.host = host
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(host)
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        logs = Path(log_dir) if log_dir is not None else self.data_dir.parent
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path = logs / f"{self.data_dir.name}.server.out"
        self.stderr_path = logs / f"{self.data_dir.name}.server.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def __repr__(self) -> str:  # the token stays out of reprs and pytest failure output
        auth = "on" if self.token else "off"
        return f"RedDBServerProcess(url={self.url!r}, data_dir={str(self.data_dir)!r}, auth={auth})"

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234 (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header the server wants ({} when auth is off)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx.Client on the base URL with the auth header (keyword arguments override)."""
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("headers", self.headers)
        kwargs.setdefault("timeout", 10.0)
        return httpx.Client(**kwargs)

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr, over all its runs."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # ------------------------------------------------------------------ lifecycle
    def _command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "engine.server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--path",
            str(self.data_dir),
        ]
        if not self.durable:
            cmd.append("--no-durable")
        return cmd + self.extra_args

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("REDDB_ADMIN_TOKEN", None)
        if self.token:
            env["REDDB_ADMIN_TOKEN"] = self.token
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 20.0) -> RedDBServerProcess:
        """Start the server and wait until /health answers 200. Raises RuntimeError with its output."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        # a port picked by free_port() can be taken by someone else before we bind it; on a
        # restart the old socket may linger for a moment: retry either way, a few times
        for attempt in range(5):
            if self._launch_and_wait(timeout):
                self.starts += 1
                return self
            if "address already in use" not in self.output().lower():
                break
            if not self._fixed_port and self.starts == 0:
                self.port = free_port(self.host)
            time.sleep(0.1 * (attempt + 1))
        raise RuntimeError(f"{self!r} did not start; its output:\n{self.output()}")

    def _launch_and_wait(self, timeout: float) -> bool:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self._env(),
                cwd=str(REPO_ROOT),
                start_new_session=True,  # a Ctrl-C of pytest does not reach it; we stop it ourselves
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as probe:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if probe.get(self.url + "/health").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        self.kill()
        return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (graceful: in-flight requests finish, the store closes), SIGKILL after `timeout`.

        Returns the exit code (0 for a clean shutdown), or None if it was not running.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL, like a crash or `kill -9`: nothing gets to clean up. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return proc.returncode

    def restart(self, timeout: float = 20.0) -> RedDBServerProcess:
        """Stop gracefully, then start again on the same port and data directory."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> RedDBServerProcess:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def reddb_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedDBServerProcess]]:
    """Make servers: factory(token=, durable=, start=, extra_args=, data_dir=, port=, env=)."""
    servers: list[RedDBServerProcess] = []

    def make(
        *,
        token: str | None = None,
        durable: bool = True,
        start: bool = True,
        extra_args: Sequence[str] = (),
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> RedDBServerProcess:
        base = tmp_path_factory.mktemp("reddb")
        server = RedDBServerProcess(
            data_dir if data_dir is not None else base / "data",
            token=token,
            durable=durable,
            port=port,
            log_dir=base,
            extra_args=extra_args,
            env=env,
        )
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop(timeout=5.0)


@pytest.fixture
def reddb_server(reddb_server_factory: Callable[..., RedDBServerProcess]) -> RedDBServerProcess:
    """A running server with auth off and a fresh data directory."""
    return reddb_server_factory()
