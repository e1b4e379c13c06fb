"""Start real Prometheus and Alertmanager processes on free loopback ports (the demo and the tests).

The Debian packages ship ``prometheus``, ``promtool``, ``prometheus-alertmanager`` and ``amtool``.
Each process runs in its own temp dir, logs to a file there, and is stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agentic_observability.errors import StackError

DEBIAN_PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, install: bool = False) -> str:
    """Path of a Debian binary; installs its package with apt when allowed and running as root."""
    found = shutil.which(name)
    if found:
        return found
    package = DEBIAN_PACKAGES[name]
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing Debian package {package} (needed for {name}) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, env=env)
        found = shutil.which(name)
        if found:
            return found
    raise StackError(f"'{name}' not found on PATH; install it with: sudo apt-get install -y {package}")


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    workdir: Path
    log_path: Path
    extra: dict[str, object] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise StackError(f"{self.name} not ready at {self.url}{path} after {timeout:g}s:\n{self.log_tail()}")


def _spawn(name: str, argv: list[str], workdir: Path, url: str) -> ManagedProcess:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    return ManagedProcess(name, process, url, workdir, log_path)


def start_prometheus(
    workdir: Path,
    scrape_targets: list[str] | None = None,
    rule_files: list[Path] | None = None,
    alertmanager_url: str | None = None,
    interval: str = "1s",
    storage: Path | None = None,
    port: int | None = None,
    retention: str = "15d",
) -> ManagedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config: dict[str, object] = {"global": {"scrape_interval": interval, "evaluation_interval": interval}}
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    if alertmanager_url:
        target = alertmanager_url.split("://", 1)[-1].rstrip("/")
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    jobs = [{"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
    if scrape_targets:
        jobs.append({"job_name": "shop", "static_configs": [{"targets": scrape_targets}]})
    config["scrape_configs"] = jobs
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [
        find_binary("prometheus", install=True),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={storage or workdir / 'data'}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--rules.alert.resend-delay=1s",  # else the first alert can wait a minute
        "--web.enable-lifecycle",
    ]
    proc = _spawn("prometheus", argv, workdir, f"http://127.0.0.1:{port}")
    proc.wait_ready("/-/ready")
    return proc


def alertmanager_config(webhook_url: str, token_file: Path | None, group_by: list[str]) -> dict[str, object]:
    webhook: dict[str, object] = {"url": webhook_url, "send_resolved": True, "max_alerts": 200}
    if token_file is not None:
        webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
    return {
        "route": {
            "receiver": "agentic-obs",
            "group_by": group_by,
            "group_wait": "1s",
            "group_interval": "2s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "agentic-obs", "webhook_configs": [webhook]}],
    }


def start_alertmanager(
    workdir: Path, webhook_url: str, token: str | None, group_by: list[str] | None = None
) -> ManagedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    token_file = None
    if token is not None:
        token_file = workdir / "webhook-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
    config = alertmanager_config(webhook_url, token_file, group_by or ["alertname", "service"])
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    argv = [
        find_binary("prometheus-alertmanager", install=True),
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip: a single local instance
    ]
    proc = _spawn("alertmanager", argv, workdir, f"http://127.0.0.1:{port}")
    proc.wait_ready("/-/ready")
    return proc
