"""The download audit checked against what load clients saw answered, request by request.

Each client request carries `User-Agent: load-fault/<replica><life>/<n>` (a replica's
life counts its starts), which the audit row records, so every row is matched to the one
answer it records. A download answer (200/206) must have exactly one row, with its status,
or 499 when the client hung up or the connection broke mid-body (the server may also have
sent everything before it noticed, and then records the status). Only a life ended by
SIGKILL may lack rows: its downloads in flight at the kill (never answered from the
server's side) and the answers in the batch not yet written (operations.md, "Shutdown").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tunevault.metadata import MetadataStore
from tunevault.models import DownloadRecord

AGENT = "load-fault"
DOWNLOAD = (200, 206)


@dataclass
class Answer:
    """What one client request got: the replica life that answered, the status, and how
    the body ended: read whole, cut by the client, or broken (the connection failed)."""

    life: str
    status: int
    outcome: str = "broken"


@dataclass
class AuditCheck:
    answered: int = 0  # download answers (200/206) the clients saw
    rows: int = 0  # audit rows of the clients' requests
    rows_499: int = 0  # of which: recorded as "client went away"
    lost_to_kill: int = 0  # answered by a killed life, not yet written when it died
    in_flight_at_kill: int = 0  # body broken by the kill: never answered server-side
    other_rows: int = 0  # rows of other clients (the publish check's download)
    missing: list[str] = field(default_factory=list)  # answered by a live life, no row
    wrong: list[str] = field(default_factory=list)  # rows without their answer, or status

    def ok(self, other_downloads: int) -> bool:
        expected = self.answered - self.lost_to_kill - self.in_flight_at_kill
        return (
            not self.missing
            and not self.wrong
            and self.rows == expected
            and self.other_rows == other_downloads
        )


def all_rows(store: MetadataStore, org_id: str, page: int = 1000) -> Iterator[DownloadRecord]:
    before: int | None = None
    while batch := store.list_downloads(org_id, limit=page, before_id=before):
        yield from batch
        before = batch[-1].id


def _recorded(answer: Answer, row: DownloadRecord) -> bool:
    if answer.outcome == "whole":
        return row.status == answer.status
    return row.status in (499, answer.status)


def check_audit(
    rows: Iterable[DownloadRecord], answers: dict[str, Answer], killed: set[str]
) -> AuditCheck:
    """Match rows to answers by request id; `killed` names the lives ended by SIGKILL."""
    check = AuditCheck()
    seen: set[str] = set()
    for row in rows:
        agent = row.user_agent or ""
        if not agent.startswith(AGENT + "/"):
            check.other_rows += 1
            continue
        check.rows += 1
        check.rows_499 += row.status == 499
        rid = agent.removeprefix(AGENT + "/")
        answer = answers.get(rid)
        if rid in seen or answer is None or answer.status not in DOWNLOAD:
            check.wrong.append(f"{rid}: a row without a download answer")
        elif not _recorded(answer, row):
            check.wrong.append(
                f"{rid}: answered {answer.status} ({answer.outcome}), row {row.status}"
            )
        seen.add(rid)
    for rid, answer in answers.items():
        if answer.status not in DOWNLOAD:
            continue
        check.answered += 1
        if rid in seen:
            continue
        if answer.life not in killed:
            check.missing.append(f"{rid}: answered {answer.status} ({answer.outcome}), no row")
        elif answer.outcome == "broken":
            check.in_flight_at_kill += 1
        else:
            check.lost_to_kill += 1
    return check
