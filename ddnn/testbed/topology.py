"""Three network namespaces (load generator, edge, cloud) joined by two veth links, and their cleanup.

::

    [loadgen] to-edge 10.203.0.1/30 ==access== 10.203.0.2/30 to-lg [edge] to-cloud 10.203.0.5/30
                                                         ==backhaul (shaped)== 10.203.0.6/30 to-edge [cloud]

Nothing is bridged to the host and nothing is routed between the two links: the load generator
only talks to the edge and the edge to the cloud. Each veth end is created directly inside its
namespace, so no testbed interface ever exists in the host's namespace. :class:`Testbed` deletes
the namespaces (and with them the links and their qdiscs) on every way out: normal exit,
exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

NS_PREFIX = "ddnn-tb-"
ROLES = ("loadgen", "edge", "cloud")


class TestbedError(RuntimeError):
    """A command the testbed needs failed, or the machine cannot host the testbed."""


def sh(cmd: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a command; on failure raise TestbedError naming it and quoting its stderr."""
    log.debug("$ %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise TestbedError(f"{cmd[0]}: command not found (apt-get install -y iproute2)") from None
    except subprocess.TimeoutExpired:
        raise TestbedError(f"{' '.join(cmd)}: no answer within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def pipes(proc: subprocess.Popen) -> tuple[IO[str], IO[str]]:
    """A helper process's stdin and stdout (its caller opened both as text pipes)."""
    if proc.stdin is None or proc.stdout is None:
        raise TestbedError(f"{proc.args!r} was started without its stdin/stdout pipes")
    return proc.stdin, proc.stdout


def preflight() -> None:
    """Fail with a clear message unless we are root and have ``ip`` and ``tc``."""
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (network namespaces, veth, tc); run it with sudo")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise TestbedError(f"missing {' and '.join(missing)}: apt-get install -y iproute2")


@dataclass(frozen=True)
class Endpoint:
    """One end of a veth link: its namespace, interface name and address."""

    ns: str
    dev: str
    addr: str
    prefix: int = 30

    @property
    def cidr(self) -> str:
        return f"{self.addr}/{self.prefix}"


@dataclass(frozen=True)
class Link:
    name: str
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Topology:
    """Names and addresses of one testbed instance (``run_id`` keeps parallel testbeds apart)."""

    run_id: str
    namespaces: dict[str, str]
    access: Link  # loadgen (a) <-> edge (b)
    backhaul: Link  # edge (a) <-> cloud (b): the shaped link

    @classmethod
    def plan(cls, run_id: str | None = None, subnet: str = "10.203.0.0/29") -> Topology:
        """Two /30s out of ``subnet`` (a private /29 used only inside the namespaces)."""
        run_id = run_id or secrets.token_hex(3)
        net = ipaddress.ip_network(subnet)
        if net.prefixlen > 29 or not net.is_private:
            raise ValueError(f"subnet {subnet}: need a private /29 or larger for two /30 links")
        h = [str(net.network_address + i) for i in range(8)]
        ns = {role: f"{NS_PREFIX}{run_id}-{role}" for role in ROLES}
        access = Link("access", Endpoint(ns["loadgen"], "to-edge", h[1]), Endpoint(ns["edge"], "to-lg", h[2]))
        backhaul = Link("backhaul", Endpoint(ns["edge"], "to-cloud", h[5]), Endpoint(ns["cloud"], "to-edge", h[6]))
        return cls(run_id, ns, access, backhaul)

    def up_commands(self) -> list[list[str]]:
        """The ``ip`` commands that build the testbed, in order."""
        cmds = [["ip", "netns", "add", ns] for ns in self.namespaces.values()]
        cmds += [["ip", "-n", ns, "link", "set", "lo", "up"] for ns in self.namespaces.values()]
        for link in (self.access, self.backhaul):
            a, b = link.a, link.b
            cmds.append(["ip", "link", "add", a.dev, "netns", a.ns, "type", "veth", "peer", "name", b.dev,
                         "netns", b.ns])
            for end in (a, b):
                cmds.append(["ip", "-n", end.ns, "addr", "add", end.cidr, "dev", end.dev])
                cmds.append(["ip", "-n", end.ns, "link", "set", end.dev, "up"])
        return cmds

    def down_commands(self) -> list[list[str]]:
        """Deleting the namespaces deletes their veths (and the peers) and every qdisc on them."""
        return [["ip", "netns", "del", ns] for ns in self.namespaces.values()]

    def exec_prefix(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[role]]

    def describe(self) -> dict:
        return {"namespaces": dict(self.namespaces),
                "links": {link.name: {"a": vars(link.a), "b": vars(link.b)} for link in (self.access, self.backhaul)}}


def existing_namespaces() -> list[str]:
    out = sh(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    out = sh(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


class Testbed:
    """Context manager: build the topology on enter, tear everything down on every exit."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, topology: Topology):
        self.topo = topology
        self._saved_handlers: dict[int, Any] = {}  # signal -> the handler signal.signal returned
        self.cleaned = False

    def __enter__(self) -> Testbed:
        preflight()
        clash = set(self.topo.namespaces.values()) & set(existing_namespaces())
        if clash:
            raise TestbedError(f"namespaces {sorted(clash)} already exist (another testbed with run id "
                               f"{self.topo.run_id}?)")
        self._trap_signals()
        try:
            for cmd in self.topo.up_commands():
                sh(cmd)
        except BaseException:
            self.cleanup()
            raise
        log.info("testbed %s up: %s", self.topo.run_id, ", ".join(self.topo.namespaces.values()))
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def _trap_signals(self) -> None:
        """SIGTERM/SIGHUP unwind like Ctrl-C, so ``__exit__`` runs and the namespaces go."""

        def unwind(signum, _frame):
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
                self._saved_handlers[sig] = signal.signal(sig, unwind)

    def cleanup(self) -> list[str]:
        """Stop whatever still runs in our namespaces, delete them, and return any left behind."""
        if self.cleaned:
            return []
        mine = [ns for ns in self.topo.namespaces.values() if ns in existing_namespaces()]
        for ns in mine:  # every process in these namespaces was started by this testbed
            for pid in namespace_pids(ns):
                _terminate(pid)
        for cmd in self.topo.down_commands():
            if cmd[-1] in mine:
                sh(cmd, check=False)
        left = [ns for ns in self.topo.namespaces.values() if ns in existing_namespaces()]
        if left:
            log.error("could not delete namespaces %s", left)
        else:
            log.info("testbed %s removed", self.topo.run_id)
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self.cleaned = True
        return left


def _terminate(pid: int, grace_s: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
