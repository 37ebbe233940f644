"""What `--ca-bundle` means, as README states it: for `HTTPS h:p` upstreams the bundle is the
whole trust store (the system store is not loaded); for PAC downloads it is added to it."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from proxy.launch import pac_ssl_context
from proxy.worker import _ssl_context


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("ca")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=proxy.example", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


def test_upstream_context_trusts_only_the_bundle(bundle: Path) -> None:
    context = _ssl_context(str(bundle))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1


def test_pac_context_adds_the_bundle_to_the_system_store(bundle: Path) -> None:
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    context = pac_ssl_context(str(bundle))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == system + 1


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_unusable_bundle_is_a_clean_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="--ca-bundle"):
        pac_ssl_context(str(path))
