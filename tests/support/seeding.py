"""Publishing a directory and building its archive through the normal path, for tests
and benchmarks that need a downloadable fine-tune."""

from __future__ import annotations

from pathlib import Path

from tunevault.models import Archive, FineTune, Kind, Scope
from tunevault.service.context import Services, open_services
from tunevault.service.publishing import publish_directory
from tunevault.service.worker import Worker
from tunevault.settings import Settings


def publish_and_build(
    svc: Services, ft: FineTune, src: Path, *, step: int = 1, kind: Kind = Kind.MODEL_OUTPUT
) -> Archive:
    """Commit src as the final checkpoint of ft and run the build jobs it queues."""
    ckpt = publish_directory(svc, ft, src, step=step, kind=kind, final=True)
    worker = Worker(svc)  # the builder the server runs, with the same settings
    while worker.run_once():
        pass
    archive = svc.store.get_archive(ckpt.id)
    assert archive is not None
    return archive


def seed_fine_tune(settings: Settings, src: Path) -> tuple[str, FineTune, Archive]:
    """A `bench` organization with a read key and one completed full fine-tune holding
    the files of src, built; returns (token, fine-tune, archive)."""
    with open_services(settings) as svc:
        org = svc.store.create_org("bench")
        _, token = svc.store.create_key(org.id, "bench", [Scope.READ])
        ft = svc.store.create_fine_tune(
            org.id,
            model="base",
            model_output_name="bench/big",
            training_type="Full",
            status="completed",
        )
        return token, ft, publish_and_build(svc, ft, src)
