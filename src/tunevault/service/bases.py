"""Base models of LoRA fine-tunes: a merge needs its base in the store, so publishing checks.

A LoRA fine-tune names its base model; unless it says the base lives elsewhere
(`external_base`), the base must be registered before anything is published, so that a
merged model listed is a merged model that can be built.
"""

from __future__ import annotations

from tunevault.errors import BaseModelNotFound
from tunevault.metadata import MetadataStore


def unregistered_base_message(model: str) -> str:
    return (
        f"base model {model!r} is not registered; register it first with "
        f"`tunevault base push {model} DIR` (DIR: the base model's directory), or publish "
        "with external_base (tunevault push --external-base) if the base lives elsewhere "
        "and no merged model is wanted"
    )


def require_base(store: MetadataStore, org_id: str, model: str) -> None:
    """Refuse (404 base_model_not_found) a base model the organization has not registered."""
    if store.get_base_model(org_id, model) is None:
        raise BaseModelNotFound(unregistered_base_message(model), param="model")
