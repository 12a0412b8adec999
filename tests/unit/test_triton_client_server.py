"""Triton client error mapping and launcher helpers that need no running server."""

import os
import socket
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from ddnn.errors import InvalidInput, NotFound, NotReady, Overloaded
from ddnn.triton.client import (
    TritonClient,
    TritonDeadlineExceeded,
    TritonInternalError,
    channel_args,
    map_triton_error,
)
from ddnn.triton.server import (
    ENV_SITE_DIRS,
    TritonNotInstalled,
    TritonServer,
    assemble_backend_directory,
    find_tritonserver,
    free_port,
    remove_stale_shared_memory,
    remove_stale_work_dirs,
    stub_environment,
)


@pytest.mark.parametrize(("status", "kind"), [
    ("StatusCode.INVALID_ARGUMENT", InvalidInput),
    ("StatusCode.NOT_FOUND", NotFound),
    ("StatusCode.UNAVAILABLE", NotReady),
    ("StatusCode.DEADLINE_EXCEEDED", TritonDeadlineExceeded),
    ("StatusCode.RESOURCE_EXHAUSTED", Overloaded),
    ("StatusCode.INTERNAL", TritonInternalError),
    (None, TritonInternalError),
])
def test_triton_statuses_map_to_domain_errors(status, kind):
    exc = InferenceServerException("[request id: <id_unknown>] input 'X' is odd", status=status)
    mapped = map_triton_error(exc, "m-block7")
    assert type(mapped) is kind
    assert str(mapped).startswith("Triton model 'm-block7': input 'X' is odd")  # request-id noise dropped


def test_a_known_model_without_loaded_versions_is_not_ready_rather_than_not_found():
    exc = InferenceServerException("Request for unknown model: 'm' has no available versions",
                                   status="StatusCode.NOT_FOUND")
    assert type(map_triton_error(exc, "m")) is NotReady


def test_deadline_is_a_not_ready_and_a_timeout():
    assert issubclass(TritonDeadlineExceeded, NotReady) and issubclass(TritonDeadlineExceeded, TimeoutError)


def test_channel_args_set_limits_and_keepalive():
    args = dict(channel_args(1 << 20, 15))
    assert args["grpc.max_send_message_length"] == args["grpc.max_receive_message_length"] == 1 << 20
    assert args["grpc.keepalive_time_ms"] == 15000
    assert "grpc.keepalive_time_ms" not in dict(channel_args(1 << 20, None))


def test_client_refuses_what_it_cannot_send_without_a_round_trip():
    client = TritonClient(f"127.0.0.1:{free_port()}", max_message_bytes=1000)
    from ddnn.triton.client import ModelIO

    io = ModelIO("FEATURES", "FP32", (-1, 4), "LOGITS")
    with pytest.raises(InvalidInput, match="exceeds the message size limit of 1000 bytes"):
        client._request("m", io, np.zeros((100, 4), np.float32))
    with pytest.raises(InvalidInput, match=r"empty batch \(N = 0\)"):
        client._request("m", io, np.zeros((0, 4), np.float32))
    with pytest.raises(InvalidInput, match="unsupported dtype"):
        client._request("m", io, np.array([["a"]], dtype=object))
    with pytest.raises(TritonDeadlineExceeded):
        client.infer("m", np.zeros((1, 4), np.float32), timeout_s=0)
    client.close()


def test_client_to_nothing_reports_not_ready():
    with TritonClient(f"127.0.0.1:{free_port()}", timeout_s=2) as client:
        assert client.is_ready() is False
        with pytest.raises(NotReady, match="UNAVAILABLE"):
            client.infer("m", np.zeros((1, 4), np.float32))


def test_missing_binary_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("DDNN_TRITONSERVER", str(tmp_path / "nope" / "tritonserver"))
    with pytest.raises(TritonNotInstalled, match=r"DDNN_TRITONSERVER=.*nope/tritonserver is not an executable"):
        find_tritonserver()


def test_wheel_install_is_found_with_this_pythons_stub(monkeypatch):
    monkeypatch.delenv("DDNN_TRITONSERVER", raising=False)
    install = find_tritonserver()
    assert install.binary.is_file() and os.access(install.binary, os.X_OK)
    assert install.stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert (install.python_backend / "libtriton_python.so").is_file()


def test_backend_directory_puts_the_stub_beside_the_backend(tmp_path, monkeypatch):
    monkeypatch.delenv("DDNN_TRITONSERVER", raising=False)
    install = find_tritonserver()
    d = assemble_backend_directory(install, tmp_path / "backends")
    names = sorted(p.name for p in (d / "python").iterdir())
    assert names == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert (d / "python" / "triton_python_backend_stub").resolve() == install.stub.resolve()
    assemble_backend_directory(install, tmp_path / "backends")  # idempotent


def test_stub_environment_points_at_this_interpreter():
    env = stub_environment({"LD_LIBRARY_PATH": "/elsewhere"}, find_tritonserver())
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    libdir = sysconfig.get_config_var("LIBDIR")
    if (Path(libdir) / sysconfig.get_config_var("LDLIBRARY")).exists():
        assert libs[0] == libdir  # this Python's libpython before the system one
    assert libs[-1] == "/elsewhere"
    site_dirs = env[ENV_SITE_DIRS].split(os.pathsep)
    import ddnn

    assert site_dirs[0] == str(Path(ddnn.__file__).resolve().parents[1])
    assert sysconfig.get_paths()["purelib"] in site_dirs
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert stub_environment({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"  # an explicit choice stays


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_server_rejects_a_missing_repository(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        TritonServer(tmp_path / "missing")
    with pytest.raises(ValueError, match="model_control_mode"):
        TritonServer(tmp_path, model_control_mode="none")


def test_stale_shared_memory_of_dead_processes_is_removed(tmp_path):
    import subprocess

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    names = [f"ddnn_triton_{dead_pid}_abc_0_x", f"ddnn_triton_client_{dead_pid}_ab12_1",
             f"ddnn_triton_{os.getpid()}_abc_0_x", "ddnn_triton_other", "someone_else"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert sorted(remove_stale_shared_memory(tmp_path)) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])

    work = tmp_path / "tmp"
    for n in (f"ddnn-triton-{dead_pid}-abc", f"ddnn-triton-{os.getpid()}-abc", "ddnn-triton-legacy"):
        (work / n / "backends").mkdir(parents=True)
    assert remove_stale_work_dirs(work) == [f"ddnn-triton-{dead_pid}-abc"]
    assert sorted(p.name for p in work.iterdir()) == [f"ddnn-triton-{os.getpid()}-abc", "ddnn-triton-legacy"]


def test_server_config_builds_the_flags_and_names_its_timeouts():
    from ddnn.triton.config import CONTROL_KEY, TritonServerConfig

    cfg = TritonServerConfig((Path("/repo"),), models=("m1", "m2"), http_port=None, stop_grace=3.5)
    flags = cfg.flags({"grpc": 8001, "http": None, "metrics": 8002}, Path("/b"), "pfx_", "s3cret")
    assert flags[:2] == ["--model-repository=/repo", "--backend-directory=/b"]
    for flag in ("--grpc-port=8001", "--metrics-port=8002", "--allow-http=false", "--load-model=m1",
                 "--load-model=m2", "--exit-timeout-secs=3", "--backend-config=python,shm-region-prefix-name=pfx_",
                 f"--grpc-restricted-protocol=model-repository:{CONTROL_KEY}=s3cret"):
        assert flag in flags
    assert not any(f.startswith("--http-restricted-api") for f in flags)  # HTTP is off: nothing to lock
    unlocked = TritonServerConfig((Path("/repo"),), model_control_mode="poll").flags(
        {"grpc": 1, "http": 2, "metrics": None}, Path("/b"), "p_")
    assert "--repository-poll-secs=5" in unlocked and "--allow-metrics=false" in unlocked
    assert not any("restricted" in f for f in unlocked)
    with pytest.raises(ValueError, match="probe_timeout"):
        TritonServerConfig((), probe_timeout=-1.0)


def test_server_from_config_resolves_repositories_and_models(tmp_path):
    from ddnn.triton.config import TritonServerConfig

    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "a" / "config.pbtxt").write_text("")
    server = TritonServer.from_config(TritonServerConfig((tmp_path,), stop_grace=2.0))
    assert server.models == ["a"] and server.repositories == [tmp_path.resolve()] and server.stop_grace == 2.0
    assert not server.running
