"""Run `historymw ui` as a user does: the real command in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Server:
    """`historymw --db URL ui --port 0 ...`; `url` is what it printed (with the token, if any)."""

    def __init__(self, db_url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "historymw.cli", "--db", db_url, "ui", "--port", "0",
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=full_env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        self.lines: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"(http://\S+)", line)
            if m:
                self.url = m.group(1)
                self.base = re.sub(r"/\?token=.*$", "", self.url).rstrip("/")
                return
        self.stop()
        raise RuntimeError(f"historymw ui did not start: {''.join(self.lines)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_cli(args: Sequence[str], env: dict[str, str] | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "historymw.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
