"""The host side: RemoteRunner, the proxies it hands back, and server start-up."""

from .channel import Channel
from .proxies import RemoteEnvironment, RemoteObject
from .runner import RemoteRunner, RunResults
from .server import Server

__all__ = ["Channel", "RemoteEnvironment", "RemoteObject", "RemoteRunner", "RunResults", "Server"]
