"""Who made a build: ed25519 keys, the signature of ``manifest.json``, and its check before anything loads.

The manifest lists every artifact with its sha256, so a signature over the manifest's exact bytes
covers every file of the build. The hashes alone catch corruption and partial copies; whoever can
write the build can recompute them. The signature catches tampering: only the holder of the
private key can sign a changed manifest. ``halocut keygen`` writes the pair, ``halocut compile --sign
KEY`` writes ``manifest.sig`` beside the manifest, ``halocut run / bench --trust KEY.pub`` (or
``$HALOCUT_TRUST``) refuse a build that is unsigned or signed by another key, on the driver and on
every actor, before any artifact is loaded.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> private, public = keygen(folder / "key")
>>> signature = sign(b'{"format": 1}', private)
>>> verify(b'{"format": 1}', signature, public.read_bytes(), "build")
>>> verify(b'{"format": 2}', signature, public.read_bytes(), "build")
Traceback (most recent call last):
halocut.ir.errors.HalocutError: build: manifest.sig: the signature does not match manifest.json (tampered, or signed by another key)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path

from halocut.ir.errors import HalocutError
from halocut.ir.files import parse_json, read_bytes, write_bytes

SIGNATURE_FILE = "manifest.sig"
FORMAT = "halocut-signature/1"
TRUST_ENV = "HALOCUT_TRUST"
_KEY_BYTES = 4096


def keygen(path: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Write a new ed25519 private key to ``path`` (PEM, mode 0600) and its public key to ``path.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists() and not force:
            raise HalocutError(f"{existing} exists; use --force to replace it")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_bytes(path, private, force)  # the temporary file is created 0600 and renamed, so it never was readable
    os.chmod(path, 0o600)
    write_bytes(public_path, public, force)
    os.chmod(public_path, 0o644)
    return path, public_path


def _private_key(path: str | Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = read_bytes(path, _KEY_BYTES)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise HalocutError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise HalocutError(f"{path}: not an ed25519 private key (halocut keygen writes one)")
    return key


def check_private_key(path: str | Path) -> None:
    """Refuse a signing key that will not sign, before any work is done."""
    _private_key(path)


def public_key_of(data: bytes, source: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise HalocutError(f"{source}: not a PEM public key (halocut keygen writes KEY.pub)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise HalocutError(f"{source}: not an ed25519 public key")
    return key


def read_public_key(path: str | Path) -> bytes:
    """The PEM bytes of a trusted public key file (checked)."""
    data = read_bytes(path, _KEY_BYTES)
    public_key_of(data, str(path))
    return data


def key_id(public_pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key_of(public_pem, "key").public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(manifest_bytes: bytes, private_path: str | Path) -> bytes:
    """The content of ``manifest.sig`` for these manifest bytes."""
    from cryptography.hazmat.primitives import serialization

    key = _private_key(private_path)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = {"format": FORMAT, "algorithm": "ed25519", "key_id": key_id(public),
              "signature": base64.b64encode(key.sign(manifest_bytes)).decode()}
    return (json.dumps(record) + "\n").encode()


def sign_build(build_dir: str | Path, private_path: str | Path) -> Path:
    """Sign ``build_dir/manifest.json``: writes ``build_dir/manifest.sig``."""
    build_dir = Path(build_dir)
    data = read_bytes(build_dir / "manifest.json")
    return write_bytes(build_dir / SIGNATURE_FILE, sign(data, private_path), force=True)


def verify(manifest_bytes: bytes, signature_file: bytes | None, public_pem: bytes, build: str) -> None:
    """Raise unless ``signature_file`` is a good ed25519 signature of ``manifest_bytes`` by ``public_pem``."""
    from cryptography.exceptions import InvalidSignature

    if signature_file is None:
        raise HalocutError(f"{build}: unsigned build (no {SIGNATURE_FILE}) and a trusted key is set; refusing to "
                           f"load it (compile with --sign KEY)")
    try:
        record = parse_json(signature_file.decode("utf-8"), f"{build}: {SIGNATURE_FILE}")
        signature = base64.b64decode(record["signature"], validate=True)
    except (UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise HalocutError(f"{build}: {SIGNATURE_FILE}: not a halocut signature file") from None
    key = public_key_of(public_pem, "trusted key")
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise HalocutError(f"{build}: {SIGNATURE_FILE}: the signature does not match manifest.json (tampered, "
                           f"or signed by another key)") from None


def warn_unchecked(build: str | Path) -> None:
    """The one line a run or bench of a build read without a trusted key prints (stderr)."""
    print(f"halocut: warning: {build}: not checked by signature (no --trust or ${TRUST_ENV}); its sha256s catch "
          f"corruption, not tampering", file=sys.stderr)


def trusted_key_path(trust: str | Path | None) -> Path | None:
    """The trusted public key: ``--trust``, else ``$HALOCUT_TRUST``, else none."""
    chosen = trust or os.environ.get(TRUST_ENV) or None
    return Path(chosen) if chosen else None

