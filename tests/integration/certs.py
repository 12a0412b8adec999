"""Test certificates made with the openssl CLI: a CA, a server cert for 127.0.0.1, client certs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(folder: Path) -> dict[str, Path]:
    """CA + server (SAN 127.0.0.1, localhost) + client certificate + a client signed by another CA."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    for ca in ("ca", "rogue-ca"):
        _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=ddnn-test-{ca}",
             "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=folder)
    for name, ca in (("server", "ca"), ("client", "ca"), ("rogue-client", "rogue-ca")):
        _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=folder)
        _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", f"{name}.pem", cwd=folder)
    return {p.stem if p.suffix == ".pem" else p.stem + "_key": p for p in folder.iterdir()
            if p.suffix in (".pem", ".key")}
