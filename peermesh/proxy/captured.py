"""Which service a captured connection is for: the authority, or the original destination."""

from __future__ import annotations

import ipaddress

from peermesh.capture.vips import VipTable
from peermesh.core.endpoint import EndpointSource
from peermesh.net import errors
from peermesh.net.http.headers import HeaderError, destination_service


def service_of_destination(
    destination: tuple[str, int] | None, vips: VipTable | None, endpoints: EndpointSource
) -> str | None:
    """A mesh VIP names its service; a member's own address names the service it runs."""
    if destination is None:
        return None
    address = destination[0]
    if vips is not None:
        service = vips.service(address)
        if service is not None:
            return service
    for name in endpoints.services():
        for endpoint in endpoints.endpoints(name) or ():
            if endpoint.host == address:
                return endpoint.service
    return None


def service_of_authority(authority: bytes, captured: str | None) -> str:
    """The destination service: the authority's name, else what the capture says.

    An app that dialled a VIP or a member's address by number (``Host: 240.240.7.9``)
    names no service; the original destination does.
    """
    if captured is not None:
        host = authority.decode("ascii", "replace").strip()
        host = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not host:
                return captured
        else:
            return captured
    try:
        return destination_service(authority)
    except HeaderError as exc:
        raise errors.bad_request(str(exc)) from None
