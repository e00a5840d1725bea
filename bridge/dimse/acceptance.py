"""Who may associate, and with which project: decided on the A-ASSOCIATE-RQ, before anything is received.

The called AE title selects the project (one per project, plus `dimse.ae_title` for the default project);
each project may restrict calling AE titles and their IP addresses. pynetdicom only offers one called AE
title and one global calling list, so `install` wraps the acceptor negotiation of each new association.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt

from bridge.settings import Settings

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ: result 1 (rejected-permanent), source 1 (DICOM UL service-user), PS3.8 9.3.4
REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
CALLING_AE_NOT_RECOGNIZED = 0x03
CALLED_AE_NOT_RECOGNIZED = 0x07


@dataclass(frozen=True)
class Decision:
    project: str | None
    diagnostic: int | None = None  # a reject reason when refused
    reason: str = ""


@dataclass(frozen=True)
class _Route:
    project: str
    callers: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]  # empty: anyone may call


class AcceptancePolicy:
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


def install(
    assoc: Any,
    policy: AcceptancePolicy,
    accepted: Callable[[Any, str], None],
    rejected: Callable[[Any, Decision], None],
) -> None:
    """Decide on `assoc`'s A-ASSOCIATE-RQ before pynetdicom's own negotiation runs (call on EVT_CONN_OPEN)."""
    acse = assoc.acse
    negotiate = acse._negotiate_as_acceptor

    def negotiate_with_policy() -> None:
        request = assoc.requestor.primitive
        decision = policy.decide(
            called=str(request.called_ae_title),
            calling=str(request.calling_ae_title),
            address=str(assoc.requestor.address),
        )
        if decision.project is None:
            assoc.requestor.ae_title = request.calling_ae_title
            rejected(assoc, decision)
            acse.send_reject(REJECTED_PERMANENT, SOURCE_SERVICE_USER, decision.diagnostic)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        assoc.acceptor.ae_title = str(request.called_ae_title).strip()
        accepted(assoc, decision.project)
        negotiate()

    acse._negotiate_as_acceptor = negotiate_with_policy
