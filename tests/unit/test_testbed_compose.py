"""The compose side of the testbed without Docker: reading `docker inspect`, the topology, the CLI flag."""

from __future__ import annotations

import argparse

import pytest

from ddnn.cli import testbed as cli
from ddnn.testbed import topology
from ddnn.testbed.compose import ContainerService, ContainerTopology, container_end
from ddnn.testbed.topology import Endpoint, Link


def inspect(pid: int = 4242, status: str = "running") -> dict:
    return {"Id": "0123456789abcdef" * 4, "State": {"Pid": pid, "Status": status},
            "Config": {"Env": ["DDNN_EDGE_MODE=normal", "DDNN_EDGE_CLOUD=cloud-backhaul:50052", "PATH=/a=b"]},
            "NetworkSettings": {"Networks": {"p1_testbed": {"IPAddress": "172.20.0.4"},
                                             "p1_backhaul": {"IPAddress": "172.21.0.3"}}}}


def test_docker_inspect_gives_addresses_per_compose_network_and_the_environment():
    end = container_end(inspect(), "p1", "edge")
    assert end.addresses == {"testbed": "172.20.0.4", "backhaul": "172.21.0.3"}
    assert end.pid == 4242 and end.env["DDNN_EDGE_MODE"] == "normal" and end.env["PATH"] == "/a=b"


def test_a_container_without_a_process_is_refused_by_name():
    with pytest.raises(topology.TestbedError,
                       match=r"container cloud \(0123456789ab\) has no process \(state exited\)"):
        container_end(inspect(pid=0, status="exited"), "p1", "cloud")


def test_the_load_generator_runs_in_the_host_namespace_the_rest_in_the_containers():
    backhaul = Link("backhaul", Endpoint("ns-e", "eth1", "172.21.0.3"), Endpoint("ns-c", "eth0", "172.21.0.2"))
    topo = ContainerTopology("compose:p1", {"loadgen": "host", "edge": "ns-e", "cloud": "ns-c"},
                             Link("access", Endpoint("host", "", ""), Endpoint("ns-e", "eth0", "172.20.0.4")), backhaul)
    assert topo.exec_prefix("loadgen") == []
    assert topo.exec_prefix("edge") == ["ip", "netns", "exec", "ns-e"]
    assert topo.up_commands() == []  # the containers' namespaces exist; nothing is built
    # only the names are dropped (an attached namespace outlives its name); the host's is never touched
    assert topo.down_commands() == [["ip", "netns", "del", "ns-e"], ["ip", "netns", "del", "ns-c"]]


def test_container_service_addresses():
    s = ContainerService("edge", "172.20.0.4", {"grpc_port": 50051, "metrics_port": 9101})
    assert s.grpc == "172.20.0.4:50051" and s.metrics == "http://172.20.0.4:9101/metrics"


def test_the_cli_passes_the_compose_project_to_the_run():
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    cfg = cli.config_from_args(p.parse_args(["--quick", "--compose", "ddnn", "--out", "/tmp/x"]))
    assert cfg.compose == "ddnn" and cfg.limit == 96
    assert cli.config_from_args(p.parse_args(["--out", "/tmp/x"])).compose == ""
