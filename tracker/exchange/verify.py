"""Check exchange packages without the database (``tracker export verify``).

What a receiver can prove with the package, the schemas in this repository and the site key
(shared out of band, as for anchors): every file is the one the manifest lists (SHA-256, no
file added or missing), every record has the form its schema gives, the manifest was signed
with the site key, and — given the packages in order — each continues the one before
(``previous.manifest_sha256``, the next sequence number, the window starting where the last
one ended, the audit chain only growing), so a package or a record dropped between two of
them is found (Xiamen cell-industry regulation Art. 10 traceability; 药品记录与数据管理要求
（试行）on data kept complete and unaltered; docs/exchange.md).

This module must not touch the database: the import-linter contract ``exchange-verify``
keeps it away from every layer that does.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath

from jsonschema import Draft202012Validator, FormatChecker

from tracker.core.errors import InvalidInputError, Reason
from tracker.core.keys import keyring

FORMAT = "gmp-tracker-exchange/1"
MANIFEST = "manifest.json"


def canonical(value: object) -> bytes:
    """The bytes a manifest's signature covers (sorted keys, no spaces, UTF-8)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signed_body(manifest: dict) -> bytes:
    return canonical({k: v for k, v in manifest.items() if k != "signature"})


@cache
def schema(name: str) -> Draft202012Validator:
    """The validator of one record type (``tracker/exchange/schema/<name>.schema.json``)."""
    text = resources.files("tracker.exchange").joinpath("schema", f"{name}.schema.json").read_text("utf-8")
    return Draft202012Validator(json.loads(text), format_checker=FormatChecker())


def read_package(path: Path) -> dict[str, bytes]:
    """Every file of a package (a directory or a zip), by its path inside the package."""
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
        }
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    raise InvalidInputError(
        Reason(
            f"{path} is neither a package directory nor a zip file",
            f"{path} 既不是数据包目录也不是 zip 文件",
        )
    )


@dataclass
class PackageCheck:
    """The verdict on one package; ``problems`` empty: it checks."""

    source: str
    manifest: dict | None = None
    manifest_sha256: str = ""
    problems: list[Reason] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, en: str, zh: str) -> None:
        self.problems.append(Reason(en, zh))


def _safe(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts


def verify_package(path: Path, previous: PackageCheck | None = None) -> PackageCheck:
    """Check one package; ``previous``: the check of the package it should continue."""
    check = PackageCheck(str(path))
    try:
        files = read_package(path)
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:  # a damaged zip
        check.fail(f"cannot read the package: {exc}", f"无法读取数据包：{exc}")
        return check
    raw = files.pop(MANIFEST, None)
    if raw is None:
        check.fail("no manifest.json", "缺少 manifest.json")
        return check
    check.manifest_sha256 = hashlib.sha256(raw).hexdigest()
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        check.fail(f"manifest.json is not JSON: {exc}", f"manifest.json 不是有效的 JSON：{exc}")
        return check
    check.manifest = manifest
    errors = sorted(schema("manifest").iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        for e in errors[:5]:
            where = "/".join(map(str, e.path)) or "(root)"
            check.fail(f"manifest.json {where}: {e.message}", f"manifest.json {where}：{e.message}")
        return check
    signature = manifest["signature"]
    if not keyring().check(signature["key_id"], signed_body(manifest), signature["mac"]):
        check.fail(
            "the manifest's signature does not match: altered, or signed with a key this verifier does not hold",
            "清单签名不符：已被修改，或签名密钥不是本验证方持有的密钥",
        )
    listed = {entry["path"]: entry for entry in manifest["files"]}
    for name in sorted(set(files) - set(listed)):
        check.fail(f"{name}: not listed in the manifest", f"{name}：未列入清单")
    for name, entry in sorted(listed.items()):
        data = files.get(name)
        if not _safe(name) or data is None:
            check.fail(f"{name}: listed in the manifest but missing", f"{name}：清单中列出但缺失")
            continue
        if hashlib.sha256(data).hexdigest() != entry["sha256"] or len(data) != entry["bytes"]:
            check.fail(f"{name}: its SHA-256 is not the one in the manifest", f"{name}：SHA-256 与清单不符")
            continue
        if entry["type"]:
            _check_records(check, name, entry, data)
    if previous is not None:
        _check_chain(check, previous)
    return check


def _check_records(check: PackageCheck, name: str, entry: dict, data: bytes) -> None:
    validator = schema(entry["type"])
    lines = data.decode("utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            check.fail(f"{name} line {number}: not JSON", f"{name} 第 {number} 行：不是有效的 JSON")
            return
        error = next(iter(validator.iter_errors(record)), None)
        if error is not None:
            where = "/".join(map(str, error.path)) or "(root)"
            check.fail(
                f"{name} line {number} {where}: {error.message}",
                f"{name} 第 {number} 行 {where}：{error.message}",
            )
            return
    if len(lines) != entry["records"]:
        check.fail(
            f"{name}: {len(lines)} records, the manifest lists {entry['records']}",
            f"{name}：{len(lines)} 条记录，清单为 {entry['records']} 条",
        )
    check.records[entry["type"]] = len(lines)


def _check_chain(check: PackageCheck, previous: PackageCheck) -> None:
    """This package continues ``previous``: nothing between them can have been left out."""
    m, p = check.manifest, previous.manifest
    if m is None or p is None:
        return
    link = m["previous"]
    if link is None or link["manifest_sha256"] != previous.manifest_sha256:
        check.fail(
            f"does not continue {previous.source}: its previous manifest is another one "
            "(a package between them is missing, or the chain was rebuilt)",
            f"未接续 {previous.source}：其所指的上一份清单不同（中间缺少数据包，或链被重建）",
        )
        return
    if m["sequence"] != p["sequence"] + 1 or link["sequence"] != p["sequence"]:
        check.fail(
            f"sequence {m['sequence']} does not follow {p['sequence']}",
            f"序号 {m['sequence']} 未接续 {p['sequence']}",
        )
    if m["window"]["from"] != p["window"]["to"] or link["to"] != p["window"]["to"]:
        check.fail(
            f"its window starts at {m['window']['from']}, the previous one ended at {p['window']['to']}",
            f"时间窗从 {m['window']['from']} 开始，上一份截至 {p['window']['to']}",
        )
    if m["site"] != p["site"]:
        check.fail("another site than the previous package", "与上一份数据包的场地不同")
    if m["audit"]["count"] < p["audit"]["count"]:
        check.fail(
            "the audit chain it was cut at is shorter than the previous package's",
            "其截取时的审计链比上一份数据包的短",
        )


def verify_series(paths: list[Path]) -> list[PackageCheck]:
    """Check packages given in order, each against the one before it."""
    checks: list[PackageCheck] = []
    for path in paths:
        checks.append(verify_package(path, checks[-1] if checks else None))
    return checks
