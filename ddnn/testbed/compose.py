"""The testbed's link profiles on the docker compose testbed: shape the edge<->cloud link between containers.

docker-compose.yml puts the edge and the cloud on a network of their own, ``backhaul`` (the cloud
answers there as ``cloud-backhaul``); everything else (load generator, Triton, Prometheus) is on
``testbed``. So shaping each end's ``backhaul`` interface changes exactly the link the namespace
testbed shapes, and nothing else: Prometheus still scrapes, the cloud still reaches Triton.

The containers run unprivileged (no ``NET_ADMIN``); the shaping is done from the host, as root, in
their network namespaces: ``ip netns attach`` names a container's namespace (from its PID) so the
shapers of :mod:`ddnn.testbed.shaper` work on it unchanged, netem or the nfqueue delayer. Detaching
removes only the name; the containers' processes are never touched, and the shaping goes with
:meth:`Shaper.close`. The load generators and the status watcher run in the host's namespace and
reach the edge at its address on the ``testbed`` network.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ddnn.export.bundle import Mode
from ddnn.launch import Addressed
from ddnn.testbed.runner import Run, RunConfig
from ddnn.testbed.topology import NS_PREFIX, Endpoint, Link, TestbedError, Topology, existing_namespaces, preflight, sh

log = logging.getLogger(__name__)

ACCESS_NETWORK = "testbed"  # compose network of the load generator, the edge and Prometheus
BACKHAUL_NETWORK = "backhaul"  # compose network of the edge and the cloud only: the shaped link
EDGE_GRPC_PORT = 50051  # the ports docker-compose.yml gives the services (the edge's and the cloud's env say)
CLOUD_GRPC_PORT = 50052
CLOUD_METRICS_PORT = 9102


@dataclass(frozen=True)
class ContainerEnd:
    """A compose service's container as the testbed sees it."""

    service: str
    container_id: str
    pid: int
    addresses: dict[str, str]  # compose network (without the project prefix) -> IPv4 address
    env: dict[str, str]


def compose_container(project: str, service: str) -> ContainerEnd:
    """The running container of ``service`` in compose ``project`` (by the labels compose sets)."""
    ids = sh(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
              "--filter", f"label=com.docker.compose.service={service}"]).stdout.split()
    if not ids:
        raise TestbedError(f"no running container for service {service!r} of compose project {project!r} "
                           f"(docker compose -p {project} up -d first)")
    return container_end(json.loads(sh(["docker", "inspect", ids[0]]).stdout)[0], project, service)


def container_end(attrs: dict, project: str, service: str) -> ContainerEnd:
    """A :class:`ContainerEnd` from ``docker inspect``'s object (networks named without the project prefix)."""
    prefix = f"{project}_"
    networks = {name.removeprefix(prefix): net.get("IPAddress", "")
                for name, net in attrs["NetworkSettings"]["Networks"].items()}
    env = dict(kv.split("=", 1) for kv in attrs["Config"].get("Env") or [] if "=" in kv)
    pid = int(attrs["State"].get("Pid") or 0)
    if pid <= 0:
        raise TestbedError(f"container {service} ({attrs['Id'][:12]}) has no process "
                           f"(state {attrs['State']['Status']})")
    return ContainerEnd(service, attrs["Id"], pid, networks, env)


def device_with_address(ns: str, addr: str) -> str:
    """The interface of namespace ``ns`` that holds ``addr`` (eth0, eth1, ... depend on attach order)."""
    for link in json.loads(sh(["ip", "-n", ns, "-j", "addr", "show"]).stdout):
        if any(a.get("local") == addr for a in link.get("addr_info", [])):
            return link["ifname"]
    raise TestbedError(f"no interface with address {addr} in namespace {ns}")


class ContainerTopology(Topology):
    """A :class:`Topology` over attached container namespaces; the load generator's role is the host."""

    def exec_prefix(self, role: str) -> list[str]:
        return [] if role == "loadgen" else super().exec_prefix(role)

    def up_commands(self) -> list[list[str]]:
        return []  # the containers' namespaces exist already: see ComposeSite

    def down_commands(self) -> list[list[str]]:
        return [["ip", "netns", "del", ns] for role, ns in self.namespaces.items() if role != "loadgen"]


class ComposeSite:
    """Context manager: name the edge's and cloud's namespaces on enter, drop the names on every exit."""

    def __init__(self, project: str, run_id: str | None = None):
        self.project = project
        self.edge = compose_container(project, "edge")
        self.cloud = compose_container(project, "cloud")
        have = (self.edge.addresses.get(ACCESS_NETWORK), self.edge.addresses.get(BACKHAUL_NETWORK),
                self.cloud.addresses.get(BACKHAUL_NETWORK))
        if not all(have):
            raise TestbedError(f"compose project {project}: the edge must be on networks {ACCESS_NETWORK} and "
                               f"{BACKHAUL_NETWORK} and the cloud on {BACKHAUL_NETWORK} (docker-compose.yml of this "
                               f"version); found edge {sorted(self.edge.addresses)}, "
                               f"cloud {sorted(self.cloud.addresses)}")
        run_id = run_id or secrets.token_hex(3)
        ns = {"loadgen": "host", "edge": f"{NS_PREFIX}{run_id}-c-edge", "cloud": f"{NS_PREFIX}{run_id}-c-cloud"}
        edge_addr, cloud_addr = self.edge.addresses[BACKHAUL_NETWORK], self.cloud.addresses[BACKHAUL_NETWORK]
        self._planned = ns
        self.topo: ContainerTopology | None = None
        self._addrs = {"access": self.edge.addresses[ACCESS_NETWORK], "edge": edge_addr, "cloud": cloud_addr}
        self.cleaned = False

    def __enter__(self) -> ContainerTopology:
        preflight()
        ns = self._planned
        clash = {ns["edge"], ns["cloud"]} & set(existing_namespaces())
        if clash:
            raise TestbedError(f"namespaces {sorted(clash)} already exist")
        try:
            for role, end in (("edge", self.edge), ("cloud", self.cloud)):
                sh(["ip", "netns", "attach", ns[role], str(end.pid)])
            a = self._addrs
            backhaul = Link("backhaul", Endpoint(ns["edge"], device_with_address(ns["edge"], a["edge"]), a["edge"]),
                            Endpoint(ns["cloud"], device_with_address(ns["cloud"], a["cloud"]), a["cloud"]))
            access = Link("access", Endpoint("host", "", ""),
                          Endpoint(ns["edge"], device_with_address(ns["edge"], a["access"]), a["access"]))
            self.topo = ContainerTopology(f"compose:{self.project}", dict(ns), access, backhaul)
        except BaseException:
            self.cleanup()
            raise
        log.info("compose project %s: edge %s (%s) <-> cloud %s (%s) on %s", self.project, a["edge"],
                 backhaul.a.dev, a["cloud"], backhaul.b.dev, BACKHAUL_NETWORK)
        return self.topo

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def cleanup(self) -> list[str]:
        """Delete the names (``ip netns del`` on an attached namespace unmounts the name only)."""
        if self.cleaned:
            return []
        mine = [n for r, n in self._planned.items() if r != "loadgen" and n in existing_namespaces()]
        for n in mine:
            sh(["ip", "netns", "del", n], check=False)
        self.cleaned = True
        return [n for n in mine if n in existing_namespaces()]

    def services(self) -> dict[str, Addressed]:
        """The edge at its ``testbed`` address, the cloud at its ``backhaul`` one (the runner probes the link there)."""
        a = self._addrs
        edge = {"grpc_port": EDGE_GRPC_PORT, "metrics_port": _port(self.edge, "DDNN_EDGE_METRICS_PORT", 9101)}
        cloud = {"grpc_port": CLOUD_GRPC_PORT,
                 "metrics_port": _port(self.cloud, "DDNN_CLOUD_METRICS_PORT", CLOUD_METRICS_PORT)}
        return {"edge": ContainerService("edge", a["access"], edge),
                "cloud": ContainerService("cloud", a["cloud"], cloud)}

    def describe(self) -> dict:
        return {"project": self.project,
                "containers": {c.service: {"id": c.container_id[:12], "addresses": c.addresses,
                                           "engine": c.env.get("DDNN_EDGE_ENGINE") or c.env.get("DDNN_CLOUD_BACKEND"),
                                           "mode": c.env.get("DDNN_EDGE_MODE")}
                               for c in (self.edge, self.cloud)}}


def _port(end: ContainerEnd, var: str, default: int) -> int:
    return int(end.env.get(var) or default)


@dataclass
class ContainerService(Addressed):
    """Where a compose service answers, addressed like :class:`ddnn.launch.Service` for the runner."""

    name: str
    host: str
    info: dict


class ComposeRun(Run):
    """:class:`Run` on a running compose project: the same table and timeline, the link between containers."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.site = ComposeSite(cfg.compose)

    @contextmanager
    def _site(self) -> Iterator[None]:
        with self.site as topo:
            self.topo = topo
            yield

    def _describe(self) -> dict:
        return {**self.topo.describe(), "compose": self.site.describe()}

    def _start_services(self) -> None:
        self.services = self.site.services()  # compose started them; the run only finds them

    def _stop_services(self) -> dict[str, int]:
        return {}  # compose owns the containers: the run leaves them running

    def _restore(self) -> None:
        mode = self.site.edge.env.get("DDNN_EDGE_MODE") or Mode.NORMAL.value
        try:
            self.watch.configure(mode=mode)
        except (TestbedError, OSError) as exc:  # the run's own error, if any, is the one to report
            log.warning("could not set the edge back to mode %s: %s", mode, exc)
