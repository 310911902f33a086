"""Cut an exchange package: records, limit sets, a signed manifest (``tracker export``).

Guangdong's whole-lifecycle cell data platform and the Nanning pilot rules (Art. 13–15) ask a
centre for complete data a receiver can verify as true (存证); no interface is published yet,
so the package is a documented, versioned format (``docs/exchange.md``) checked by
:mod:`tracker.exchange.verify`.

The cut happens in the caller's unit of work: the reads of personal data are logged, an
``exchange.export`` event records the digest of every file, and an anchor seals the audit
chain including it; the manifest names that head and anchor and is signed with the site key.
The caller writes the files (and the anchor file) after its commit, so a package never names a
head that was rolled back.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.anchors import Anchor, take_anchor
from tracker.core.classification import REVEAL_ROLE
from tracker.core.errors import InvalidInputError, Reason
from tracker.core.keys import keyring
from tracker.core.pseudonyms import identity_key
from tracker.core.timeutil import iso_utc, parse_instant, utcnow
from tracker.exchange.records import TYPES, Reader
from tracker.exchange.verify import FORMAT, MANIFEST, read_package, signed_body
from tracker.facility.limits import LIMIT_SET_FILES
from tracker.facility.models import get_site
from tracker.identity.users import Authenticated, require_role
from tracker.quality.batches.identity import MIN_REASON, record_read
from tracker.quality.batches.models import Batch


@dataclass(frozen=True)
class Built:
    """A cut package in memory: its files (manifest included), manifest and anchor."""

    files: dict[str, bytes]
    manifest: dict
    anchor: Anchor

    def write(self, out: Path) -> Path:
        """Write the package as a directory, or as a zip when ``out`` ends in ``.zip``; never
        over an existing package."""
        if out.exists() and (out.is_file() or any(out.iterdir())):
            raise InvalidInputError(
                Reason(
                    f"{out} exists already: a package is never overwritten", f"{out} 已存在：数据包不会被覆盖"
                )
            )
        if out.suffix == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(self.zip_bytes())
            return out
        for name, data in self.files.items():
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return out

    def zip_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in sorted(self.files.items()):
                archive.writestr(name, data)
        return buffer.getvalue()

    @property
    def name(self) -> str:
        m = self.manifest
        return f"{m['site']}-exchange-{m['sequence']:04d}-{m['window']['to'][:10]}"


def _line(record: dict) -> bytes:
    return (json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _redactor(session: Session, site_id: int):
    """Replace any clear donor or patient identifier of the site found in free text (a deviation
    description, a comment) by its pseudonym: a package for a receiver not authorised for
    clear values must not carry one anywhere (GB/T 39725-2020 §6)."""
    key = identity_key()
    pairs: dict[str, str] = {}
    rows = session.exec(
        select(Batch.donor_id, Batch.donor_enc, Batch.patient_id, Batch.patient_enc).where(
            Batch.site_id == site_id
        )
    ).all()
    for donor_ref, donor_enc, patient_ref, patient_enc in rows:
        if donor_enc:
            pairs[key.decrypt(donor_enc)] = donor_ref
        if patient_enc and patient_ref:
            pairs[key.decrypt(patient_enc)] = patient_ref
    if not pairs:
        return lambda text: text
    pattern = re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(c) for c in sorted(pairs, key=len, reverse=True)) + r")(?![\w-])"
    )
    return lambda text: pattern.sub(lambda m: pairs[m.group(1)], text)


def load_previous(path: Path) -> tuple[dict, str]:
    """The manifest of the package a new one continues, and its SHA-256."""
    files = read_package(path)
    raw = files.get(MANIFEST)
    if raw is None:
        raise InvalidInputError(Reason(f"{path} has no manifest.json", f"{path} 没有 manifest.json"))
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


def build_package(
    session: Session,
    *,
    actor: Authenticated,
    start: datetime | None,
    end: datetime,
    receiver: str,
    site_code: str | None = None,
    previous: Path | None = None,
    readings: bool = False,
    clear: bool = False,
    reason: str | None = None,
    now: datetime | None = None,
) -> Built:
    """Cut the package of ``[start, end)`` for ``receiver`` (QA). ``previous``: the package this
    one continues (``start`` defaults to its end and must equal it); ``clear``: donor and patient
    identifiers in clear, for a receiver authorised for them — needs ``identity_reveal`` and a
    reason, and is recorded as a reveal."""
    require_role(actor, "qa", action=Reason("cutting an exchange package", "导出交换数据包"))
    now = now or utcnow()
    receiver = (receiver or "").strip()
    if not receiver or len(receiver) > 120:
        raise InvalidInputError(
            Reason(
                "name the receiver of the package (1–120 characters)", "请填写数据包的接收方（1–120 个字符）"
            )
        )
    site = get_site(session, site_code)
    link = None
    sequence = 1
    if previous is not None:
        prev, prev_sha = load_previous(previous)
        if prev.get("site") != site.code:
            raise InvalidInputError(
                Reason(f"{previous} is a package of another site", f"{previous} 是其他场地的数据包")
            )
        prev_end = parse_instant(prev["window"]["to"])
        if start is not None and start != prev_end:
            raise InvalidInputError(
                Reason(
                    f"an incremental package starts where the previous one ended ({prev['window']['to']})",
                    f"增量数据包须从上一份的截止时间（{prev['window']['to']}）开始",
                )
            )
        start, sequence = prev_end, prev["sequence"] + 1
        link = {"manifest_sha256": prev_sha, "sequence": prev["sequence"], "to": prev["window"]["to"]}
    if start is None:
        raise InvalidInputError(
            Reason(
                "give the start of the window (--from) or the previous package",
                "请给出时间窗起点（--from）或上一份数据包",
            )
        )
    if end <= start or end > now:
        raise InvalidInputError(
            Reason(
                "the window must end after it starts and not in the future",
                "时间窗的结束须晚于开始，且不能在将来",
            )
        )
    if clear:
        require_role(actor, REVEAL_ROLE, action=Reason("exporting clear identifiers", "导出明文编号"))
        if len((reason or "").strip()) < MIN_REASON:
            raise InvalidInputError(
                Reason(
                    f"exporting clear identifiers needs a reason of at least {MIN_REASON} characters",
                    f"导出明文编号须填写至少 {MIN_REASON} 个字符的理由",
                )
            )
    reader = Reader(session, site, start, end, clear=clear)
    redact = (lambda text: text) if clear else _redactor(session, site.id)
    files: dict[str, bytes] = {}
    entries = []
    for kind in TYPES:
        if kind == "reading" and not readings:
            continue
        records = list(getattr(reader, kind)())
        data = b"".join(redact(_line(r).decode()).encode() for r in records)
        path = f"records/{kind}.jsonl"
        files[path] = data
        entries.append({"path": path, "type": kind, "records": len(records)})
    for filename in sorted(LIMIT_SET_FILES.values()):
        path = f"limitsets/{filename}"
        files[path] = resources.files("tracker.data.limitsets").joinpath(filename).read_bytes()
        entries.append({"path": path, "type": None, "records": None})
    for entry in entries:
        data = files[entry["path"]]
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))

    window = {"from": iso_utc(start), "to": iso_utc(end)}
    record_read(session, actor=actor.username, via="export", batches=reader.batches)
    audit.record(
        session,
        actor=actor.username,
        action="exchange.export",
        entity="exchange",
        entity_key=f"{site.code}#{sequence}",
        after={
            "receiver": receiver,
            "identifiers": "clear" if clear else "pseudonym",
            "window": window,
            "previous": link,
            "files": {e["path"]: e["sha256"] for e in entries},
        },
        reason=(reason or "").strip() or None,
        at=now,
    )
    if clear:
        audit.record(
            session,
            actor=actor.username,
            action="identity.reveal",
            entity="exchange",
            entity_key=f"{site.code}#{sequence}",
            after={
                "via": "export",
                "batches": [b.number for b in reader.batches],
                "donors": sorted({b.donor_id for b in reader.batches}),
                "receiver": receiver,
            },
            reason=reason.strip() if reason else None,
            at=now,
        )
    anchor = take_anchor(session, actor=actor.username, now=now)
    manifest = {
        "format": FORMAT,
        "site": site.code,
        "site_name": site.name,
        "window": window,
        "created_at": iso_utc(now),
        "created_by": actor.username,
        "receiver": {"name": receiver, "identifiers": "clear" if clear else "pseudonym"},
        "sequence": sequence,
        "previous": link,
        "audit": {
            "head_id": anchor.head_id,
            "head_hash": anchor.head_hash,
            "count": anchor.count,
            "anchor": {
                "format": anchor.format,
                "head_id": anchor.head_id,
                "head_hash": anchor.head_hash,
                "count": anchor.count,
                "at": anchor.at,
                "key_id": anchor.key_id,
                "mac": anchor.mac,
            },
        },
        "files": entries,
    }
    key_id, mac = keyring().mac(signed_body(manifest))
    manifest["signature"] = {"key_id": key_id, "mac": mac}
    files[MANIFEST] = (json.dumps(manifest, sort_keys=True, ensure_ascii=False, indent=2) + "\n").encode()
    return Built(files=files, manifest=manifest, anchor=anchor)
