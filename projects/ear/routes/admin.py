"""The owner's room, /admin/: sign in (the admin token or a user's key, signin.py), and one page
per kind: the catalog (search, describe, remove, upload through the job queue), activity (what
was asked and answered), quality (what listeners said), models (which one serves, their
figures; the admin may choose another). A user sees
their own library; the admin every library, or one (?library=NAME). Every POST carries the
session's form token; the pages' scripts call the JSON API with it (X-Ear-Session).
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, render_template, request, send_file, url_for
from markupsafe import Markup

from .. import models, plots, users
from ..db import LoggedQuery, database
from ..errors import EarError, NotFound
from ..libraries import OWNER, Rows
from ..querylog import is_query_id
from ..reembed import follow
from ..stats import figures
from . import signin
from .helpers import caller, catalog, count_arg

bp = Blueprint("admin", __name__, url_prefix="/admin")
SIGNIN_LIMIT = "ear.signin_limit"  # app.extensions[SIGNIN_LIMIT]: sign-in attempts per address
# A person mistypes a key a few times; a script trying keys gets 429 (the keys are 256 random
# bits: the limit keeps the log and the CPU quiet rather than the keys safe).
SIGNIN_PER_MINUTE = 10
SIGNIN_BURST = 5
PAGE_TRACKS = 100  # catalog rows a page shows: a search narrows a large catalog
DAYS = (7, 30, 90)  # the spans the activity and quality pages offer


@bp.before_request
def _guard():
    if request.method == "POST" and not signin.form_token_sent(request.form.get("form_token", "")):
        raise EarError("form_expired", "This form is not from ear's page (or the page is old): "
                       "open the page again.", 403)
    if request.endpoint != "admin.sign_in" and not caller().keyed:
        return redirect(url_for("admin.sign_in"))
    return None


@bp.get("/")
def home():
    return redirect(url_for("admin.catalog_page"))


@bp.route("/signin", methods=["GET", "POST"])
def sign_in():
    if request.method == "POST":
        current_app.extensions[SIGNIN_LIMIT].take(request.remote_addr or "")
        if signin.sign_in(request.form.get("key", "").strip(), catalog().config.admin_token):
            return redirect(url_for("admin.catalog_page"))
        return render_template("admin/signin.html", refused=True, form_token=signin.form_token()), 401
    return render_template("admin/signin.html", refused=False, form_token=signin.form_token())


@bp.post("/signout")
def sign_out():
    signin.sign_out()
    return redirect(url_for("admin.sign_in"))


@bp.get("/catalog")
def catalog_page():
    search = request.args.get("q", "").strip()
    page = request.args.get("page", "1")
    page = int(page) if page.isascii() and page.isdigit() and len(page) < 9 else 0
    total, shown = Rows(caller().sees).find(search, max(page, 1), PAGE_TRACKS)
    pages = max(1, -(-total // PAGE_TRACKS))
    if not 1 <= page <= pages:
        raise EarError("bad_parameter", f"page must be a whole number from 1 to {pages}.")
    return _page("catalog", tracks=shown, total=total, search=search, page_number=page, pages=pages)


@bp.get("/activity")
def activity():
    found = figures(_days(), caller().sees)
    per_day = _per_day([(day, a, n - a) for day, n, a in found.per_day], ("answered", "no match"),
                       "queries per day")
    confidence = plots.bars([f"{k / 10:.1f}" for k in range(10)],
                            [("answers", found.confidence_histogram)], "answers by confidence")
    return _page("activity", figures=found, per_day=per_day, confidence=confidence)


@bp.get("/quality")
def quality():
    found = figures(_days(), caller().sees)
    verdicts = _per_day(found.feedback_per_day, ("right", "wrong"), "verdicts per day")
    return _page("quality", figures=found, verdicts=verdicts,
                 reliability=plots.reliability(found.reliability, "confidence against verdicts"))


@bp.get("/models")
def models_page():
    """The versions, which one makes new vectors and which one each library's index holds; the
    figures (measured on the owner's catalog) only for the admin."""
    config, who = catalog().config, caller()
    versions = models.versions(config)
    shelves = catalog().every_library() if who.admin else [catalog().library(who.searches)]
    held = {shelf.name: shelf.model_name() for shelf in shelves}
    trained = [v for v in versions if v.figures.get("eval")] if who.admin else []
    plot = plots.bars([v.name for v in trained], [
        (label, [v.figures["eval"]["candidate"].get(key) or 0 for v in trained])
        for key, label in models.FIGURE_LABELS.items()], "held-out figures per version") if trained else None
    return _page("models", versions=versions, held=held, labels=models.FIGURE_LABELS,
                 figures_shown=who.admin, plot=plot)


@bp.post("/models/use")
def use_model():
    if not caller().admin:
        raise EarError("admin_only", "Only the admin chooses the model: it serves every library.", 403)
    follow(catalog(), request.form.get("version", ""))
    return redirect(url_for("admin.models_page"))


@bp.get("/queries/<query_id>/audio")
def query_audio(query_id: str):
    """A kept clip (EAR_KEEP_QUERIES) of a query the caller's library answered."""
    sees = caller().sees
    with database.connection_context():
        row = LoggedQuery.get_or_none(LoggedQuery.query_id == query_id) if is_query_id(query_id) else None
    path = catalog().config.queries_dir / row.audio if row and row.audio else None
    if path is None or not path.is_file() or (sees is not None and row.library != sees):
        raise NotFound("audio_not_found", "No kept audio for this query.")
    response = send_file(path, mimetype="audio/flac", max_age=0)
    response.cache_control.private = True
    return response


def _days() -> int:
    days = count_arg("days", DAYS[1], lowest=1)
    return days if days in DAYS else DAYS[1]


def _per_day(rows: list[tuple[str, int, int]], names: tuple[str, str], title: str) -> Markup:
    """Bars per day of two counts stacked, labelled by month and day (one in so many: at most
    ten labels, which a phone's width holds)."""
    return plots.bars([day[5:] for day, _, _ in rows], [(names[0], [a for _, a, _ in rows]),
                                                         (names[1], [b for _, _, b in rows])],
                      title, every_label=max(1, len(rows) // 10))


def _page(name: str, **values) -> Response:
    who = caller()
    libraries = [OWNER, *(u.name for u in users.all_users())] if who.admin else []
    return render_template(f"admin/{name}.html", page=name, who=who, libraries=libraries,
                           library=request.args.get("library", ""), form_token=signin.form_token(),
                           base=request.script_root + "/", session_header=signin.HEADER, **values)
