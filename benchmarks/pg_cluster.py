"""A throw-away PostgreSQL cluster for the archive's tests and benchmark.

`initdb` into a temporary folder, `pg_ctl start` on a free port of 127.0.0.1 with the socket in
that folder, `stop()` removes it all. PostgreSQL refuses to run as root, so when this process is
root (CI containers) the cluster runs as an unprivileged system user (`nobody`).

Passwords are checked over TCP (scram-sha-256), so a wrong password is a real error in tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "chatledger"
PASSWORD = "archive-test-secret"
# Durability is not what the tests or the benchmark measure: ratios against COPY on the same
# cluster stay fair, and the tests finish sooner.
FAST_SETTINGS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                 "-c max_connections=60 -c shared_buffers=128MB")


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server binaries, or the cluster would not start; the message says why."""


def find_bin_dir() -> Path:
    """The directory of `initdb` and `pg_ctl`: on PATH, else the newest /usr/lib/postgresql."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                            reverse=True):
        if (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise ClusterUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl): install them (Debian: postgresql), "
        "or point CHATLEDGER_TEST_PG at a server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """A running throw-away cluster; `url` reaches its `postgres` database as the superuser."""

    folder: Path
    port: int
    bin_dir: Path
    run_as: str | None

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, user=self.run_as,
                              cwd=self.folder, check=False)

    @classmethod
    def start(cls) -> Cluster:
        bin_dir = find_bin_dir()
        folder = Path(tempfile.mkdtemp(prefix="chatledger-pg-"))
        run_as: str | None = None
        if os.geteuid() == 0:
            run_as = "nobody"
            account = pwd.getpwnam(run_as)
            os.chown(folder, account.pw_uid, account.pw_gid)
        cluster = cls(folder, free_port(), bin_dir, run_as)
        pwfile = folder / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if run_as is not None:
            os.chown(pwfile, pwd.getpwnam(run_as).pw_uid, -1)
        try:
            done = cluster._run(
                str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", SUPERUSER,
                f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--no-sync", "--no-instructions")
            if done.returncode != 0:
                raise ClusterUnavailable(f"initdb failed: {done.stderr.strip()[-300:]}")
            done = cluster._run(
                str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"),
                "-w", "-t", "60", "-o",
                f"-p {cluster.port} -k {folder} -c listen_addresses=127.0.0.1 {FAST_SETTINGS}",
                "start")
            if done.returncode != 0:
                log = (folder / "log").read_text(errors="replace")[-300:] if (folder / "log").exists() else ""
                raise ClusterUnavailable(f"pg_ctl start failed: {done.stderr.strip()[-200:]} {log}")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cluster

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                  "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["Cluster", "ClusterUnavailable", "PASSWORD", "SUPERUSER", "find_bin_dir"]
