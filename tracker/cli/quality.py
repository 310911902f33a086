"""``tracker user|batch|step|link|deviation|capa``: thin commands over the quality services.

Every command that changes a GMP record names its user (``--as``) and authenticates: the
password comes from a hidden prompt, from the first line of stdin with ``--password-stdin``
(scripts), or from ``TRACKER_PASSWORD``. The command line is never a continuous session, so
each signing command re-authenticates with both components (21 CFR 11.200(a)(1)(ii)).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.table import Table
from sqlmodel import Session

from tracker.cli.common import (
    AsOpt,
    DbOpt,
    JsonOpt,
    PwStdin,
    cli_reader,
    console,
    engine_for,
    print_json,
)
from tracker.cli.common import (
    login_cli as _login,
)
from tracker.cli.common import (
    password_from as _password,
)
from tracker.core.db import unit_of_work
from tracker.core.i18n import t
from tracker.core.timeutil import local_display, parse_instant, utcnow

user_app = typer.Typer(help="Users and roles (用户与角色).", no_args_is_help=True)
batch_app = typer.Typer(help="Batch records (批生产记录): sign-off chain and release.", no_args_is_help=True)
step_app = typer.Typer(help="Process steps of a batch (工序).", no_args_is_help=True)
link_app = typer.Typer(help="Excursion ↔ batch-step exposure links for QA to decide.", no_args_is_help=True)
deviation_app = typer.Typer(help="Deviations (偏差) from excursions or by hand.", no_args_is_help=True)
capa_app = typer.Typer(help="CAPA actions (纠正预防措施) of a deviation.", no_args_is_help=True)
limits_app = typer.Typer(
    help="Data-driven alert/action levels: propose, approve (e-signature), reject.", no_args_is_help=True
)

SiteOpt = Annotated[str | None, typer.Option("--site", help="site code (when several)")]
CommentOpt = Annotated[str | None, typer.Option(help="comment recorded with the signature")]


def _site(session: Session, code: str | None):
    from tracker.facility.models import get_site

    return get_site(session, code)


def _at(text: str | None):
    return parse_instant(text) if text else utcnow()


# -- users ----------------------------------------------------------------------------------------


@user_app.command("create")
def user_create(
    username: str,
    name: Annotated[str, typer.Option("--name", help="full name, printed with every signature")],
    person: Annotated[
        str, typer.Option("--person", help="the person's identifier (employee number); one person, one id")
    ],
    role: Annotated[
        list[str], typer.Option("--role", help="operator, production_head, qa, qp, admin, viewer (repeat)")
    ],
    as_: Annotated[
        str | None,
        typer.Option("--as", help="admin creating the account; omit only for the very first admin"),
    ] = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Create an account. The first account is an admin created explicitly; there is no default.
    Signing roles wait for QA's approval (tracker user approve-roles)."""
    from tracker.identity.users import create_user

    actor = _login(db, as_, password_stdin) if as_ else None
    password = _password(f"{t('password')} ({username}, new)", password_stdin, env=False, confirm=True)
    with unit_of_work(engine_for(db)) as session:
        user = create_user(
            session,
            username=username,
            full_name=name,
            person=person,
            roles=role,
            password=password,
            actor=actor,
        )
        in_force = user.roles
    asked = sorted(set(role) - set(in_force.split(",")))
    console.print(
        f"{t('user')} {username} ({', '.join(t(r) for r in in_force.split(',') if r) or '-'})"
        + (f"; {t('awaiting_qa')}: {', '.join(t(r) for r in asked)}" if asked else "")
    )


@user_app.command("list")
def user_list(json_out: JsonOpt = False, db: DbOpt = None) -> None:
    from tracker.identity.users import list_users

    with unit_of_work(engine_for(db)) as session:
        rows = list_users(session)
    if json_out:
        print_json(rows)
        return
    table = Table(title=t("user"))
    for key in ("user", "full_name", "person", "roles", "active", "failed_logins", "enrolled"):
        table.add_column(t(key))
    for r in rows:
        asked = f" ({t('awaiting_qa')}: {r['pending_roles']})" if r["pending_roles"] else ""
        table.add_row(
            r["username"],
            r["full_name"],
            r["person"],
            ", ".join(t(x) for x in r["roles"].split(",") if x) + asked,
            t("yes") if r["active"] else t("no"),
            (f"{r['failed_attempts']} !" if r["alert"] else str(r["failed_attempts"] or "")),
            t("yes") if r["enrolled"] else "",
        )
    console.print(table)


@user_app.command("passwd")
def user_passwd(as_: AsOpt, password_stdin: PwStdin = False, db: DbOpt = None) -> None:
    """Change your own password (current password first, then the new one)."""
    from tracker.identity.users import change_password

    actor = _login(db, as_, password_stdin)
    new = _password(f"{t('password')} (new)", password_stdin, env=False, confirm=True)
    with unit_of_work(engine_for(db)) as session:
        change_password(session, actor=actor, new_password=new)
    console.print("password changed")


def _admin_change(fn, username: str, as_: str, password_stdin: bool, db: str | None, **kwargs) -> None:
    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        fn(session, actor=actor, username=username, **kwargs)
    console.print(f"{fn.__name__}: {username}")


@user_app.command("deactivate")
def user_deactivate(
    username: str,
    reason: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Deactivate an account (never deleted: its signatures keep their name)."""
    from tracker.identity.users import deactivate

    _admin_change(deactivate, username, as_, password_stdin, db, reason=reason)


@user_app.command("clear-failures")
def user_clear_failures(
    username: str,
    reason: Annotated[str, typer.Option(help="what the administrator found")],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Clear an account's count of failed logins after looking into it (accounts never lock)."""
    from tracker.identity.users import clear_failures

    _admin_change(clear_failures, username, as_, password_stdin, db, reason=reason)


@user_app.command("roles")
def user_roles(
    username: str,
    role: Annotated[list[str], typer.Option("--role")],
    reason: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Replace a user's roles."""
    from tracker.identity.users import set_roles

    _admin_change(set_roles, username, as_, password_stdin, db, roles=role, reason=reason)


@user_app.command("requests")
def user_requests(json_out: JsonOpt = False, db: DbOpt = None) -> None:
    """Signing roles asked for by an admin and awaiting QA's approval."""
    from tracker.identity.grants import role_requests

    with unit_of_work(engine_for(db)) as session:
        rows = role_requests(session)
    if json_out:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"{r['id']}: {r['username']} ({r['full_name']}, {r['person']}) → {r['roles']} "
            f"· {r['requested_by']} · {r['reason']}"
        )


@user_app.command("approve-roles")
def user_approve_roles(
    grant: int, as_: AsOpt, comment: CommentOpt = None, password_stdin: PwStdin = False, db: DbOpt = None
) -> None:
    """QA approves a role request with an e-signature (another person than who asked and who gets it)."""
    from tracker.identity.grants import approve_roles

    signer = _login(db, as_, password_stdin, signing=True)
    with unit_of_work(engine_for(db)) as session:
        user = approve_roles(session, signer=signer, grant_id=grant, comment=comment)
        roles = user.roles
    console.print(f"{t('user')}: {roles}")


@user_app.command("bootstrap-qa")
def user_bootstrap_qa(grant: int, as_: AsOpt, password_stdin: PwStdin = False, db: DbOpt = None) -> None:
    """At installation only: an admin approves the site's first QA account (nobody from QA exists yet)."""
    from tracker.identity.grants import bootstrap_roles

    admin = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        user = bootstrap_roles(session, admin=admin, grant_id=grant)
        roles = user.roles
    console.print(f"{t('user')}: {roles}")


@user_app.command("enrol")
def user_enrol(
    as_: AsOpt,
    witness: Annotated[str, typer.Option("--witness", help="a QA person who confirms who you are")],
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Set your own password before a witness: from then on you may sign and record GMP work.
    Asks (or reads from stdin, one a line) your current password, the witness's, then the new one."""
    from tracker.identity.users import enrol

    owner = _login(db, as_, password_stdin, signing=True)
    seen = _login(db, witness, password_stdin, signing=True)
    new = _password(f"{t('password')} (new)", password_stdin, env=False, confirm=True)
    with unit_of_work(engine_for(db)) as session:
        enrol(session, owner=owner, witness=seen, new_password=new)
    console.print(f"{as_}: {t('enrolled')} ({witness})")


@user_app.command("reset-password")
def user_reset(
    username: str,
    reason: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """An admin sets a new password for someone who forgot theirs."""
    from tracker.identity.users import set_password

    actor = _login(db, as_, password_stdin)
    new = _password(f"{t('password')} ({username}, new)", password_stdin, env=False, confirm=True)
    with unit_of_work(engine_for(db)) as session:
        set_password(session, actor=actor, username=username, new_password=new, reason=reason)
    console.print(f"password reset: {username}")


# -- batches and steps ----------------------------------------------------------------------------


@batch_app.command("create")
def batch_create(
    number: str,
    product: Annotated[str, typer.Option()],
    donor: Annotated[str, typer.Option(help="donor identifier (chain of identity)")],
    as_: AsOpt,
    patient: Annotated[str | None, typer.Option()] = None,
    site: SiteOpt = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Open a batch record."""
    from tracker.quality.batches.steps import create_batch

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        create_batch(
            session,
            actor=actor,
            site=_site(session, site),
            number=number,
            product=product,
            donor_id=donor,
            patient_id=patient,
        )
    console.print(f"{t('batch')} {number}: {t('in_progress')}")


@step_app.command("start")
def step_start(
    batch: str,
    name: Annotated[str, typer.Option()],
    room: Annotated[str, typer.Option(help="room or grade A zone code")],
    open_processing: Annotated[
        bool, typer.Option("--open/--closed", help="open (aseptic) or closed processing")
    ],
    as_: AsOpt,
    at: Annotated[str | None, typer.Option(help="ISO 8601; default now")] = None,
    late_reason: Annotated[str | None, typer.Option(help="why it is recorded late")] = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Record that you started a step; the room (and the rooms around it) go in operation."""
    from tracker.quality.batches.steps import get_batch, start_step

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        step = start_step(
            session,
            actor=actor,
            batch=get_batch(session, batch),
            name=name,
            room_code=room,
            start=_at(at),
            open_processing=open_processing,
            late_reason=late_reason,
        )
    console.print(f"{t('step')} {step.id}: {name} @ {room}")


@step_app.command("end")
def step_end(
    step_id: int,
    as_: AsOpt,
    at: Annotated[str | None, typer.Option(help="ISO 8601; default now")] = None,
    comment: CommentOpt = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """End your step and sign it as performed (e-signature)."""
    from tracker.quality.batches.steps import end_step

    signer = _login(db, as_, password_stdin, signing=True)
    with unit_of_work(engine_for(db)) as session:
        end_step(session, signer=signer, step_id=step_id, end=_at(at), comment=comment)
    console.print(f"{t('step')} {step_id}: {t('performed')} ({as_})")


@batch_app.command("complete")
def batch_complete(number: str, as_: AsOpt, password_stdin: PwStdin = False, db: DbOpt = None) -> None:
    from tracker.quality.batches.steps import complete_batch, get_batch

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        complete_batch(session, actor=actor, batch=get_batch(session, number))
    console.print(f"{t('batch')} {number}: {t('completed')}")


def _signed_transition(fn, number: str, as_: str, password_stdin: bool, db: str | None, **kwargs) -> None:
    from tracker.quality.batches.steps import get_batch

    signer = _login(db, as_, password_stdin, signing=True)
    with unit_of_work(engine_for(db)) as session:
        batch = fn(session, signer=signer, batch=get_batch(session, number), **kwargs)
    console.print(f"{t('batch')} {number}: {t(batch.status)} ({as_})")


@batch_app.command("sign")
def batch_sign(
    number: str, as_: AsOpt, comment: CommentOpt = None, password_stdin: PwStdin = False, db: DbOpt = None
) -> None:
    """Production head approves the completed batch record (e-signature)."""
    from tracker.quality.batches.release import sign_production

    _signed_transition(sign_production, number, as_, password_stdin, db, comment=comment)


@batch_app.command("review")
def batch_review(
    number: str, as_: AsOpt, comment: CommentOpt = None, password_stdin: PwStdin = False, db: DbOpt = None
) -> None:
    """QA review (e-signature); refused with the reasons while the gate is closed."""
    from tracker.quality.batches.release import qa_review

    _signed_transition(qa_review, number, as_, password_stdin, db, comment=comment)


@batch_app.command("release")
def batch_release(
    number: str,
    as_: AsOpt,
    comment: CommentOpt = None,
    conditional_reason: Annotated[
        str | None,
        typer.Option(help="release while viable results are still open: why (shelf life, clinical need)"),
    ] = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QP release (e-signature); refused with the reasons while the gate is closed. With
    --conditional-reason, a conditional release over open viable samples (docs/viable.md)."""
    from tracker.quality.batches.release import release

    _signed_transition(
        release, number, as_, password_stdin, db, comment=comment, conditional_reason=conditional_reason
    )


@batch_app.command("viable-review")
def batch_viable_review(
    number: str,
    outcome: Annotated[str, typer.Option(help="acceptable | deviation")],
    assessment: Annotated[str, typer.Option(help="QA's or the QP's assessment of the results")],
    as_: AsOpt,
    deviation: Annotated[str | None, typer.Option(help="the deviation number (outcome deviation)")] = None,
    patient_impact: Annotated[
        str | None, typer.Option(help="impact on the patient (outcome deviation)")
    ] = None,
    patient_informed: Annotated[
        str | None, typer.Option(help="how the patient's physician was informed (outcome deviation)")
    ] = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """The signed review of a conditionally released batch once its last viable result is in."""
    from tracker.quality.batches.steps import get_batch
    from tracker.quality.batches.viable import review_results

    signer = _login(db, as_, password_stdin, signing=True)
    with unit_of_work(engine_for(db)) as session:
        review_results(
            session,
            signer=signer,
            batch=get_batch(session, number),
            outcome=outcome,
            assessment=assessment,
            deviation=deviation,
            patient_impact=patient_impact,
            patient_informed=patient_informed,
        )
    console.print(f"{t('batch')} {number}: {t('viable_reviewed')} ({as_})")


@batch_app.command("reject")
def batch_reject(
    number: str,
    reason: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Reject the batch (signed decision by QA or the QP)."""
    from tracker.quality.batches.release import reject

    _signed_transition(reject, number, as_, password_stdin, db, reason=reason)


@batch_app.command("assess")
def batch_assess(
    number: str,
    item: Annotated[str, typer.Option(help="review item key (batch show)")],
    exposed: Annotated[bool, typer.Option("--exposed/--not-exposed")],
    reason: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QA's verdict on a review-by-exception item that is not an excursion (invalid period)."""
    from tracker.quality.batches.review import assess_item
    from tracker.quality.batches.steps import get_batch

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        assess_item(
            session,
            actor=actor,
            batch=get_batch(session, number),
            item_key=item,
            exposed=exposed,
            reason=reason,
        )
    console.print(f"{item}: {t('exposed')} {t('yes') if exposed else t('no')}")


@batch_app.command("list")
def batch_list(
    json_out: JsonOpt = False, status: Annotated[str | None, typer.Option()] = None, db: DbOpt = None
) -> None:
    from tracker.quality.batches.identity import record_read
    from tracker.quality.batches.steps import list_batches
    from tracker.quality.batches.views import batch_summaries

    with unit_of_work(engine_for(db)) as session:
        rows = batch_summaries(session, status=status)
        record_read(session, actor=cli_reader(), via="cli", batches=list_batches(session, status=status))
    if json_out:
        print_json(rows)
        return
    table = Table(title=t("batches"))
    for key in ("batch", "product", "donor", "state"):
        table.add_column(t(key))
    for r in rows:
        table.add_row(r["number"], r["product"], r["donor_id"], t(r["status"]))
    console.print(table)


@batch_app.command("show")
def batch_show(number: str, json_out: JsonOpt = False, db: DbOpt = None) -> None:
    """The batch for review: steps, flags, review by exception, deviations, signatures, gate."""
    from tracker.quality.batches.identity import record_read
    from tracker.quality.batches.linking import sync_links
    from tracker.quality.batches.postrelease import watch
    from tracker.quality.batches.steps import get_batch
    from tracker.quality.batches.views import batch_report

    with unit_of_work(engine_for(db)) as session:
        batch = get_batch(session, number)
        sync_links(session, batch=batch)  # reading proposes links (docs/quality.md, known limits)
        watch(session, batch=batch)  # … and raises post-release events of a released batch
        report = batch_report(session, batch)
        record_read(session, actor=cli_reader(), via="cli", batches=[batch])
    if json_out:
        print_json(report)
        return
    tz = report["timezone"]
    con = console
    con.print(
        f"[bold]{t('batch')} {report['number']}[/bold] · {report['product']} · {t('donor')} "
        f"{report['donor_id']} · {t(report['status'])}"
    )
    steps = Table(title=t("steps"))
    for key in ("id", "step", "room", "started", "ended", "open_processing", "operator"):
        steps.add_column(t(key))
    for s in report["steps"]:
        steps.add_row(
            str(s["id"]),
            s["name"],
            s["room"],
            local_display(parse_instant(s["start"]), tz),
            local_display(parse_instant(s["end"]), tz) if s["end"] else t("open"),
            t("yes") if s["open_processing"] else t("no"),
            s["operator"],
        )
    con.print(steps)
    lang_zh = t("yes") == "是"
    for flag in report["flags"]:
        con.print(f"[yellow]⚑ {flag['message_zh'] if lang_zh else flag['message_en']}[/yellow]")
    review = Table(title=t("review_by_exception"))
    for key in ("id", "type", "monitor", "started", "ended", "level", "exposed"):
        review.add_column(t(key))
    for item in report["review"]:
        kind = t(f"type_{item['type']}") if item["kind"] == "excursion" else t("invalid")
        review.add_row(
            item["key"],
            kind,
            item["monitor"],
            local_display(parse_instant(item["start"]), tz),
            local_display(parse_instant(item["end"]), tz) if item["end"] else t("open"),
            t(item.get("level") or "invalid"),
            t(item["exposed"]),
        )
    con.print(review)
    for dev in report["deviations"]:
        con.print(f"{t('deviation')} {dev['number']}: {t(dev['status'])} ({t(dev['classification'])})")
    for sig in report["signatures"]:
        status = (
            t("signature_intact")
            if sig["intact"]
            else f"[red]{t('signature_broken')}: {sig['problem']}[/red]"
        )
        con.print(
            f"✍ {sig['printed_name']} ({sig['username']}) · {t(sig['meaning'])} · "
            f"{sig['signed_at_local']} · {sig['statement']} · {status}"
        )
    _print_post_release(report["post_release"], tz, lang_zh)
    if report["gate"]:
        con.print(f"[red]{t('gate_closed')}:[/red]")
        for reason in report["gate"]:
            con.print(f"  • {reason}")
    elif report["status"] not in ("released", "rejected"):
        con.print(f"[green]{t('gate_open')}[/green]")


def _print_post_release(events: list[dict], tz: str, lang_zh: bool) -> None:
    for e in events:
        head = f"⚠ {t('post_release_event')} {e['id']} · {local_display(parse_instant(e['raised_at']), tz)}"
        if e["status"] == "open":
            console.print(f"[red]{head} · {t('awaiting_qa')}[/red]")
        else:
            outcome = t(e["outcome"]) + (f" {e['deviation']}" if e["deviation"] else "")
            console.print(f"{head} · {outcome} · {e['assessed_by']}: {e['assessment']}")
        for change in e["changes"]:
            console.print(f"    {change['zh'] if lang_zh else change['en']}")


@batch_app.command("watch")
def batch_watch(
    every: Annotated[
        float | None, typer.Option(help="run again every N seconds until interrupted (beside the ingesters)")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Compare every released batch's environmental picture with the one registered and raise a
    post-release event for each that changed (late readings, new excursions or links, …)."""
    import time

    from tracker.quality.batches.models import Batch
    from tracker.quality.batches.postrelease import watch

    while True:
        with unit_of_work(engine_for(db)) as session:
            raised = [(session.get(Batch, e.batch_id).number, e.id, e.kinds) for e in watch(session)]
        for number, event_id, kinds in raised:
            console.print(f"{t('batch')} {number}: {t('post_release_event')} {event_id} ({kinds})")
        if every is None:
            return
        time.sleep(every)


@batch_app.command("post-release")
def batch_post_release(
    number: str,
    outcome: Annotated[str, typer.Option(help="no_impact or deviation")],
    assessment: Annotated[str, typer.Option(help="QA's reasoning")],
    as_: AsOpt,
    deviation: Annotated[str | None, typer.Option(help="the deviation opened (outcome deviation)")] = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QA assesses the open post-release events of a released batch (e-signature)."""
    from tracker.quality.batches.postrelease import assess
    from tracker.quality.batches.steps import get_batch

    signer = _login(db, as_, password_stdin, signing=True)
    with unit_of_work(engine_for(db)) as session:
        row = assess(
            session,
            signer=signer,
            batch=get_batch(session, number),
            outcome=outcome,
            assessment=assessment,
            deviation=deviation,
        )
        said = t(row.outcome)
    console.print(f"{t('batch')} {number}: {said} ({as_})")


# -- links ------------------------------------------------------------------------------------------


@link_app.command("list")
def link_list(
    batch: Annotated[str | None, typer.Option()] = None,
    pending: Annotated[bool, typer.Option("--pending", help="only undecided")] = False,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Proposed and decided exposure links (the list is brought up to date first)."""
    from tracker.quality.batches.linking import sync_links
    from tracker.quality.batches.steps import get_batch
    from tracker.quality.batches.views import exposure_links

    with unit_of_work(engine_for(db)) as session:
        chosen = get_batch(session, batch) if batch else None
        sync_links(session, batch=chosen)
        links = exposure_links(session, batch=chosen, status="proposed" if pending else None)
    keys = ("id", "batch", "step", "excursion", "status", "decided_by", "reason")
    rows = [{key: link[key] for key in keys} for link in links]
    if json_out:
        print_json(rows)
        return
    table = Table(title=t("links"))
    for key in ("id", "batch", "step", "excursions", "state", "user", "reason"):
        table.add_column(t(key))
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["batch"],
            str(r["step"]),
            str(r["excursion"]),
            t(r["status"]),
            r["decided_by"] or "",
            r["reason"] or "",
        )
    console.print(table)


@link_app.command("decide")
def link_decide(
    link_id: int,
    exposed: Annotated[bool, typer.Option("--exposed/--not-exposed")],
    reason: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QA confirms (exposed) or rejects (not exposed) a proposed link, with the reason (e-signature)."""
    from tracker.quality.batches.linking import decide_link

    signer = _login(db, as_, password_stdin, signing=True)
    with unit_of_work(engine_for(db)) as session:
        link = decide_link(session, signer=signer, link_id=link_id, exposed=exposed, reason=reason)
    console.print(f"link {link_id}: {t(link.status)}")


# -- deviations and CAPA --------------------------------------------------------------------------


@deviation_app.command("open")
def deviation_open(
    title: Annotated[str, typer.Option()],
    classification: Annotated[str, typer.Option("--class", help="critical, major, minor")],
    category: Annotated[str, typer.Option()],
    description: Annotated[str, typer.Option()],
    as_: AsOpt,
    excursion: Annotated[list[int] | None, typer.Option("--excursion", help="repeat")] = None,
    batch: Annotated[list[str] | None, typer.Option("--batch", help="repeat")] = None,
    site: SiteOpt = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Raise a deviation from excursions (batches with confirmed exposure are linked) or by hand."""
    from tracker.quality.batches.linking import raise_deviation

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        dev = raise_deviation(
            session,
            actor=actor,
            site=_site(session, site),
            excursion_ids=excursion or [],
            title=title,
            classification=classification,
            category=category,
            description=description,
            batch_numbers=batch or [],
        )
    console.print(f"{t('deviation')} {dev.number}: {t('open')}")


@deviation_app.command("list")
def deviation_list(
    json_out: JsonOpt = False,
    status: Annotated[str | None, typer.Option(help="open, investigating, capa, closed, not_closed")] = None,
    db: DbOpt = None,
) -> None:
    from tracker.quality.views import deviation_views

    with unit_of_work(engine_for(db)) as session:
        rows = deviation_views(session, status=status)
    if json_out:
        print_json(rows)
        return
    table = Table(title=t("deviations"))
    for key in ("id", "title", "classification", "category", "state", "batches"):
        table.add_column(t(key))
    for r in rows:
        table.add_row(
            r["number"],
            r["title"],
            t(r["classification"]),
            r["category"],
            t(r["status"]),
            ", ".join(str(b["batch"]) for b in r["batches"]),
        )
    console.print(table)


@deviation_app.command("show")
def deviation_show(number: str, json_out: JsonOpt = False, db: DbOpt = None) -> None:
    from tracker.quality.deviations import closure_gaps, get_deviation
    from tracker.quality.views import deviation_view

    with unit_of_work(engine_for(db)) as session:
        dev = get_deviation(session, number)
        # everything still missing before closure (not only the current state's gaps)
        doc = {
            **deviation_view(session, dev),
            "missing": closure_gaps(session, dev) if dev.status != "closed" else [],
        }
    if json_out:
        print_json(doc)
        return
    con = console
    con.print(
        f"[bold]{doc['number']}[/bold] {doc['title']} · {t(doc['classification'])} · "
        f"{doc['category']} · {t(doc['status'])}"
    )
    con.print(doc["description"])
    if doc["root_cause"]:
        con.print(f"{t('root_cause')}: {doc['root_cause']}")
    for b in doc["batches"]:
        con.print(
            f"{t('batch')} {b['batch']}: {t('impact')} {b['impact'] or t('unassessed')} "
            f"{b['assessment'] or ''}"
        )
    for c in doc["capa"]:
        con.print(
            f"CAPA {c['id']} ({c['kind']}) {c['description']} · {t('owner')} {c['owner']} · "
            f"{t('due')} {c['due']} · {t(c['status'])}"
        )
    for sig in doc["signatures"]:
        status = t("signature_intact") if sig["intact"] else f"[red]{t('signature_broken')}[/red]"
        con.print(
            f"✍ {sig['printed_name']} · {t(sig['meaning'])} · {sig['signed_at_local']} · "
            f"{sig['statement']} · {status}"
        )
    for item in doc["missing"]:
        con.print(f"  • {item}")


def _deviation_action(
    fn, number: str, as_: str, password_stdin: bool, db: str | None, *, signer: bool = False, **kwargs
) -> None:
    from tracker.quality.deviations import get_deviation

    who = _login(db, as_, password_stdin, signing=signer)
    with unit_of_work(engine_for(db)) as session:
        dev = get_deviation(session, number)
        fn(session, **{"signer" if signer else "actor": who}, dev=dev, **kwargs)
        status = dev.status
    console.print(f"{number}: {t(status)}")


@deviation_app.command("investigate")
def deviation_investigate(number: str, as_: AsOpt, password_stdin: PwStdin = False, db: DbOpt = None) -> None:
    from tracker.quality.deviations import start_investigation

    _deviation_action(start_investigation, number, as_, password_stdin, db)


@deviation_app.command("update")
def deviation_update(
    number: str,
    reason: Annotated[str, typer.Option()],
    as_: AsOpt,
    title: Annotated[str | None, typer.Option()] = None,
    classification: Annotated[str | None, typer.Option("--class")] = None,
    category: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    root_cause: Annotated[str | None, typer.Option()] = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Edit fields before approval; every change needs its reason."""
    from tracker.quality.deviations import update_deviation

    fields = {
        k: v
        for k, v in {
            "title": title,
            "classification": classification,
            "category": category,
            "description": description,
            "root_cause": root_cause,
        }.items()
        if v
    }
    _deviation_action(update_deviation, number, as_, password_stdin, db, reason=reason, **fields)


@deviation_app.command("assess")
def deviation_assess(
    number: str,
    batch: Annotated[str, typer.Option()],
    impact: Annotated[str, typer.Option(help="none, minor, significant")],
    assessment: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QA's impact assessment for one linked batch."""
    from tracker.quality.batches.steps import get_batch
    from tracker.quality.deviations import assess_impact, get_deviation

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        b = get_batch(session, batch)
        assess_impact(
            session,
            actor=actor,
            dev=get_deviation(session, number),
            batch_id=b.id,
            batch_number=b.number,
            impact=impact,
            assessment=assessment,
        )
    console.print(f"{number} · {batch}: {t('impact')} {impact}")


@deviation_app.command("approve")
def deviation_approve(
    number: str, as_: AsOpt, comment: CommentOpt = None, password_stdin: PwStdin = False, db: DbOpt = None
) -> None:
    """QA approves the investigation report (e-signature, GMP Art. 250)."""
    from tracker.quality.deviations import approve_investigation

    _deviation_action(approve_investigation, number, as_, password_stdin, db, signer=True, comment=comment)


@deviation_app.command("no-capa")
def deviation_no_capa(
    number: str,
    justification: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Record why a minor deviation needs no CAPA action."""
    from tracker.quality.deviations import justify_no_capa

    _deviation_action(justify_no_capa, number, as_, password_stdin, db, justification=justification)


@deviation_app.command("close")
def deviation_close(
    number: str, as_: AsOpt, comment: CommentOpt = None, password_stdin: PwStdin = False, db: DbOpt = None
) -> None:
    """QA closes the deviation (e-signature); refused with what is missing."""
    from tracker.quality.deviations import close_deviation

    _deviation_action(close_deviation, number, as_, password_stdin, db, signer=True, comment=comment)


@capa_app.command("add")
def capa_add(
    deviation: str,
    kind: Annotated[str, typer.Option(help="corrective or preventive")],
    description: Annotated[str, typer.Option()],
    owner: Annotated[str, typer.Option()],
    due: Annotated[str, typer.Option(help="YYYY-MM-DD")],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    from tracker.quality.deviations import add_capa, get_deviation

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        action = add_capa(
            session,
            actor=actor,
            dev=get_deviation(session, deviation),
            kind=kind,
            description=description,
            owner=owner,
            due=date.fromisoformat(due),
        )
    console.print(f"CAPA {action.id}: {deviation} · {owner} · {due}")


@capa_app.command("done")
def capa_done(
    capa_id: int,
    outcome: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    from tracker.quality.deviations import complete_capa

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        complete_capa(session, actor=actor, capa_id=capa_id, outcome=outcome)
    console.print(f"CAPA {capa_id}: {t('done')}")


@capa_app.command("check")
def capa_check(
    capa_id: int,
    effective: Annotated[bool, typer.Option("--effective/--not-effective")],
    note: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QA's effectiveness check of a done CAPA action."""
    from tracker.quality.deviations import check_effectiveness

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        action = check_effectiveness(session, actor=actor, capa_id=capa_id, effective=effective, note=note)
    console.print(f"CAPA {capa_id}: {t(action.status)}")


# -- data-driven levels -----------------------------------------------------------------------------


@limits_app.command("propose")
def limits_propose(
    room: Annotated[str, typer.Option()],
    kind: Annotated[str, typer.Option(help="particles or pressure")],
    state: Annotated[str, typer.Option(help="at_rest or in_operation")],
    start: Annotated[str, typer.Option("--from", help="ISO 8601 with offset")],
    end: Annotated[str, typer.Option("--to", help="ISO 8601 with offset")],
    as_: AsOpt,
    channel: Annotated[str | None, typer.Option(help="0.5 or 5.0 for particles")] = None,
    site: SiteOpt = None,
    json_out: JsonOpt = False,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Propose alert/action levels from the period's valid readings (percentiles; never beyond
    the regulation). Nothing changes until another QA person approves it."""
    from tracker.monitoring.proposals import propose, to_json

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        doc = to_json(
            session,
            propose(
                session,
                actor=actor,
                room_code=room,
                kind=kind,
                channel=channel,
                state=state,
                start=parse_instant(start),
                end=parse_instant(end),
                site_code=site,
            ),
        )
    if json_out:
        print_json(doc)
        return
    console.print(
        f"proposal {doc['id']}: {doc['room']} {t(doc['kind'])} {doc['channel'] or ''} "
        f"{t(doc['state'])} — {t('alert')} {doc['alert']:g} · {t('action')} {doc['action']:g} "
        f"({doc['readings']} {t('readings')}, {doc['days']} d; regulatory {doc['regulatory']})"
    )
    for note in doc["notes"]:
        console.print(f"  • {note}")


@limits_app.command("proposals")
def limits_proposals(
    status: Annotated[str | None, typer.Option(help="proposed, approved, …")] = None,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    from tracker.monitoring.proposals import list_proposals

    with unit_of_work(engine_for(db)) as session:
        rows = list_proposals(session, status=status)
    if json_out:
        print_json(rows)
        return
    table = Table(title="limit proposals")
    for key in ("id", "room", "kind", "channel", "state", "alert", "action", "readings"):
        table.add_column(t(key))
    table.add_column("status")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["room"],
            t(r["kind"]),
            r["channel"] or "",
            t(r["state"]),
            f"{r['alert']:g}",
            f"{r['action']:g}",
            str(r["readings"]),
            r["status"],
        )
    console.print(table)


@limits_app.command("approve")
def limits_approve(
    proposal_id: int,
    as_: AsOpt,
    comment: CommentOpt = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Approve a proposal with an e-signature: its levels apply from now on (new facility revision)."""
    from tracker.monitoring.proposals import approve

    signer = _login(db, as_, password_stdin, signing=True)
    with unit_of_work(engine_for(db)) as session:
        approve(session, signer=signer, proposal_id=proposal_id, comment=comment)
    console.print(f"proposal {proposal_id}: {t('approved')} ({as_})")


@limits_app.command("reject")
def limits_reject(
    proposal_id: int,
    reason: Annotated[str, typer.Option()],
    as_: AsOpt,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    from tracker.monitoring.proposals import reject

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        reject(session, actor=actor, proposal_id=proposal_id, reason=reason)
    console.print(f"proposal {proposal_id}: {t('rejected')}")


def register(app: typer.Typer) -> None:
    app.add_typer(limits_app, name="limits")
    app.add_typer(user_app, name="user")
    app.add_typer(batch_app, name="batch")
    app.add_typer(step_app, name="step")
    app.add_typer(link_app, name="link")
    app.add_typer(deviation_app, name="deviation")
    app.add_typer(capa_app, name="capa")
