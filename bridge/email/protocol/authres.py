"""Authentication-Results (RFC 8601): did the sender's domain vouch for this mail?

With ``verifier: mta`` the MTA in front of the bridge verifies SPF, DKIM and DMARC (rspamd,
OpenDKIM/OpenDMARC) and records its verdict in an Authentication-Results header that starts
with its *authserv-id*. Anyone can write such a header into a mail, so only one carrying the
operator's configured authserv-id counts, and of those only the topmost: the MTA adds its own
above everything the sender wrote, so a second one below it is the sender's (an MTA should
remove those, RFC 8601 §5, but not every one does). Within that header the first result of each
method wins; all DKIM results are kept.

ARC-Authentication-Results (RFC 8617) are the same results written by a forwarder, after an
``i=<instance>;`` prefix; :func:`read_arc_authentication_results` reads them for the forwarders
the operator trusts.

    Authentication-Results: mx.agency.example; dkim=pass header.d=example.org header.s=s1;
        spf=pass smtp.mailfrom=bounces@example.org; dmarc=pass (p=reject) header.from=example.org
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_REQUIREMENTS = ("dmarc", "aligned", "none")
# method[/version] = result, reason = value, or ptype.property = value (RFC 8601 §2.2).
# A key starts only where no key character precedes it, and nothing backtracks: the header is
# written by strangers, and the naive pattern took 20 s on 20,000 letters.
_PAIR = re.compile(
    r"(?<![A-Za-z0-9_./-])([A-Za-z0-9_-]++(?:[ \t]*+[./][ \t]*+[A-Za-z0-9_-]++)?+)"
    r'[ \t]*+=[ \t]*+("(?:[^"\\]|\\.)*+"|[^\s";=]*+)'
)


@dataclass(slots=True)
class AuthVerdict:
    """The trusted MTA's results: ``dmarc`` (``pass``, ``fail``, ``none``, …) with the From
    domain it evaluated, each DKIM signature as ``(result, signing domain)``, and SPF as
    ``(result, MAIL FROM domain)``. Results and domains are lower-case."""

    dmarc: str | None = None
    dmarc_from: str | None = None
    dkim: list[tuple[str, str]] = field(default_factory=list)
    spf: tuple[str, str] | None = None
    arc: str | None = None
    """The MTA's ARC chain validation (``pass``, ``fail``, ``none``)."""


def _segments(value: str) -> list[str]:
    """``value`` split at ``;`` outside quoted strings, with (nested) comments removed."""
    segments: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
            if not depth:
                current.append(char)
        elif char == "\\" and (quoted or depth):
            escaped = True
            if not depth:
                current.append(char)
        elif quoted:
            quoted = char != '"'
            current.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif char == ";":
            segments.append("".join(current))
            current = []
        else:
            quoted = char == '"'
            current.append(char)
    segments.append("".join(current))
    return segments


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _domain(value: str) -> str:
    """The domain of ``local@domain``, ``@domain`` or ``domain``, lower-case, no final dot."""
    return value.rpartition("@")[2].strip().lower().rstrip(".")


def _authserv_id(segment: str) -> str:
    """The authserv-id of a header's first segment (a version number may follow it)."""
    words = segment.split()
    return _unquote(words[0]).lower() if words else ""


def read_authentication_results(values: list[str], trusted_authserv_id: str) -> AuthVerdict:
    """The verdict of the topmost header in ``values`` (in the mail's order) whose authserv-id
    is ``trusted_authserv_id`` (case-insensitive). Every other header is ignored: the sender may
    have written it, under any id."""
    trusted = trusted_authserv_id.strip().lower()
    if not trusted:
        return AuthVerdict()
    for value in values:
        first, *results = _segments(value)
        if _authserv_id(first) == trusted:
            return _verdict(results)
    return AuthVerdict()


def read_arc_authentication_results(value: str) -> tuple[int, str, AuthVerdict] | None:
    """(instance, authserv-id, verdict) of an ARC-Authentication-Results value
    (``i=2; lists.example.org; dkim=pass ...``), or None if it is not one."""
    first, *rest = _segments(value)
    key, _, number = first.strip().partition("=")
    if key.strip().lower() != "i" or not number.strip().isdigit() or not rest:
        return None
    authserv_id = _authserv_id(rest[0])
    if not authserv_id:
        return None
    return int(number.strip()), authserv_id, _verdict(rest[1:])


def _verdict(results: list[str]) -> AuthVerdict:
    verdict = AuthVerdict()
    for result in results:
        pairs = [(k.replace(" ", "").lower(), _unquote(v)) for k, v in _PAIR.findall(result)]
        if not pairs:  # "none": no method was evaluated
            continue
        method, outcome = pairs[0][0].partition("/")[0], pairs[0][1].lower()
        props = dict(reversed(pairs[1:]))  # the first occurrence of a property wins
        if method == "dmarc" and verdict.dmarc is None:
            verdict.dmarc = outcome
            verdict.dmarc_from = _domain(props["header.from"]) if "header.from" in props else None
        elif method == "dkim":
            signer = props.get("header.d") or props.get("header.i") or ""
            verdict.dkim.append((outcome, _domain(signer)))
        elif method == "spf" and verdict.spf is None:
            identity = props.get("smtp.mailfrom") or props.get("smtp.helo") or ""
            verdict.spf = (outcome, _domain(identity))
        elif method == "arc" and verdict.arc is None:
            verdict.arc = outcome
    return verdict


def _aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment, one direction only: the From domain is ``domain`` or below it. The
    other direction would let ``evil.example.com`` vouch for ``example.com``."""
    return bool(domain) and (from_domain == domain or from_domain.endswith("." + domain))


def sender_verified(verdict: AuthVerdict, from_domain: str, require: str) -> bool:
    """Whether ``verdict`` vouches for mail from ``from_domain`` at level ``require``:

    - ``"dmarc"``: DMARC passed for this From domain, which the verifier must name in
      ``header.from`` (a pass without it could be for any domain; a different one means the
      verifier read another From than we did: a spoofing trick);
    - ``"aligned"``: that, or a passing DKIM signature or SPF check of an aligned domain,
      which also accepts domains that publish no DMARC policy;
    - ``"none"``: always.

    Raises ``ValueError`` for any other ``require``.
    """
    if require not in _REQUIREMENTS:
        raise ValueError(f"unknown sender verification {require!r}; use one of {_REQUIREMENTS}")
    if require == "none":
        return True
    domain = from_domain.strip().lower().rstrip(".")
    if verdict.dmarc == "pass" and verdict.dmarc_from == domain:
        return True
    if require == "dmarc":
        return False
    if any(result == "pass" and _aligned(d, domain) for result, d in verdict.dkim):
        return True
    return verdict.spf is not None and verdict.spf[0] == "pass" and _aligned(verdict.spf[1], domain)
