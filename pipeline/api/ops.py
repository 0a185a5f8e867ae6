"""Operations routes (admin key): queue depths, poisoned messages, failed images, replay.

The same functions as `python -m pipeline status|failed|poison` (pipeline.engine.operations), so the
page's operations view and the CLI cannot disagree.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from pipeline.api.deps import AdminDep, services
from pipeline.api.errors import responses
from pipeline.engine import operations
from pipeline.engine.operations import PoisonEntry

router = APIRouter(prefix="/api/ops", responses=responses(401, 403, 429))


class QueueDepth(BaseModel):
    step: str
    lane: str
    queue: str
    depth: int | None = Field(description="Approximate messages waiting (None: unreadable).")
    poison_queue: str
    poison: int | None = Field(description="Approximate messages in the poison queue.")


class QueueList(BaseModel):
    queues: list[QueueDepth]


class FailedImage(BaseModel):
    id: str
    name: str | None
    status: str = Field(description="failed, rejected, or poisoned (message in poison).")
    step: str | None
    reason: str | None
    updated_at: str | None


class FailedList(BaseModel):
    items: list[FailedImage]


class PoisonList(BaseModel):
    items: list[PoisonEntry]  # the CLI's record (`python -m pipeline poison list --json`)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: str | None = Field(None, max_length=64, description="Only this step's poison queues.")
    image: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="Only this image.")


class ReplayResult(BaseModel):
    replayed: int
    skipped: int
    unreadable: int


@router.get("/queues", response_model=QueueList, summary="Queue and poison queue depths")
def queues(caller: AdminDep) -> QueueList:
    return QueueList(queues=operations.queue_depths(services().azure))


@router.get("/failed", response_model=FailedList, summary="Failed, rejected and poisoned images")
def failed(caller: AdminDep) -> FailedList:
    svc = services()
    return FailedList(items=operations.failed_images(svc.store, azure=svc.azure))


@router.get("/poison", response_model=PoisonList, summary="Messages in the poison queues")
def poison(caller: AdminDep) -> PoisonList:
    svc = services()
    entries = operations.poison_messages(svc.azure, svc.store)
    return PoisonList(items=list(entries))


@router.post("/replay", response_model=ReplayResult, summary="Send poisoned messages back")
def replay(body: ReplayRequest, caller: AdminDep) -> ReplayResult:
    svc = services()
    counts = operations.replay_poison(svc.azure, svc.store, step=body.step, image=body.image)
    return ReplayResult(**counts)
