"""Adapters from dacstyle's proxies to other libraries' interfaces, each behind its optional extra."""
