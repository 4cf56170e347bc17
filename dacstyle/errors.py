"""The one exception tree of dacstyle.

Every failure that dacstyle itself reports is a subclass of :class:`DacstyleError`;
foreign errors (Pyro5, OSError, requests, subprocess) are translated at the
boundary with ``raise X(...) from exc``::

    DacstyleError
    ├── ConfigError                 bad configuration value or unknown key
    ├── BenchmarkError              invalid benchmark spec, entry point not importable
    ├── ImageError                  anything about a SIF image
    │   ├── ImageFormatError        not a SIF, truncated, corrupt, no squashfs partition
    │   ├── SignatureError          a signature does not verify
    │   ├── ImageNotFoundError      no such file, catalogue entry or remote reference
    │   ├── DigestMismatchError     sha256 differs from the pinned digest
    │   ├── DownloadError           transfer failed after retries and mirrors
    │   └── CacheError              the image cache cannot be written (read-only, full disk)
    │       └── CacheTrustError     the cache folder is not safe to use (owner, mode, symlink)
    ├── ContainerError              starting or running a container
    │   ├── RuntimeUnavailableError the requested runtime is not installed here
    │   ├── ServerStartError        the server died or never became ready
    │   └── SlurmError              a Slurm command failed, or Slurm is not installed
    │       ├── JobEndedError       the job failed, was cancelled or hit its time limit
    │       └── JobPendingError     the job stayed pending past ``pending_timeout``
    ├── ChannelError                the host <-> server channel
    │   ├── ServerDiedError         the server went away during a call
    │   ├── CallTimeoutError        a call did not answer in time
    │   ├── ProtocolMismatchError   host and server speak different versions
    │   ├── AuthenticationError     wrong token, wrong peer, forbidden serializer
    │   └── ClosedError             a call on a closed environment, object or runner
    ├── RemoteError                 raised by remote code whose type is unknown here
    ├── SubmissionError             a competition submission is malformed
    ├── RunFolderError              a run folder is incomplete, malformed or tampered with
    ├── MissingDependencyError      an optional dependency is not installed (names the pip command)
    └── LLMError                    an OpenAI-compatible endpoint failed

Exceptions raised by remote code arrive as their own type where the host knows it;
either way they carry ``remote_traceback`` (a string, or None for local errors).
"""

from __future__ import annotations

__all__ = [
    "DacstyleError",
    "ConfigError",
    "BenchmarkError",
    "ImageError",
    "ImageFormatError",
    "SignatureError",
    "ImageNotFoundError",
    "DigestMismatchError",
    "DownloadError",
    "CacheError",
    "CacheTrustError",
    "ContainerError",
    "RuntimeUnavailableError",
    "ServerStartError",
    "SlurmError",
    "JobEndedError",
    "JobPendingError",
    "ChannelError",
    "ServerDiedError",
    "CallTimeoutError",
    "ProtocolMismatchError",
    "AuthenticationError",
    "ClosedError",
    "RemoteError",
    "SubmissionError",
    "RunFolderError",
    "MissingDependencyError",
    "LLMError",
    "IsolationWarning",
]


class DacstyleError(Exception):
    """Root of every error dacstyle raises."""

    remote_traceback: str | None = None


class ConfigError(DacstyleError, ValueError):
    """A configuration value is invalid or a key is unknown."""


class BenchmarkError(DacstyleError):
    """A benchmark spec is invalid or names something that cannot be built."""


class ImageError(DacstyleError):
    """Something is wrong with a SIF image or its reference."""


class ImageFormatError(ImageError):
    """The file is not a valid SIF image (truncated, corrupt, wrong magic, ...)."""


class SignatureError(ImageError):
    """An image signature is missing or does not verify."""


class ImageNotFoundError(ImageError, FileNotFoundError):
    """The image, catalogue entry or remote reference does not exist."""


class DigestMismatchError(ImageError):
    """The image's sha256 differs from the digest it was pinned to."""


class DownloadError(ImageError):
    """A download failed after all retries and mirrors."""


class CacheError(ImageError, OSError):
    """The image cache cannot be written: a read-only folder, a full disk, a quota."""


class CacheTrustError(CacheError, PermissionError):
    """The image cache folder could be changed by someone else, or holds a planted symlink."""


class ContainerError(DacstyleError):
    """Starting or running a container failed."""


class RuntimeUnavailableError(ContainerError):
    """The requested container runtime is not installed or cannot run here."""


class _WithStderrTail(DacstyleError):
    """An error that carries the last lines a server wrote to its stderr (``stderr_tail``)."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        if stderr_tail:
            message = f"{message}\n--- server stderr (tail) ---\n{stderr_tail}"
        super().__init__(message)
        self.stderr_tail = stderr_tail


class ServerStartError(_WithStderrTail, ContainerError):
    """The server process died or never answered the handshake."""


class SlurmError(ContainerError):
    """A Slurm command failed, or Slurm is not installed."""


class JobEndedError(_WithStderrTail, SlurmError):
    """A Slurm job ended (failed, cancelled, time limit, node failure) before or while serving; ``state`` says which."""

    def __init__(self, message: str, stderr_tail: str = "", state: str = "") -> None:
        super().__init__(message, stderr_tail)
        self.state = state


class JobPendingError(SlurmError):
    """A Slurm job stayed pending past ``pending_timeout`` (it was cancelled); the message gives Slurm's reason."""


class ChannelError(DacstyleError):
    """The channel between host and server failed."""


class ServerDiedError(_WithStderrTail, ChannelError):
    """The server went away while a call was in flight or before it."""


class CallTimeoutError(ChannelError, TimeoutError):
    """A remote call did not answer within its timeout."""


class ProtocolMismatchError(ChannelError):
    """Host and server speak different protocol versions."""


class AuthenticationError(ChannelError, PermissionError):
    """The server refused the connection: wrong token, peer or serializer."""


class ClosedError(ChannelError):
    """A call on an environment, object or runner that was closed (or released on the server)."""


class RemoteError(DacstyleError):
    """Remote code raised an exception whose type does not exist on the host.

    ``remote_type`` is its qualified name, ``remote_traceback`` the server-side trace.
    """

    def __init__(self, message: str, remote_type: str = "", remote_traceback: str | None = None) -> None:
        super().__init__(f"{remote_type}: {message}" if remote_type else message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class SubmissionError(DacstyleError, ValueError):
    """A competition submission is malformed; ``errors`` lists ``{code, message}`` items."""

    def __init__(self, message: str, errors: list[dict] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class RunFolderError(DacstyleError):
    """A run folder's manifest or episode log is missing, malformed or does not match its digests."""


class MissingDependencyError(DacstyleError, ImportError):
    """An optional dependency is missing; the message names the command that installs it."""


class LLMError(DacstyleError):
    """An OpenAI-compatible endpoint failed or answered something unusable."""


class IsolationWarning(UserWarning):
    """A benchmark runs without container isolation (the ``process`` runtime)."""
