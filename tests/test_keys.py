"""Ed25519 key files: permissions, creation once, loading errors and key ids."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from selbias_audit.errors import SpecError
from selbias_audit.receipt.keys import (
    default_key_path,
    generate_keypair,
    key_id,
    load_or_create_default_key,
    load_private_key,
    load_public_key,
    public_key_path_for,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_keypair_permissions(tmp_path: Path) -> None:
    private_path, public_path = tmp_path / "keys" / "k.pem", tmp_path / "keys" / "k.pub.pem"
    key = generate_keypair(private_path, public_path)
    assert _mode(private_path) == 0o600
    assert _mode(public_path) == 0o644
    assert _mode(private_path.parent) == 0o700
    assert key_id(load_public_key(public_path)) == key_id(key.public_key())
    assert key_id(load_private_key(private_path).public_key()) == key_id(key.public_key())


def test_generate_keypair_rejects_overwrite(tmp_path: Path) -> None:
    private_path, public_path = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    generate_keypair(private_path, public_path)
    before = private_path.read_bytes()
    with pytest.raises(SpecError, match="already exists"):
        generate_keypair(private_path, public_path)
    assert private_path.read_bytes() == before


def test_generate_keypair_overwrite_replaces(tmp_path: Path) -> None:
    private_path, public_path = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    first = generate_keypair(private_path, public_path)
    second = generate_keypair(private_path, public_path, overwrite=True)
    assert key_id(first.public_key()) != key_id(second.public_key())
    assert key_id(load_private_key(private_path).public_key()) == key_id(second.public_key())
    assert _mode(private_path) == 0o600


def test_key_id_is_sha256_of_raw_key() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert key_id(key) == hashlib.sha256(raw).hexdigest()


def test_default_key_created_once_and_reused(private_key_home: Path) -> None:
    key, path, created = load_or_create_default_key()
    assert created
    assert path == private_key_home / "signing-key.pem"
    assert _mode(path) == 0o600
    assert public_key_path_for(path).is_file()

    again, again_path, created_again = load_or_create_default_key()
    assert not created_again
    assert again_path == path
    assert key_id(again.public_key()) == key_id(key.public_key())


def test_default_key_folder_is_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SELBIAS_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    _, path, created = load_or_create_default_key()
    assert created
    assert path == tmp_path / "config" / "selbias-audit" / "signing-key.pem"
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600


def test_default_key_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELBIAS_KEY", str(tmp_path / "explicit.pem"))
    assert default_key_path() == tmp_path / "explicit.pem"

    monkeypatch.setenv("SELBIAS_KEY", "")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_key_path() == tmp_path / "xdg" / "selbias-audit" / "signing-key.pem"

    # A relative XDG_CONFIG_HOME is invalid and ignored.
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/config")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".config" / "selbias-audit" / "signing-key.pem"
    assert default_key_path() == expected


def test_load_private_key_missing(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"private key file .*absent\.pem not found"):
        load_private_key(tmp_path / "absent.pem")


def test_load_private_key_bad_pem_hides_content(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbA"
    path.write_text(f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SpecError, match="bad.pem is not a valid PEM private key") as info:
        load_private_key(path)
    assert secret not in info.value.diagnostics()
    assert info.value.__cause__ is None


def test_load_private_key_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "rsa.pem"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SpecError, match=r"rsa\.pem contains a key of type RSAPrivateKey, not"):
        load_private_key(path)


def test_load_private_key_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "encrypted.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(SpecError, match="encrypted.pem is encrypted"):
        load_private_key(path)


def test_load_public_key_rejects_private_key(tmp_path: Path) -> None:
    private_path = tmp_path / "k.pem"
    generate_keypair(private_path, tmp_path / "k.pub.pem")
    with pytest.raises(SpecError, match=r"k\.pem is not a valid PEM public key"):
        load_public_key(private_path)


def test_load_private_key_warns_on_loose_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private_path = tmp_path / "k.pem"
    generate_keypair(private_path, tmp_path / "k.pub.pem")
    private_path.chmod(0o644)
    with caplog.at_level("WARNING"):
        load_private_key(private_path)
    assert "has mode 644" in caplog.text
    assert "PRIVATE KEY" not in caplog.text
