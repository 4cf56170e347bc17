"""The host side: RemoteRunner, the proxies it hands back, and server start-up."""

from .channel import Channel
from .proxies import RemoteEnvironment, RemoteObject
from dacstyle.results import RunResults

from .runner import RemoteRunner
from .server import Server

__all__ = ["Channel", "RemoteEnvironment", "RemoteObject", "RemoteRunner", "RunResults", "Server"]
