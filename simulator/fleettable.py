"""The fleet's live terminal table (rich): one row per device, the ones that need a look first.

Only used on a terminal; `pinkbutton-sim fleet` prints lines otherwise. rich is the
simulator's dependency (`pip install pinkbutton[sim]`), never the kiosk's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinkbutton.firmware.diag.cli import shown
from pinkbutton.simulator.fleet import DeviceView, FleetRunner
from pinkbutton.simulator.fleetworkers import WorkerFleet

if TYPE_CHECKING:
    from rich.console import RenderableType

# indicator pattern -> colour, as a trainer would read the LED
_PATTERN_STYLE = {"idle": "green", "sending": "bold yellow", "delivered": "yellow",
                  "help_coming": "bold cyan", "fault": "bold red", "off": "dim"}


def _rank(view: DeviceView) -> tuple[int, str]:
    """Alerting devices first, then offline or faulty ones, then the quiet rest."""
    if view.mode in ("ALERTING", "STREAMING", "ACKNOWLEDGED", "COOLDOWN"):
        return 0, view.site.id
    if not view.online or view.faults:
        return 1, view.site.id
    return 2, view.site.id


def render(runner: FleetRunner | WorkerFleet, height: int | None = None) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    views = sorted(runner.views.values(), key=_rank)
    total = len(views)
    online = runner.online_count()
    alerting = sum(_rank(v)[0] == 0 for v in views)
    faulty = sum(bool(v.faults) for v in views)
    head = Text.assemble(
        (f"{shown(runner.fleet.name)}: ", "bold"), f"{total} devices  ",
        (f"{online} online", "green" if online == total else "yellow"), "  ",
        (f"{alerting} alerting", "bold yellow" if alerting else ""), "  ",
        (f"{faulty} with faults", "red" if faulty else ""))
    table = Table(expand=True, pad_edge=False, box=None, header_style="bold")
    for name in ("site", "kind", "link", "state", "indicator", "faults", "quirks", "last"):
        table.add_column(name, overflow="ellipsis", no_wrap=True)
    room = max(1, (height or total + 6) - 6)  # head, header, help, message, margins
    for v in views[:room]:
        q = v.site.quirks.names()
        # Text, never str: rich would read "[...]" in a name or an operator's text as markup
        table.add_row(
            Text(v.site.id), Text(v.site.kind),
            Text("online", "green") if v.online else Text("OFFLINE", "bold red"),
            Text(v.mode), Text(v.pattern, _PATTERN_STYLE.get(v.pattern, "")),
            Text(", ".join(v.faults), "red"), Text(", ".join(q)), Text(v.last))
    more = f"  (+{total - room} quiet devices not shown)" if total > room else ""
    help_line = Text("type a site id + Enter to press · press ID · hold ID S · quit" + more,
                     "dim")
    return Group(head, table, help_line, Text(shown(runner.message), "italic"))
