"""The console's accountability report (issue 12 item 6): `/report` (supervisors and
admins), `/report.csv`, and the public version `/report/public` + `/report/public.csv`,
served without a login only when the console runs with `serve --public-report`.

The table comes from tools/controlroom/accountability.py; the charts are inline SVG whose
geometry is computed here and drawn by the template (Jinja autoescape: a site name is text
in the table and in the chart labels alike; nothing is loaded from anywhere else, no
script). Query: `period=day|week|month` (default week), `since`/`until` (YYYY-MM-DD, the
days in the report's time zone), `tz` (IANA name, default UTC).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from pinkbutton.tools.controlroom import accountability as acc
from pinkbutton.tools.controlroom.escape import shown
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

#: Who may open the internal report (it names officers): operators may not.
REPORT_ROLES = ("supervisor", "admin")
CHART_W, CHART_H, LEFT, BOTTOM, TOP = 720, 220, 48, 36, 16
MAX_LABELS = 16
SITE_ROW_H, SITE_LABEL_W = 22, 220
OUTCOMES = (("genuine", "genuine", "c-genuine"), ("false_alarms", "false alarm or prank",
            "c-false"), ("technical", "technical", "c-tech"), ("undecided", "undecided",
                                                              "c-undecided"))


def _scale_max(value: float) -> float:
    """A round top for an axis holding `value` (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def period_chart(title: str, report: acc.Report, series: list[tuple[str, str]],
                 values, stacked: bool, unit: str) -> dict:
    """Vertical bars per period over all sites. `series`: (legend, css class); `values(row)`
    -> one number (or None) per series."""
    rows = report.totals
    data = [[v or 0.0 for v in values(r)] for r in rows]
    top = _scale_max(max([sum(d) if stacked else max(d, default=0) for d in data], default=0))
    plot_w, plot_h = CHART_W - LEFT - 8, CHART_H - BOTTOM - TOP
    slot = plot_w / max(1, len(rows))
    widest = max((len(r.period.label) for r in rows), default=1) * 6.5 + 6  # px at 11 px
    every = max(1, math.ceil(len(rows) / MAX_LABELS), math.ceil(widest / slot))
    bars, labels = [], []
    for i, (row, values_i) in enumerate(zip(rows, data, strict=True)):
        x0 = LEFT + i * slot + slot * 0.1
        width = slot * 0.8
        base = 0.0
        for k, ((legend, css), v) in enumerate(zip(series, values_i, strict=True)):
            h = plot_h * v / top
            if stacked:
                y = TOP + plot_h - plot_h * base / top - h
                x, w = x0, width
                base += v
            else:
                w = width / len(series)
                x, y = x0 + k * w, TOP + plot_h - h
            if v > 0:
                bars.append({"x": round(x, 1), "y": round(y, 1), "w": round(max(w, 1), 1),
                             "h": round(h, 1), "cls": css,
                             "title": f"{row.period.label}: {legend} {_num(v)}{unit}"})
        if i % every == 0:
            labels.append({"x": round(x0 + width / 2, 1), "y": CHART_H - BOTTOM + 14,
                           "text": row.period.label})
    return {"title": title, "w": CHART_W, "h": CHART_H, "bars": bars, "labels": labels,
            "legend": [{"text": t, "cls": c} for t, c in series],
            "axis": {"x": LEFT - 4, "top": TOP, "bottom": TOP + plot_h,
                     "max": f"{_num(top)}{unit}", "x2": CHART_W - 8}}


def site_chart(title: str, report: acc.Report, value, unit: str, css: str) -> dict:
    """Horizontal bars, one per site over the whole range, labelled with the site's name."""
    per_site: dict[str, float] = {}
    for row in report.rows:
        per_site[row.site_id] = per_site.get(row.site_id, 0.0) + value(row)
    sites = report.sites
    top = _scale_max(max(per_site.values(), default=0))
    plot_w = CHART_W - SITE_LABEL_W - 70
    bars, labels = [], []
    for i, (site_id, name) in enumerate(sites):
        v = per_site.get(site_id, 0.0)
        y = TOP + i * SITE_ROW_H
        w = plot_w * v / top
        labels.append({"x": SITE_LABEL_W - 6, "y": y + 15, "text": shown(name, 40)})
        bars.append({"x": SITE_LABEL_W, "y": y + 3, "w": round(max(w, 0.5), 1),
                     "h": SITE_ROW_H - 6, "cls": css, "title": f"{name}: {_num(v)}{unit}",
                     "value": f"{_num(v)}{unit}", "vx": round(SITE_LABEL_W + w + 4, 1)})
    return {"title": title, "w": CHART_W, "h": TOP + max(1, len(sites)) * SITE_ROW_H + 8,
            "bars": bars, "labels": labels}


def _num(v: float) -> str:
    return f"{v:.0f}" if v == int(v) else f"{v:.1f}"


def charts(report: acc.Report) -> list[dict]:
    what = {"day": "day", "week": "ISO week", "month": "month"}[report.kind]
    return [
        period_chart(f"Incidents per {what}, all sites, by outcome (tests apart)", report,
                     [(label, css) for _, label, css in OUTCOMES],
                     lambda r: [getattr(r, name) for name, _, _ in OUTCOMES], True, ""),
        period_chart(f"Time from press to acknowledgement per {what}, all sites (seconds)",
                     report, [("p50", "c-p50"), ("p90", "c-p90")],
                     lambda r: list(r.times("ack")[1:]), False, " s"),
        site_chart("Incidents per site over the range", report, lambda r: r.incidents, "",
                   "c-genuine"),
        site_chart("Offline hours per site over the range", report, lambda r: r.offline_h,
                   " h", "c-offline"),
    ]


def report_routes(console, session_of, audit, *, public: bool = False) -> list[BaseRoute]:
    """The report's routes. `console`: the app's Console (its store); `session_of(request)`
    -> Session | None; `audit(user, action, alert_id, detail)`. `public`: also serve the
    public version without a login (`serve --public-report`)."""
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=True)

    def build(request: Request, public_version: bool) -> acc.Report:
        q = request.query_params
        period = q.get("period") or "week"
        tz = q.get("tz") or "UTC"
        since = acc.parse_day(q["since"], tz) if q.get("since") else None
        until = acc.parse_day(q["until"], tz) if q.get("until") else None
        return acc.from_store(console.st, period, since, until, tz, time.time(),
                              public_version)

    def page(request: Request, session, public_version: bool) -> Response:
        try:
            report = build(request, public_version)
        except acc.ReportError as e:
            return HTMLResponse(env.get_template("error.html").render(
                session=session, status=400, message=str(e)), status_code=400)
        query = request.url.query
        csv_url = ("/report/public.csv" if public_version else "/report.csv") + (
            f"?{query}" if query else "")
        return HTMLResponse(env.get_template("report.html").render(
            session=session, report=report, charts=charts(report), csv_url=csv_url,
            columns=acc.COLUMNS, public=public_version, periods=acc.PERIODS,
            form_action="/report/public" if public_version else "/report",
            seconds=_seconds, outcome=_outcome, shown=shown, query=request.query_params))

    def csv_response(request: Request, public_version: bool) -> Response:
        try:
            report = build(request, public_version)
        except acc.ReportError as e:
            return Response(f"{e}\n", status_code=400, media_type="text/plain")
        name = (f"pinkbutton-{'public-' if public_version else ''}report-{report.kind}-"
                f"{report.since}-{report.until}.csv")
        return Response(acc.csv_text(report), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    def allowed(request: Request):
        session = session_of(request)
        if session is None:
            return None, None
        if session.role not in REPORT_ROLES:
            audit(session.user, "forbidden", None, {"path": request.url.path})
            return session, HTMLResponse(env.get_template("error.html").render(
                session=session, status=403,
                message="the accountability report is for supervisors and admins"),
                status_code=403)
        return session, None

    async def report_page(request: Request) -> Response:
        session, refused = allowed(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        if refused is not None:
            return refused
        audit(session.user, "view_report", None, {"query": request.url.query})
        return page(request, session, False)

    async def report_csv(request: Request) -> Response:
        session, refused = allowed(request)
        if session is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        if refused is not None:
            return refused
        audit(session.user, "report_csv", None, {"query": request.url.query})
        return csv_response(request, False)

    async def public_page(request: Request) -> Response:
        return page(request, None, True)

    async def public_csv(request: Request) -> Response:
        return csv_response(request, True)

    routes: list[BaseRoute] = [Route("/report", report_page, methods=["GET"]),
                               Route("/report.csv", report_csv, methods=["GET"])]
    if public:
        routes += [Route("/report/public", public_page, methods=["GET"]),
                   Route("/report/public.csv", public_csv, methods=["GET"])]
    return routes


def _seconds(value: float | None) -> str:
    from pinkbutton.tools.controlroom.terminal import seconds

    return "–" if value is None else seconds(value)


def _outcome(item: dict) -> str:
    if item["test"]:
        return "test"
    from pinkbutton.tools.controlroom.web.views import DISPOSITION_LABELS

    d = item["disposition"]
    return DISPOSITION_LABELS.get(d, str(d)) if d else "undecided"
