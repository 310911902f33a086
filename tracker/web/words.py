"""Values the pages show through the catalogue (statuses, levels, roles …): the keys are the
stored values, marked here so that extraction puts them in the catalogues."""

from __future__ import annotations


def N_(text: str) -> str:
    return text


WORDS = (
    # roles
    N_("operator"),
    N_("production_head"),
    N_("qa"),
    N_("qp"),
    N_("admin"),
    N_("viewer"),
    N_("identity_reveal"),
    # reads of personal data (issue 20)
    N_("personal.read"),
    N_("identity.reveal"),
    # levels and tile states
    N_("ok"),
    N_("alert"),
    N_("action"),
    N_("not_evaluated"),
    N_("invalid"),
    N_("no_data"),
    N_("inhibited"),
    # operational states
    N_("at_rest"),
    N_("in_operation"),
    N_("any"),
    # kinds
    N_("particles"),
    N_("pressure"),
    N_("temperature"),
    N_("humidity"),
    # excursion types and statuses
    N_("limit"),
    N_("data_gap"),
    N_("recurrence"),
    N_("adverse_trend"),
    N_("predicted"),
    N_("detected"),
    N_("annotated"),
    N_("dismissed"),
    N_("superseded"),
    N_("open"),
    N_("closed"),
    # batch statuses
    N_("in_progress"),
    N_("completed"),
    N_("production_signed"),
    N_("qa_reviewed"),
    N_("released"),
    N_("rejected"),
    # deviation statuses, classes, impacts, CAPA
    N_("investigating"),
    N_("capa"),
    N_("critical"),
    N_("major"),
    N_("minor"),
    N_("none"),
    N_("significant"),
    N_("unassessed"),
    N_("corrective"),
    N_("preventive"),
    N_("done"),
    N_("effective"),
    N_("not_effective"),
    # links and exposure
    N_("proposed"),
    N_("confirmed"),
    N_("withdrawn"),
    N_("yes"),
    N_("no"),
    N_("approved"),
    # signature meanings and statuses
    N_("performed"),
    N_("reviewed"),
    N_("intact"),
    N_("broken"),
    N_("changed"),
    N_("no_impact"),
    # review items
    N_("excursion"),
    N_("invalid_period"),
    N_("coverage_gap"),
    # the post-release review of viable results
    N_("acceptable"),
    N_("deviation"),
    # notifications (outbox rows and attempts)
    N_("pending"),
    N_("sent"),
    N_("failed"),
    N_("cancelled"),
)
