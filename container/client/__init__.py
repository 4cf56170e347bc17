"""The host side: RemoteRunner, the proxies it hands back, and server start-up."""

from dacstyle.results import RunResults

from .channel import Channel
from .envfn import EnvFactory
from .proxies import RemoteEnvironment, RemoteObject
from .runner import RemoteRunner
from .server import Server
from .vector import RemoteVectorEnv

__all__ = ["Channel", "EnvFactory", "RemoteEnvironment", "RemoteObject", "RemoteRunner", "RemoteVectorEnv",
           "RunResults", "Server"]
