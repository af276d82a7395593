"""A `miscause serve` child process on loopback with free ports: started, its ports read from the line it
prints once ready, stopped with a signal. Used by the service benchmark and the fault tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from miscause.errors import MiscauseError

READY = re.compile(r"on grpcs?://(?P<host>[^:\s]+):(?P<port>\d+)(?:, https?://[^:\s]+:(?P<http>\d+))?"
                   r"(?:, metrics http://[^:\s]+:(?P<metrics>\d+))?")


class ServerProcess:
    """`with ServerProcess(repository, ["--max-batch-size", "64"]) as server:` then `server.target`."""

    def __init__(self, repository: Path, options: list[str] | tuple[str, ...] = (), profile: Path | None = None,
                 start_timeout: float = 300.0, env: dict | None = None) -> None:
        self.repository = Path(repository)
        self.options = list(options)
        self.profile = profile
        self.start_timeout = start_timeout
        self.env = env
        self.process: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="miscause-serve-", suffix=".log", delete=False)
        self.port = 0
        self.http_port: int | None = None
        self.metrics_port: int | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_target(self) -> str | None:
        """http://127.0.0.1:PORT of the REST front end (None when it is off)."""
        return f"http://127.0.0.1:{self.http_port}" if self.http_port else None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None

    def command(self) -> list[str]:
        runner = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        return [sys.executable, *runner, "-m", "miscause", "serve", "--model-repository", str(self.repository),
                "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0",
                *self.options]

    def start(self) -> ServerProcess:
        """Start the server and wait until it prints where it listens (models loaded and warmed up)."""
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=self.log, text=True,
                                        env=env)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            match = READY.search(line)
            if match:
                self.port = int(match["port"])
                self.http_port = int(match["http"]) if match["http"] else None
                self.metrics_port = int(match["metrics"]) if match["metrics"] else None
                return self
        self.stop(signal.SIGKILL)
        raise MiscauseError(f"the server did not start (exit {self.process.returncode}): {self.log_tail()}")

    @property
    def log_path(self) -> Path:
        """The server's stderr: its JSON log lines."""
        return Path(self.log.name)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (stderr)."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `signum` and wait for the exit; its exit status (negative: killed by that signal)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
