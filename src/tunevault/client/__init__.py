"""Python client of tunevault and of any Together-compatible fine-tuning API."""

from __future__ import annotations

from tunevault.client.api import Client
from tunevault.client.config import ClientConfig
from tunevault.client.download import DownloadResult, download

__all__ = ["Client", "ClientConfig", "DownloadResult", "download"]
