"""Typed calls for the read routes (and delete/cancel) of a Together-compatible server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tunevault.client.config import ClientConfig
from tunevault.client.http import Transport
from tunevault.client.retry import Backoff


@dataclass(frozen=True)
class FineTuneInfo:
    id: str
    status: str
    model: str
    model_output_name: str
    training_type: str
    created_at: str
    raw: dict[str, Any]  # the whole object, for fields this client does not model

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> FineTuneInfo:
        tt = obj.get("training_type")
        return cls(
            id=str(obj["id"]),
            status=str(obj.get("status", "")),
            model=str(obj.get("model", "")),
            model_output_name=str(obj.get("model_output_name") or ""),
            training_type=str(tt.get("type", "")) if isinstance(tt, dict) else "",
            created_at=str(obj.get("created_at", "")),
            raw=obj,
        )


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    checkpoint_type: str  # "Intermediate", "Final", "Final Adapter", "Final Merged"
    checkpoint: str  # "adapter" or "model"
    path: str
    created_at: str

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> CheckpointInfo:
        return cls(
            step=int(obj.get("step", 0)),
            checkpoint_type=str(obj.get("checkpoint_type", "")),
            checkpoint=str(obj.get("checkpoint", "")),
            path=str(obj.get("path", "")),
            created_at=str(obj.get("created_at", "")),
        )


def _data(body: Any) -> list[dict[str, Any]]:
    items = body.get("data") if isinstance(body, dict) else None
    return [x for x in items if isinstance(x, dict)] if isinstance(items, list) else []


class Client:
    """`Client()` reads TUNEVAULT_URL/TUNEVAULT_API_KEY (or TOGETHER_BASE_URL/TOGETHER_API_KEY)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        config: ClientConfig | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config or ClientConfig.resolve(url, api_key)
        self.transport = Transport(self.config, timeout=timeout, backoff=backoff)

    def _ft(self, ft_id: str, suffix: str = "") -> str:
        return f"/v1/fine-tunes/{quote(ft_id, safe='')}{suffix}"

    def list_fine_tunes(self) -> list[FineTuneInfo]:
        body = self.transport.json("GET", "/v1/fine-tunes")
        return [FineTuneInfo.parse(x) for x in _data(body)]

    def get_fine_tune(self, ft_id: str) -> FineTuneInfo:
        return FineTuneInfo.parse(self.transport.json("GET", self._ft(ft_id)))

    def list_checkpoints(self, ft_id: str) -> list[CheckpointInfo]:
        body = self.transport.json("GET", self._ft(ft_id, "/checkpoints"))
        return [CheckpointInfo.parse(x) for x in _data(body)]

    def list_events(self, ft_id: str) -> list[dict[str, Any]]:
        return _data(self.transport.json("GET", self._ft(ft_id, "/events")))

    def metrics(
        self, ft_id: str, *, step_from: int | None = None, step_to: int | None = None
    ) -> list[dict[str, Any]]:
        params = {
            k: v
            for k, v in (("global_step_from", step_from), ("global_step_to", step_to))
            if v is not None
        }
        body = self.transport.json("GET", self._ft(ft_id, "/metrics"), params or None)
        rows = body.get("metrics") if isinstance(body, dict) else None
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def delete_fine_tune(self, ft_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.transport.json("DELETE", self._ft(ft_id))
        return body

    def cancel_fine_tune(self, ft_id: str) -> FineTuneInfo:
        return FineTuneInfo.parse(self.transport.json("POST", self._ft(ft_id, "/cancel")))

    def whoami(self) -> dict[str, Any]:
        body: dict[str, Any] = self.transport.json("GET", "/v3/whoami")
        return body
