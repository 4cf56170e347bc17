"""Signatures stored in SIF images: DSSE (verified), PGP and legacy (integrity only).

What is verified:

- DSSE envelopes (``application/vnd.sylabs.sif-metadata+json``), the format
  the reference implementation signs with by default: the envelope signature is
  checked against the given PEM public keys (ed25519, RSA PKCS#1 v1.5 or PSS,
  ECDSA), then the signed metadata is checked against the image: the digest of
  the header's integrity fields, and for every object of the signed group the
  digest of its descriptor's integrity fields and of its data. A flipped byte
  anywhere in the signed data, or a key that did not sign, fails.
- PGP clear-signed metadata and legacy ``SIFHASH`` signatures are parsed and
  their digests checked against the image (so tampering is still detected), but
  the PGP signature itself is not checked: they are reported with
  ``authenticated=False`` and never satisfy :func:`verify_signatures`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from dacstyle.errors import SignatureError
from dacstyle.images.sif import Descriptor, SifImage

__all__ = ["SignatureResult", "inspect_signatures", "verify_signatures",
           "verify_dsse_envelope", "load_public_keys", "DSSE_PAYLOAD_TYPE"]

DSSE_PAYLOAD_TYPE = "application/vnd.sylabs.sif-metadata+json"
_PGP_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_PGP_SIG = b"-----BEGIN PGP SIGNATURE-----"
_HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


@dataclass
class SignatureResult:
    """What one signature object covers and what could be checked about it."""

    signature_id: int
    kind: str                      # "dsse", "pgp" or "legacy"
    target: str                    # "group 1" or "object 2"
    objects: list[int]             # ids of the objects the signature covers
    hash_type: str
    entity: str | None             # PGP fingerprint from the descriptor, if any
    authenticated: bool = False    # a given public key verified the signature
    integrity_ok: bool = False     # the signed digests match the image
    keys: list[str] = field(default_factory=list)  # keys that verified it
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_public_keys(keys: list[str | os.PathLike[str]]) -> list[tuple[str, Any]]:
    """Load PEM public keys; returns ``(label, key)`` pairs."""
    loaded = []
    for k in keys:
        try:
            key = serialization.load_pem_public_key(Path(k).read_bytes())
        except (OSError, ValueError) as exc:
            raise SignatureError(f"cannot load public key {k}: {exc}") from exc
        loaded.append((str(k), key))
    return loaded


def _pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _verify_one(key: Any, sig: bytes, message: bytes, algo: hashes.HashAlgorithm) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, message)
        elif isinstance(key, rsa.RSAPublicKey):
            try:
                key.verify(sig, message, padding.PKCS1v15(), algo)
            except InvalidSignature:
                key.verify(sig, message, padding.PSS(padding.MGF1(algo), padding.PSS.AUTO), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, message, ec.ECDSA(algo))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_dsse_envelope(envelope: bytes, keys: list[tuple[str, Any]],
                         hash_type: str = "sha256") -> tuple[bytes, list[str]]:
    """Verify a DSSE envelope; returns its payload and the labels of the keys that signed it."""
    try:
        env = json.loads(envelope)
        payload = _b64(env["payload"])
        sigs = [_b64(s["sig"]) for s in env["signatures"]]
        ptype = env["payloadType"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"malformed DSSE envelope: {exc}") from exc
    if ptype != DSSE_PAYLOAD_TYPE:
        raise SignatureError(f"unexpected DSSE payload type {ptype!r}")
    algo = _HASHES.get(hash_type)
    if algo is None:
        raise SignatureError(f"unsupported signature hash {hash_type!r}")
    message = _pae(ptype, payload)
    accepted = [label for label, key in keys
                if any(_verify_one(key, sig, message, algo) for sig in sigs)]
    if not accepted:
        raise SignatureError(f"no DSSE signature ({len(sigs)} present) verifies with the "
                             f"given key(s): {', '.join(label for label, _ in keys) or 'none'}")
    return payload, accepted


def _targets(image: SifImage, sig: Descriptor) -> tuple[str, list[Descriptor]]:
    if sig.link_is_group:
        return f"group {sig.link}", [d for d in image.descriptors if d.group_id == sig.link]
    return f"object {sig.link}", [d for d in image.descriptors if d.id == sig.link]


def _integrity_fields(d: Descriptor, relative_id: int) -> bytes:
    """The descriptor fields the reference signs: type, used, relative id, link, size, ..."""
    raw = d.raw
    dtype, used, _id, _gid, link, _off, size, _pad, ctime, _mtime, uid, gid = struct.unpack_from(
        "<i?III3q4q", raw)
    return (struct.pack("<i?IIqqqq", dtype, used, relative_id, link, size, ctime, uid, gid)
            + raw[73:73 + 128 + 384])


def _digest(spec: str, chunks: Iterable[bytes]) -> bool:
    name, _, value = spec.partition(":")
    if name not in ("sha224", "sha256", "sha384", "sha512"):
        raise SignatureError(f"unsupported digest {name!r} in signed metadata")
    digest = hashlib.new(name)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest() == value.lower()


def _check_metadata(image: SifImage, payload: bytes, objects: list[Descriptor]) -> None:
    """Compare signed image metadata (header + object digests) with the image."""
    try:
        meta = json.loads(payload)
        header_digest = meta["header"]["digest"]
        signed = {int(o["relativeId"]): o for o in meta["objects"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"malformed signed metadata: {exc}") from exc
    if not _digest(header_digest, [image.header.raw[:45], image.header.raw[48:64]]):
        raise SignatureError("header integrity compromised")
    min_id = min(d.id for d in objects)
    if sorted(signed) != sorted(d.id - min_id for d in objects):
        raise SignatureError(f"signed objects {sorted(i + min_id for i in signed)} differ from "
                             f"the group's objects {[d.id for d in objects]}")
    for d in objects:
        o = signed[d.id - min_id]
        if not _digest(o["descriptorDigest"], [_integrity_fields(d, d.id - min_id)]):
            raise SignatureError(f"descriptor integrity compromised: object {d.id}")
        if not _digest(o["objectDigest"], image.iter_object(d)):
            raise SignatureError(f"data integrity compromised: object {d.id}")


def _pgp_plaintext(data: bytes) -> bytes:
    """The signed text of a PGP clear-signed message (dash-escaping undone)."""
    body = data.split(b"\n\n", 1)[1].split(b"\n" + _PGP_SIG, 1)[0]
    return b"\n".join(line[2:] if line.startswith(b"- ") else line for line in body.split(b"\n"))


def _check_legacy(image: SifImage, sig: Descriptor, text: bytes, objects: list[Descriptor]) -> None:
    hexdigest = text.removeprefix(b"SIFHASH:\n").strip().decode()
    h = hashlib.new(sig.extra["hash_type"])
    for d in objects:
        for chunk in image.iter_object(d):
            h.update(chunk)
    if h.hexdigest() != hexdigest.lower():
        raise SignatureError(f"data integrity compromised: {', '.join(str(d.id) for d in objects)}")


def _examine(image: SifImage, sig: Descriptor, keys: list[tuple[str, Any]]) -> SignatureResult:
    target, objects = _targets(image, sig)
    objects = [d for d in objects if d.id != sig.id]
    data = image.read_object(sig)
    kind = ("pgp" if data.startswith(_PGP_BEGIN) and b"SIFHASH:" not in data[:200]
            else "legacy" if data.startswith(_PGP_BEGIN) else "dsse")
    if kind == "legacy" and not sig.link_is_group:
        objects = [d for d in image.descriptors if d.id == sig.link]
    elif kind == "legacy":
        objects = [d for d in objects if d.data_type != "signature"]
    res = SignatureResult(sig.id, kind, target, [d.id for d in objects],
                          sig.extra["hash_type"], sig.extra["entity"])
    try:
        if not objects:
            raise SignatureError(f"signed {target} does not exist")
        if kind == "dsse":
            payload, res.keys = verify_dsse_envelope(data, keys, sig.extra["hash_type"])
            res.authenticated = True
            _check_metadata(image, payload, objects)
        elif kind == "pgp":
            _check_metadata(image, _pgp_plaintext(data), objects)
        else:
            _check_legacy(image, sig, _pgp_plaintext(data), objects)
        res.integrity_ok = True
    except SignatureError as exc:
        res.error = str(exc)
    except (IndexError, ValueError, OSError) as exc:
        res.error = f"unreadable signature object: {exc}"
    return res


def inspect_signatures(image: SifImage,
                       keys: list[str | os.PathLike[str]] | None = None) -> list[SignatureResult]:
    """Examine every signature object; never raises for a bad signature, reports it."""
    loaded = load_public_keys(list(keys or []))
    return [_examine(image, d, loaded) for d in image.find("signature")]


def verify_signatures(image: SifImage,
                      keys: list[str | os.PathLike[str]]) -> list[SignatureResult]:
    """Verify the image's DSSE signatures against ``keys`` (PEM public key files).

    Raises SignatureError when the image has no signature, when any signature
    fails (bad envelope, unknown key, tampered header, descriptor or data), or
    when no signature was authenticated by one of the keys (PGP and legacy
    signatures are integrity-checked only). Returns the per-signature results.
    """
    if not keys:
        raise SignatureError("verify_signatures needs at least one public key")
    results = inspect_signatures(image, keys)
    if not results:
        raise SignatureError(f"{image.path}: image is not signed")
    for r in results:
        if r.error:
            raise SignatureError(f"{image.path}: signature object {r.signature_id} "
                                 f"({r.kind}, {r.target}) not valid: {r.error}")
    if not any(r.authenticated for r in results):
        kinds = ", ".join(sorted({r.kind for r in results}))
        raise SignatureError(f"{image.path}: no signature verified with the given keys "
                             f"(only {kinds} signatures, whose keys dacstyle does not check)")
    return results
