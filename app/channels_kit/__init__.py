"""Deployment kit for Django Channels: channel layer, worker command, probes."""

__version__ = "0.1.0"
