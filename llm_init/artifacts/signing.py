"""Ed25519 signatures over artifact manifests: who may publish what every replica runs.

vLLM and inductor execute the Python and load the shared objects of a restored compile cache,
so a reader that trusts keys takes only artifacts whose manifest (which holds the archive's
SHA-256 and every file's) carries a valid signature by one of them. The signature is an object
of its own next to the manifest, named by the manifest's SHA-256
(``<key>/manifest-<sha256>.sig``, JSON with the key id and the signature), so that two
publishers racing for one key never overwrite each other's signature, and it covers the exact
manifest bytes the reader read. A key id is a short fingerprint of the public key, so events
can say which key signed without showing any key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llm_init.errors import ArtifactError

if TYPE_CHECKING:
    # imported where used: configuring warm starts without signing needs no cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

ALGORITHM = "ed25519"
SIGNATURE_FORMAT = 1
KEY_ID_CHARS = 16
_PEM = b"-----BEGIN"
_OPENSSH_PUBLIC = ("ssh-ed25519 ",)


class SigningKeyError(ArtifactError):
    """A signing or trusted key cannot be loaded; the message names the file or variable,
    never the key."""


class UntrustedArtifactError(ArtifactError):
    """An artifact's manifest has no valid signature by a trusted key; the message says why."""


def signature_name(key: str, manifest: bytes) -> str:
    """The store object holding the signature of the manifest ``manifest`` of artifact
    ``key``."""
    return f"{key}/manifest-{hashlib.sha256(manifest).hexdigest()}.sig"


def key_id(public_key: Ed25519PublicKey) -> str:
    """The public key's short fingerprint: the start of the SHA-256 of its raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_CHARS]


@dataclass(frozen=True, slots=True)
class Signer:
    """A publisher's private key; signs manifests."""

    private_key: Ed25519PrivateKey
    key_id: str

    def __repr__(self) -> str:  # the key itself must never reach a log line
        return f"Signer(key_id={self.key_id!r})"

    def sign(self, manifest: bytes) -> bytes:
        """The signature document for the exact bytes ``manifest``."""
        signature = self.private_key.sign(manifest)
        return json.dumps({"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM,
                           "key_id": self.key_id,
                           "signature": base64.b64encode(signature).decode()},
                          sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class TrustedKeys:
    """The public keys a reader trusts, by key id; with ``required`` an unsigned manifest is
    refused, without it only a signature that does not verify is."""

    keys: Mapping[str, Ed25519PublicKey]
    required: bool = True

    def verify(self, manifest: bytes, signature: bytes | None) -> str | None:
        """The id of the trusted key whose signature over ``manifest`` verifies (``None`` for
        an unsigned manifest when signatures are not required); raises
        ``UntrustedArtifactError`` for any other signature document, or none when required."""
        from cryptography.exceptions import InvalidSignature

        if signature is None:
            if self.required:
                raise UntrustedArtifactError("the manifest is not signed")
            return None
        try:
            document = json.loads(signature)
            signer = str(document["key_id"])
            algorithm = str(document["algorithm"])
            raw = base64.b64decode(str(document["signature"]), validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise UntrustedArtifactError(f"unreadable signature: {type(exc).__name__}") from exc
        if algorithm != ALGORITHM:
            raise UntrustedArtifactError(f"signature algorithm {algorithm[:32]!r}, not "
                                         f"{ALGORITHM}")
        public_key = self.keys.get(signer)
        if public_key is None:
            raise UntrustedArtifactError(f"signed by key {signer[:KEY_ID_CHARS]!r}, which is not "
                                         f"trusted (trusted: {', '.join(sorted(self.keys))})")
        try:
            public_key.verify(raw, manifest)
        except InvalidSignature as exc:
            raise UntrustedArtifactError(
                f"the signature by key {signer} does not match the manifest") from exc
        return signer


def load_private_key(*, path: str | None = None, env: str | None = None) -> Signer:
    """The Ed25519 private key in the PEM (PKCS#8) or OpenSSH file ``path``, or in the
    environment variable named ``env``."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path is not None:
        where = f"signing key file {path}"
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read {where}: {exc.strerror or exc}") from None
    elif env is not None:
        where = f"signing key variable {env}"
        value = os.environ.get(env)
        if not value:
            raise SigningKeyError(f"the {where} is not set")
        data = value.encode()
    else:
        raise SigningKeyError("no signing key: set signing_key or signing_key_env")
    loader = (serialization.load_ssh_private_key if data.lstrip().startswith(b"-----BEGIN "
                                                                             b"OPENSSH")
              else serialization.load_pem_private_key)
    try:
        private_key = loader(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography's message could quote the data: say only where it came from
        raise SigningKeyError(f"the {where} holds no unencrypted PEM or OpenSSH private "
                              "key") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise SigningKeyError(f"the {where} holds a {type(private_key).__name__}, not an "
                              "Ed25519 key")
    return Signer(private_key, key_id(private_key.public_key()))


def load_public_key(spec: str) -> Ed25519PublicKey:
    """The Ed25519 public key ``spec``: PEM text, an OpenSSH ``ssh-ed25519 ...`` line, or the
    path of a file holding either."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = spec.strip()
    where = "trusted key"
    if not text.startswith(("-----BEGIN", *_OPENSSH_PUBLIC)):
        where = f"trusted key file {spec}"
        try:
            text = Path(spec).expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningKeyError(f"cannot read {where}: {exc}") from None
    try:
        loaded = (serialization.load_ssh_public_key(text.encode()) if
                  text.startswith(_OPENSSH_PUBLIC)
                  else serialization.load_pem_public_key(text.encode()))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"the {where} is no PEM or OpenSSH public key: {exc}") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise SigningKeyError(f"the {where} is a {type(loaded).__name__}, not an Ed25519 key")
    return loaded


def trusted_keys(specs: tuple[str, ...] | list[str], *, required: bool = True) -> TrustedKeys:
    """The keys ``specs`` (see ``load_public_key``) by key id."""
    loaded = [load_public_key(spec) for spec in specs]
    return TrustedKeys({key_id(k): k for k in loaded}, required)


def public_key_pem(signer: Signer) -> str:
    """The signer's public key as PEM, for the readers' ``trusted_keys``."""
    from cryptography.hazmat.primitives import serialization

    return signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

