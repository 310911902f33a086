"""Validated backup and restore (``tracker backup``, ``tracker restore --verify``).

药品记录与数据管理要求（试行）(2020) asks that backups be made regularly, that restoring them be
validated and recorded, and that data stay readable through system change; GMP 2010 Art. 163
and the 计算机化系统附录 ask the same of computerised records. A backup here is

* a consistent copy: SQLite's online backup API (readers and the ingester keep running), or
  ``pg_dump --format=custom`` of an exported snapshot on PostgreSQL;
* a manifest taken from *that same* snapshot: the migration, the row count of every table,
  the audit chain's length and head, the SHA-256 of the copy, signed with the site key;
* an audit event (``backup.create``) in the live database carrying the manifest's digest.

A restore goes into a *new* database and proves it: the copy's digest, the manifest's
signature, the same migration, the same row counts, the audit chain intact with the same head,
and every anchor up to that head verified. The proof is recorded in the restored database
(``backup.restore``). Procedure and retention: docs/operations.md.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.anchors import check_anchor, read_anchors
from tracker.core.db import dispose_engine, get_engine, unit_of_work
from tracker.core.errors import InvalidInputError, Reason
from tracker.core.keys import keyring
from tracker.core.timeutil import iso_utc, utcnow

FORMAT = "gmp-tracker-backup/1"
MANIFEST = "manifest.json"


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore``: on the PATH, else the newest Debian server binaries."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise InvalidInputError(
            Reason(
                f"{name} is not installed (PostgreSQL client tools)",
                f"未安装 {name}（PostgreSQL 客户端工具）",
            )
        )
    return found


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and the environment that carries it (never argv)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def snapshot_facts(conn: Connection) -> dict:
    """Migration, row counts and audit chain as one transaction sees them."""
    names = sorted(inspect(conn).get_table_names())
    counts = {name: conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one() for name in names}
    migration = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    with Session(bind=conn) as session:
        chain = audit.check_chain(session)
        head = session.exec(
            select(audit.AuditEvent.id, audit.AuditEvent.hash).order_by(audit.AuditEvent.id.desc()).limit(1)
        ).first()
    return {
        "migration": migration,
        "row_counts": counts,
        "audit": {
            "count": chain.count,
            "intact": chain.intact,
            "head_id": head[0] if head else None,
            "head_hash": head[1] if head else audit.GENESIS,
        },
    }


def _sign(manifest: dict) -> dict:
    key_id, mac = keyring().mac(_canonical({k: v for k, v in manifest.items() if k != "signature"}))
    return {**manifest, "signature": {"key_id": key_id, "mac": mac}}


def create_backup(url: str, out: Path, *, actor: str, now: datetime | None = None) -> dict:
    """Write a backup of the database at ``url`` into the new directory ``out``; record it."""
    now = now or utcnow()
    if out.exists() and any(out.iterdir()):
        raise InvalidInputError(Reason(f"{out} exists already and is not empty", f"{out} 已存在且不为空"))
    out.mkdir(parents=True, exist_ok=True)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        copy = out / "database.sqlite"
        source = sqlite3.connect(parsed.database)
        target = sqlite3.connect(copy)
        try:
            with target:
                source.backup(target)  # the online backup API: a consistent copy while others write
        finally:
            target.close()
            source.close()
        copy_url = f"sqlite:///{copy}"
        try:
            with get_engine(copy_url).connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=DELETE")  # one self-contained file
                facts = snapshot_facts(conn)
        finally:
            dispose_engine(copy_url)
    elif backend == "postgresql":
        copy = out / "database.pgdump"
        engine = get_engine(url)
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            libpq, env = _libpq(parsed)
            done = subprocess.run(
                [pg_tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}", f"--file={copy}", libpq],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise InvalidInputError(
                    Reason(
                        f"pg_dump failed: {done.stderr.strip()[:500]}",
                        f"pg_dump 失败：{done.stderr.strip()[:500]}",
                    )
                )
            facts = snapshot_facts(conn)  # the snapshot pg_dump copied
            conn.rollback()
    else:
        raise InvalidInputError(Reason(f"no backup for {backend}", f"不支持备份 {backend} 数据库"))
    manifest = _sign(
        {
            "format": FORMAT,
            "backend": backend,
            "created_at": iso_utc(now),
            "created_by": actor,
            "file": {"path": copy.name, "sha256": _sha256(copy), "bytes": copy.stat().st_size},
            **facts,
        }
    )
    (out / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    with unit_of_work(get_engine(url)) as session:
        audit.record(
            session,
            actor=actor,
            action="backup.create",
            entity="backup",
            entity_key=out.name,
            after={
                "manifest_sha256": _sha256(out / MANIFEST),
                "file_sha256": manifest["file"]["sha256"],
                "audit_head": manifest["audit"]["head_hash"],
            },
            at=now,
        )
    return manifest


@dataclass
class RestoreCheck:
    """What a restore proved; ``problems`` empty: the copy is the database backed up."""

    target: str
    manifest: dict | None = None
    restored: dict | None = None
    anchors_checked: int = 0
    problems: list[Reason] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, en: str, zh: str) -> None:
        self.problems.append(Reason(en, zh))


def read_manifest(backup: Path, check: RestoreCheck) -> dict | None:
    try:
        manifest = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        check.fail(f"cannot read the backup manifest: {exc}", f"无法读取备份清单：{exc}")
        return None
    sig = manifest.get("signature") or {}
    body = _canonical({k: v for k, v in manifest.items() if k != "signature"})
    if manifest.get("format") != FORMAT or not keyring().check(
        sig.get("key_id", ""), body, sig.get("mac", "")
    ):
        check.fail(
            "the backup manifest's signature does not match (altered, or another site's key)",
            "备份清单签名不符（已被修改，或为其他场地的密钥）",
        )
        return None
    copy = backup / manifest["file"]["path"]
    if not copy.is_file() or _sha256(copy) != manifest["file"]["sha256"]:
        check.fail(
            f"{copy.name}: missing or its SHA-256 differs from the manifest",
            f"{copy.name}：缺失或 SHA-256 与清单不符",
        )
        return None
    return manifest


def _restore_copy(manifest: dict, backup: Path, target: str) -> None:
    parsed = make_url(target)
    copy = backup / manifest["file"]["path"]
    if parsed.get_backend_name() != manifest["backend"]:
        raise InvalidInputError(
            Reason(
                f"a {manifest['backend']} backup restores into {manifest['backend']} (docs/operations.md)",
                f"{manifest['backend']} 备份只能恢复到 {manifest['backend']}（见 docs/operations.md）",
            )
        )
    if manifest["backend"] == "sqlite":
        path = Path(parsed.database)
        if path.exists():
            raise InvalidInputError(
                Reason(
                    f"{path} exists: a restore goes into a new database", f"{path} 已存在：须恢复到新数据库"
                )
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copy, path)
        return
    libpq, env = _libpq(parsed)
    done = subprocess.run(
        [pg_tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={libpq}", str(copy)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise InvalidInputError(
            Reason(
                f"pg_restore failed: {done.stderr.strip()[:500]}",
                f"pg_restore 失败：{done.stderr.strip()[:500]}",
            )
        )


def restore_backup(
    backup: Path, target: str, *, actor: str, anchor_dir: Path | None = None, now: datetime | None = None
) -> RestoreCheck:
    """Restore ``backup`` into the new, empty database ``target`` (a SQLite file that does not
    exist yet, or an empty PostgreSQL database) and prove it is the database backed up."""
    check = RestoreCheck(target)
    manifest = read_manifest(backup, check)
    if manifest is None:
        return check
    check.manifest = manifest
    _restore_copy(manifest, backup, target)
    engine = get_engine(target)
    with engine.connect() as conn:
        restored = snapshot_facts(conn)
    check.restored = restored
    if restored["migration"] != manifest["migration"]:
        check.fail(
            f"migration {restored['migration']}, the backup was at {manifest['migration']}",
            f"迁移版本为 {restored['migration']}，备份时为 {manifest['migration']}",
        )
    for name in sorted(set(manifest["row_counts"]) | set(restored["row_counts"])):
        want, got = manifest["row_counts"].get(name), restored["row_counts"].get(name)
        if want != got:
            check.fail(
                f"table {name}: {got} rows, the backup had {want}", f"表 {name}：{got} 行，备份时为 {want} 行"
            )
    if not restored["audit"]["intact"]:
        check.fail("the restored audit chain does not verify", "恢复后的审计链校验不通过")
    for key in ("count", "head_id", "head_hash"):
        if restored["audit"][key] != manifest["audit"][key]:
            check.fail(
                f"audit chain {key}: {restored['audit'][key]}, the backup had {manifest['audit'][key]}",
                f"审计链 {key}：{restored['audit'][key]}，备份时为 {manifest['audit'][key]}",
            )
    head = manifest["audit"]["head_id"] or 0
    with Session(engine) as session:
        for found in read_anchors(anchor_dir) if anchor_dir else []:
            if found.anchor is None:
                check.fail(f"anchor {found.source}: {found.problem}", f"锚点 {found.source}：{found.problem}")
                continue
            if found.anchor.head_id > head:
                continue  # taken after the backup: not in it
            result = check_anchor(session, found.source, found.anchor)
            check.anchors_checked += 1
            if not result.ok:
                check.fail(
                    f"anchor {found.source}: {result.problem}", f"锚点 {found.source}：{result.problem}"
                )
    with unit_of_work(engine) as session:
        audit.record(
            session,
            actor=actor,
            action="backup.restore",
            entity="backup",
            entity_key=backup.name,
            after={
                "verified": check.ok,
                "problems": [str(p) for p in check.problems],
                "anchors_checked": check.anchors_checked,
                "file_sha256": manifest["file"]["sha256"],
                "audit_head": manifest["audit"]["head_hash"],
            },
            at=now or utcnow(),
        )
    return check
