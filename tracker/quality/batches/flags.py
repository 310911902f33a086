"""Flags QA must see on a batch: where open processing ran, and donor segregation.

* ``open_not_grade_a``: open (not closed-system) processing in a room that is not grade A
  (cell-therapy guideline 2022 / GMP Annex 1 第十三条: open operations in grade A).
* ``a_in_c``: open processing in a grade A zone whose background is grade C — the municipal
  pilots' entry floor (C级背景下的A级, regulatory.md §6.3, §10.2), below the guideline's A in B.
* ``a_background_below_c``: the same in a grade A zone with a D, unclassified or no background.
* ``segregation``: open steps of two different donors overlapping in time in the same room or
  anywhere in the same containment tree — a zone and the room around it share the air
  (guideline §6.4: do not process different donors' material together).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.facility.models import Room, containing_rooms
from tracker.quality.batches.models import Batch, ProcessStep


class FlagDoc(TypedDict):
    code: str
    step: int
    room: str
    other_batch: str | None
    message_zh: str
    message_en: str


@dataclass(frozen=True)
class Flag:
    code: str
    step_id: int
    room: str
    message_zh: str
    message_en: str
    other_batch: str | None = None

    def to_json(self) -> FlagDoc:
        return {
            "code": self.code,
            "step": self.step_id,
            "room": self.room,
            "other_batch": self.other_batch,
            "message_zh": self.message_zh,
            "message_en": self.message_en,
        }


def _overlap(a_start: datetime, a_end: datetime | None, b_start: datetime, b_end: datetime | None) -> bool:
    return (b_end is None or a_start < b_end) and (a_end is None or b_start < a_end)


def _tree_of(session: Session, room: Room) -> list[int]:
    """Every room sharing ``room``'s outermost containing room (the air it shares)."""
    from tracker.monitoring.reevaluate import rooms_within

    return [r.id for r in rooms_within(session, containing_rooms(session, room)[-1])]


def batch_flags(session: Session, batch: Batch) -> list[Flag]:
    steps = session.exec(
        select(ProcessStep)
        .where(ProcessStep.batch_id == batch.id)
        .order_by(ProcessStep.start, ProcessStep.id)
    ).all()
    flags: list[Flag] = []
    for step in steps:
        if not step.open_processing:
            continue
        room = session.get(Room, step.room_id)
        background = session.get(Room, room.background_id) if room.background_id else None
        if room.grade != "A":
            flags.append(
                Flag(
                    "open_not_grade_a",
                    step.id,
                    room.code,
                    f"开放操作在{room.grade}级区域（{room.code}）进行，不在A级",
                    f"open processing in grade {room.grade} ({room.code}), not in grade A",
                )
            )
        elif background is not None and background.grade == "C":
            flags.append(
                Flag(
                    "a_in_c",
                    step.id,
                    room.code,
                    f"开放操作在C级背景下的A级（{room.code}，背景 {background.code}），低于指南要求的B级背景",
                    f"open processing in grade A with a grade C background ({room.code} in "
                    f"{background.code}), below the guideline's grade B background",
                )
            )
        elif background is None or background.grade not in ("A", "B"):
            where = background.code if background else "—"
            grade = background.grade if background else "—"
            flags.append(
                Flag(
                    "a_background_below_c",
                    step.id,
                    room.code,
                    f"开放操作在背景为{grade}（{where}）的A级（{room.code}），低于C级背景",
                    f"open processing in grade A ({room.code}) with a background of grade "
                    f"{grade} ({where}), below even grade C",
                )
            )
        tree = _tree_of(session, room)
        others = session.exec(
            select(ProcessStep, Batch)
            .join(Batch, Batch.id == ProcessStep.batch_id)
            .where(
                ProcessStep.room_id.in_(tree),
                ProcessStep.open_processing,
                ProcessStep.batch_id != batch.id,
                Batch.donor_id != batch.donor_id,
                # only steps that can overlap in time (the check below stays the rule)
                or_(ProcessStep.end.is_(None), ProcessStep.end > step.start),
                *(() if step.end is None else (ProcessStep.start < step.end,)),
            )
        ).all()
        for other, other_batch in others:
            if _overlap(step.start, step.end, other.start, other.end):
                other_room = session.get(Room, other.room_id).code
                flags.append(
                    Flag(
                        "segregation",
                        step.id,
                        room.code,
                        f"与批次 {other_batch.number}（另一供者，{other_room}）同时进行开放操作",
                        f"open processing overlaps batch {other_batch.number} (another donor, "
                        f"in {other_room})",
                        other_batch=other_batch.number,
                    )
                )
    return flags
