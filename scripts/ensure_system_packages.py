"""Install the Debian packages the test suite needs, when they are missing.

    python scripts/ensure_system_packages.py [--check]

``./dev test`` runs this before pytest. Rules:
- The list is ``PACKAGES`` below, each with the reason a test needs it.
- A package counts as present when ``dpkg-query`` says "install ok installed";
  present packages are left alone, so a second run does nothing (idempotent).
- Missing packages are installed with ``apt-get install -y --no-install-recommends``
  after one ``apt-get update``: as root directly, otherwise through ``sudo`` (which
  may ask for the password); every command is printed before it runs.
- Not root and no sudo, no dpkg/apt-get (not Debian or Ubuntu), or a failed install:
  exit 1 with one line naming the missing packages and the command that would install them.
- ``--check`` only reports: exit 0 when everything is present, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

PACKAGES = {
    # tests/test_deploy_compose.py: `docker-compose config` validates deploy/docker-compose.yml
    # without a Docker engine (Debian's docker-compose is the Python v1, which needs none for `config`).
    "docker-compose": "validate deploy/docker-compose.yml (docker-compose config)",
    # tests/test_deploy_helm.py: a self-signed certificate for the fake Kubernetes API server.
    "openssl": "make a test TLS certificate (openssl req)",
    # tests/test_chaos_scenarios.py: the clock-jump fault preloads libfaketime into a node (chaos/cluster.py).
    "libfaketime": "step one node's wall clock in the chaos suite (LD_PRELOAD libfaketime.so.1)",
    # tests/test_kafka_clients.py: kcat (librdkafka's command-line client) lists metadata, produces and
    # consumes through the Kafka listener.
    "kcat": "list metadata, produce and consume through the Kafka listener (kcat -L/-P/-C)",
}


def installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def run(*cmd: str) -> int:
    print("+", " ".join(cmd), flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(cmd), env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report what is missing")
    args = parser.parse_args(argv)
    install = "apt-get install -y --no-install-recommends " + " ".join(PACKAGES)
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        print(f"system packages: no dpkg/apt-get here; install these by hand: {', '.join(PACKAGES)}")
        return 1
    missing = [p for p in PACKAGES if not installed(p)]
    if not missing:
        print(f"system packages: present: {', '.join(PACKAGES)}")
        return 0
    for package in missing:
        print(f"system packages: missing {package} (to {PACKAGES[package]})")
    if args.check:
        return 1
    sudo: tuple[str, ...] = ()
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            print(f"system packages: not root and no sudo, cannot install {' '.join(missing)}; run as root: {install}")
            return 1
        sudo = ("sudo",)  # a developer's machine: sudo asks for the password once
    failed = run(*sudo, "apt-get", "update", "-q") or run(
        *sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing
    )
    if failed:
        print(f"system packages: apt-get failed to install {' '.join(missing)}")
        return 1
    still = [p for p in missing if not installed(p)]
    if still:
        print(f"system packages: still missing after apt-get: {' '.join(still)}")
        return 1
    print(f"system packages: installed {' '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
