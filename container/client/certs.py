"""Per-run certificates for a channel that crosses nodes, made on the host with ``cryptography``.

A :class:`RunCA` is a fresh certificate authority for one run; its private key
never leaves the host's memory. It signs the server's certificate and the
clients' certificates, which are written 0600 into the run's private folder
(see :mod:`dacstyle.container.tls` for how both ends use them).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dacstyle.runtimes.serverdir import write_private

from ..tls import cert_fingerprint

__all__ = ["RunCA"]

_VALID = _dt.timedelta(days=30)  # a run's certificates outlive no Slurm time limit anyone sets


class RunCA:
    """A certificate authority for one run: signs its server and client certificates."""

    def __init__(self, name: str = "dacstyle run") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        self.cert = (
            self._builder(subject, self._key.public_key())
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @staticmethod
    def _builder(subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = _dt.datetime.now(_dt.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _VALID))

    def write_server(self, folder: str | Path) -> str:
        """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``folder``; returns the server's fingerprint."""
        self._issue(Path(folder), "server", ExtendedKeyUsageOID.SERVER_AUTH)
        return cert_fingerprint(Path(folder) / "server.pem")

    def write_server_dir(self, folder: str | Path) -> str:
        """A server folder's certificates: the server's in ``host/``, a client's in ``client/``; returns the fingerprint.

        ``host/`` is bound into the server's container; ``client/`` (0700) never is.
        """
        fingerprint = self.write_server(Path(folder) / "host")
        (Path(folder) / "client").mkdir(mode=0o700, exist_ok=True)
        self.write_client(Path(folder) / "client")
        return fingerprint

    def write_client(self, folder: str | Path, prefix: str = "client") -> None:
        """Write ``ca.pem``, ``PREFIX.pem`` and ``PREFIX.key`` into ``folder``: a client this run's servers accept."""
        self._issue(Path(folder), prefix, ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(self, folder: Path, prefix: str, usage: x509.ObjectIdentifier) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dacstyle {prefix}")])
        cert = (self._builder(subject, key.public_key()).issuer_name(self.cert.subject)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(self._key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        write_private(folder / f"{prefix}.key", key_pem)
        write_private(folder / f"{prefix}.pem", cert.public_bytes(serialization.Encoding.PEM))
        write_private(folder / "ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

