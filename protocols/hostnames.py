"""Which name this server gives itself, and which names are its own.

RFC 5321 §4.1.1.1 and §4.1.4: the greeting and EHLO carry the server's fully
qualified domain name, and RFC 5321 §4.1.1.3 / §4.5.1: mail addressed to the
machine's own names is local.  ``socket.getfqdn()`` answers ``localhost`` on
many machines whose /etc/hosts maps the host name to 127.0.1.1 only, so the
FQDN is used only when it is a real dotted name; otherwise the host name
(``socket.gethostname()``).  The functions take the two name functions as
arguments (the composition root passes ``socket.getfqdn`` and
``socket.gethostname``), so tests never depend on the test machine's name.
"""

from __future__ import annotations

from typing import Callable, List, Tuple

from store.users import normalize_domain

NameFunc = Callable[[], str]

# Names that say "no name": the loopback names resolvers hand out.
NOT_A_NAME = ("", "localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6")


def _ask(func: NameFunc) -> str:
    try:
        return (func() or "").strip().rstrip(".").lower()
    except OSError:
        return ""


def choose_hostname(configured: str, getfqdn: NameFunc, gethostname: NameFunc) -> Tuple[str, str]:
    """(host name, where it came from): the configured ``hostname``, else a
    dotted FQDN, else the machine's host name, else ``localhost``."""
    if configured:
        return configured, "the hostname setting"
    fqdn = _ask(getfqdn)
    if fqdn not in NOT_A_NAME and "." in fqdn:
        return fqdn, "the machine's FQDN"
    short = _ask(gethostname)
    if short not in NOT_A_NAME:
        return short, "the machine's host name; its FQDN is %s" % (fqdn or "unknown")
    return "localhost", "no machine name found"


def machine_names(getfqdn: NameFunc, gethostname: NameFunc) -> List[str]:
    """The machine's own names (host name, FQDN), local mail domains too."""
    out = set()
    for name in (_ask(gethostname), _ask(getfqdn)):
        if name in NOT_A_NAME:
            continue
        try:
            out.add(normalize_domain(name))
        except ValueError:
            continue      # not usable as a mail domain (e.g. an underscore)
    return sorted(out)
