"""What ``rnnlab serve`` checks in a request before answering it: its parameters, each
converted and checked as its route takes it (:class:`Params`), and the name in its Host
header, against DNS rebinding (:func:`allowed_host`): a web page the user visits could
point a name of its own at the server and read the API, so a request must name an IP
address, localhost, this machine's name, the name the server listens on, or a name
given with ``--allow-host``.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Sequence
from typing import Any

from .errors import RnnlabError


def shown(value: Any) -> str:
    """A parameter's value as an error message quotes it: short, and on one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Params:
    """A request's parameters, each converted and checked as a route takes it."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise RnnlabError(f"{name} must be text, not {shown(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RnnlabError(f"{name} is not valid Unicode text (a lone surrogate)") from None
        return value

    def optional_integer(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RnnlabError(f"{name} must be a whole number, not {shown(value)}")

    def integer(self, name: str, default: int) -> int:
        value = self.optional_integer(name)
        return default if value is None else value

    def number(self, name: str, default: float) -> float:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        number = None
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        if number is None or not math.isfinite(number):
            raise RnnlabError(f"{name} must be a finite number, not {shown(value)}")
        return number


def api_terms(message: str, takes: tuple[str, ...]) -> str:
    """A message in the API's words: the checks shared with the command line name its
    flags (--top-k), which the API calls by its parameters' names (top_k)."""

    def parameter(flag: re.Match[str]) -> str:
        name = flag.group(1).replace("-", "_")
        return name if name in takes else flag.group(0)

    return re.sub(r"--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)", parameter, message)


def host_name(host: str) -> str:
    """The name in a Host header, without its port, brackets or final dot, in lower case:
    "[::1]:8000" -> "::1", "LocalHost.:80" -> "localhost"."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    else:
        name = host
    return name[:-1] if name.endswith(".") else name


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_host(name: str, names: frozenset[str]) -> bool:
    """Whether a request naming Host ``name`` (as :func:`host_name` gives it) is answered.

    Any IP address is: DNS rebinding needs a name, and a browser sends an address only to
    that address. A name must be one of ``names``.
    """
    return name in names or is_address(name)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address to listen on) is reachable from this machine
    only: localhost, 127.0.0.0/8, ::1."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def own_names(host: str, allow_hosts: Sequence[str]) -> frozenset[str]:
    """The names a Host header may give (addresses are always answered): localhost, this
    machine's name, the name the server listens on and the names the user allowed."""
    names = {"localhost", socket.gethostname(), host, *allow_hosts}
    return frozenset(host_name(n) for n in names if n and not is_address(host_name(n)))
