"""Who may associate, and with which project: decided on the A-ASSOCIATE-RQ, before anything is received.

The called AE title selects the project (one per project, plus `dimse.ae_title` for the default project);
each project may restrict calling AE titles and their IP addresses. A refusal carries its A-ASSOCIATE-RJ
reason (PS3.8 9.3.4) and a reason for the audit trail that names titles and addresses, never patients.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from bridge.dimse.pdu import CALLED_AE_NOT_RECOGNIZED, CALLING_AE_NOT_RECOGNIZED
from bridge.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    project: str | None
    diagnostic: int | None = None  # a reject reason when refused
    reason: str = ""


@dataclass(frozen=True)
class _Route:
    project: str
    callers: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]  # empty: anyone may call


class CallerPolicy:
    def __init__(self, settings: Settings) -> None:
        self.routes: dict[str, _Route] = {}
        for name, project in settings.projects.items():
            titles = [project.dimse.ae_title] if project.dimse.ae_title else []
            if settings.dimse.default_project == name:
                titles.append(settings.dimse.ae_title)
            callers = {
                caller.ae_title: [ipaddress.ip_network(a, strict=False) for a in caller.addresses]
                for caller in project.dimse.allowed_callers
            }
            for title in titles:
                self.routes[title] = _Route(project=name, callers=callers)
            if titles and not callers:
                logger.warning(
                    "project %s accepts any calling AE title: set projects.%s.dimse.allowed_callers", name, name
                )

    def decide(self, *, called: str, calling: str, address: str) -> Decision:
        route = self.routes.get(called.strip())
        if route is None:
            return Decision(None, CALLED_AE_NOT_RECOGNIZED, f"called AE title {called.strip()!r} routes to no project")
        if not route.callers:
            return Decision(route.project)
        networks = route.callers.get(calling.strip())
        if networks is None:
            return Decision(
                None,
                CALLING_AE_NOT_RECOGNIZED,
                f"calling AE title {calling.strip()!r} is not allowed for project {route.project}",
            )
        if networks and not any(ipaddress.ip_address(address) in network for network in networks):
            return Decision(
                None, CALLING_AE_NOT_RECOGNIZED, f"calling AE title {calling.strip()!r} is not allowed from {address}"
            )
        return Decision(route.project)
