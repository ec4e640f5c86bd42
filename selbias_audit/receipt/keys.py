"""Ed25519 signing keys: creation, loading and key ids.

Private keys are PEM-encoded PKCS#8 files without a passphrase, readable by their owner
only (mode 0o600). Public keys are PEM-encoded SubjectPublicKeyInfo files. The key id
of a public key is the hex SHA-256 of its raw 32-byte encoding.

Every error names the file and never contains key material.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from selbias_audit.errors import SpecError
from selbias_audit.io import atomic_write_bytes

logger = logging.getLogger(__name__)

KEY_ENV_VAR = "SELBIAS_KEY"
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644
_KEY_DIR_MODE = 0o700


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the key id: the hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(raw_public_bytes(public_key)).hexdigest()


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """Return the raw 32-byte encoding of ``public_key``."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_path_for(private_path: Path) -> Path:
    """Return where the public key of ``private_path`` is written (``<stem>.pub.pem``)."""
    return private_path.with_name(f"{private_path.stem}.pub.pem")


def default_key_path() -> Path:
    """Return the per-user signing key path.

    ``$SELBIAS_KEY`` when set and not empty, else
    ``$XDG_CONFIG_HOME/selbias-audit/signing-key.pem`` when ``XDG_CONFIG_HOME`` is an
    absolute path, else ``~/.config/selbias-audit/signing-key.pem``.
    """
    explicit = os.environ.get(KEY_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME")
    # The XDG Base Directory Specification treats a relative path here as invalid.
    if not config_home or not Path(config_home).is_absolute():
        config_home = str(Path.home() / ".config")
    return Path(config_home) / "selbias-audit" / "signing-key.pem"


def _private_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``, raising FileExistsError if it exists.

    The data goes to a temporary file first and is then hard-linked into place. A
    reader never sees a partial file, and if two processes race, exactly one wins.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _make_key_dir(folder: Path) -> None:
    """Create ``folder`` owner-only if it is missing. An existing folder is left as it is."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=_KEY_DIR_MODE)
    except FileExistsError:
        return
    # mkdir applies the umask, so set the mode explicitly.
    os.chmod(folder, _KEY_DIR_MODE)


def generate_keypair(
    private_path: Path, public_path: Path, *, overwrite: bool = False
) -> Ed25519PrivateKey:
    """Create an Ed25519 key pair and write both halves as PEM files.

    Parameters
    ----------
    private_path : Path
        Destination of the private key (PKCS#8, mode 0o600). A missing parent folder is
        created with mode 0o700.
    public_path : Path
        Destination of the public key (SubjectPublicKeyInfo, mode 0o644).
    overwrite : bool
        Replace existing files. Without it an existing file is an error.

    Returns
    -------
    Ed25519PrivateKey
        The new private key.

    Raises
    ------
    SpecError
        If a destination exists and ``overwrite`` is false, or cannot be written.
    """
    private_path = Path(private_path)
    public_path = Path(public_path)
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise SpecError(
                    f"key file {path} already exists and was not replaced",
                    hint="choose another path, or allow overwriting to replace the key pair",
                )
    private_key = Ed25519PrivateKey.generate()
    try:
        _make_key_dir(private_path.parent)
        if overwrite:
            atomic_write_bytes(private_path, _private_pem(private_key), mode=_PRIVATE_MODE)
        else:
            _write_new_file(private_path, _private_pem(private_key), _PRIVATE_MODE)
        atomic_write_bytes(public_path, _public_pem(private_key.public_key()), mode=_PUBLIC_MODE)
    except FileExistsError:
        raise SpecError(f"key file {private_path} already exists and was not replaced") from None
    except OSError as error:
        raise SpecError(f"cannot write key file: {error.strerror} ({error.filename})") from None
    return private_key


def _read_key_file(path: Path, kind: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{kind} key file {path} not found") from None
    except OSError as error:
        raise SpecError(f"cannot read {kind} key file {path}: {error.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted Ed25519 private key from a PEM file.

    A key file that group or others can read is loaded, with a logged warning.

    Raises
    ------
    SpecError
        If the file is missing or unreadable, is not a PEM private key, is encrypted, or
        contains a key of another type.
    """
    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError when the key is encrypted and no password is given.
        raise SpecError(
            f"private key file {path} is encrypted",
            hint="use an unencrypted PKCS#8 PEM key",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # N.B.: the parser's message is not passed on, so that no key bytes can leak.
        raise SpecError(
            f"private key file {path} is not a valid PEM private key",
            hint="point to an unencrypted PKCS#8 PEM Ed25519 key",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SpecError(
            f"private key file {path} contains a key of type {type(key).__name__}, "
            "not an Ed25519 key",
            hint="receipts are signed with Ed25519 only",
        )
    mode = stat.S_IMODE(Path(path).stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        logger.warning("private key file %s has mode %o, readable by others; use 0o600", path, mode)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM (SubjectPublicKeyInfo) file.

    Raises
    ------
    SpecError
        If the file is missing or unreadable, is not a PEM public key, or contains a key
        of another type.
    """
    data = _read_key_file(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SpecError(
            f"public key file {path} is not a valid PEM public key",
            hint="pass the signer's .pub.pem file",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SpecError(
            f"public key file {path} contains a key of type {type(key).__name__}, "
            "not an Ed25519 key",
        )
    return key


def load_or_create_default_key() -> tuple[Ed25519PrivateKey, Path, bool]:
    """Load the per-user signing key, creating it on first use.

    The key is created once, at :func:`default_key_path`, with its public half beside it
    (:func:`public_key_path_for`). When two processes start at the same time, one
    creates the key and the other loads it.

    Returns
    -------
    tuple[Ed25519PrivateKey, Path, bool]
        The key, its path, and whether this call created it.

    Raises
    ------
    SpecError
        If the key file exists but is invalid, or cannot be created.

    Notes
    -----
    A path set through ``$SELBIAS_KEY`` that does not exist is created as well, so a
    mistyped path yields a new key. When the returned flag is true, callers should tell
    the user that a key was created, and where.
    """
    path = default_key_path()
    if path.exists():
        return load_private_key(path), path, False
    private_key = Ed25519PrivateKey.generate()
    try:
        _make_key_dir(path.parent)
        _write_new_file(path, _private_pem(private_key), _PRIVATE_MODE)
    except FileExistsError:
        # Another process created the key between the check and the link.
        return load_private_key(path), path, False
    except OSError as error:
        raise SpecError(f"cannot create signing key {path}: {error.strerror}") from None
    public_path = public_key_path_for(path)
    try:
        atomic_write_bytes(public_path, _public_pem(private_key.public_key()), mode=_PUBLIC_MODE)
    except OSError as error:
        raise SpecError(f"cannot write public key {public_path}: {error.strerror}") from None
    return private_key, path, True
