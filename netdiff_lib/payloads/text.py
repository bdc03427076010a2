"""HTTP/1.1 over TCP and SSDP over UDP 1900: request and status lines, standard headers, exact lengths.

Every segment is a whole message (the client's are requests, the server's responses), so that no dissector
waits for a body that never comes.  Header names come from a fixed standard vocabulary (:data:`HEADERS`), of
which each class learns the ones its traffic uses; values are synthetic.  The length is hit exactly: a
request pads its path, a response its reason phrase; a long request becomes a POST with a body, a long
response carries a ``text/plain`` body, both with ``Content-Length``.
"""

from __future__ import annotations

from netdiff_lib.payloads import names
from netdiff_lib.payloads.base import Packet, Service, count

METHODS = ("GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS")
HEADERS = ("Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Connection", "Content-Type",
           "Cache-Control", "Server", "Date", "Pragma", "Keep-Alive")
MIN_REQUEST, MIN_RESPONSE = len("GET / HTTP/1.1\r\n\r\n"), len("HTTP/1.1 204 No Content\r\n\r\n")
BODYLESS = ("GET", "HEAD", "DELETE", "OPTIONS")
SSDP_MIN = {0: len("NOTIFY * HTTP/1.1\r\nSERVER: netdiff/1.0 UPnP/1.0\r\n\r\n"),
            1: len("HTTP/1.1 200 OK\r\nSERVER: netdiff/1.0 UPnP/1.0\r\n\r\n")}


def _value(name: str, p: Packet) -> str:
    host = names.hostname(p.server)
    return {"Host": host, "User-Agent": "netdiff/1.0", "Accept": "*/*", "Accept-Encoding": "identity",
            "Accept-Language": "en", "Connection": "keep-alive", "Content-Type": "text/plain",
            "Cache-Control": "no-cache", "Server": "netdiff/1.0", "Date": "Mon, 01 Jan 2024 00:00:00 GMT",
            "Pragma": "no-cache", "Keep-Alive": "timeout=5"}.get(name, "x")


def _with_body(head: str, headers: list[str], length: int) -> tuple[str, bytes] | None:
    """Headers + ``Content-Length`` + body of exactly ``length`` bytes (None when it cannot be)."""
    base = len(head) + sum(len(h) for h in headers) + 2 + len("Content-Length: \r\n")
    for digits in range(1, 7):
        body = length - base - digits
        if body >= 0 and len(str(body)) == digits:
            return "".join(headers) + f"Content-Length: {body}\r\n\r\n", names.text(body).replace(b" ", b"\n")
    return None


def message(first: str, pad_at: str, headers: list[str], length: int, body: bool) -> bytes:
    """A message of exactly ``length`` bytes: the headers that fit, then a body or padding at ``{pad}``."""
    kept: list[str] = []
    for h in headers:
        if len(first) + sum(map(len, kept)) + len(h) + 2 + (24 if body else 0) <= length:
            kept.append(h)
    head = first.replace("{pad}", "")
    if body:
        done = _with_body(head, kept, length)
        if done is not None:
            return head.encode() + done[0].encode() + done[1]
    pad = length - len(head) - sum(map(len, kept)) - 2
    return (first.replace("{pad}", pad_at * pad) + "".join(kept) + "\r\n").encode()


def build_http(p: Packet) -> bytes:
    learned = [n for n in p.stats.get(f"headers_{p.side}", {}) if n in HEADERS]
    names_ = learned or (["Host", "User-Agent", "Accept"] if p.side == 0 else ["Server", "Content-Type"])
    hdrs = [f"{n}: {_value(n, p)}\r\n" for n in names_]
    if p.side == 0:
        if p.length > 200:
            return message("POST /{pad} HTTP/1.1\r\n", "a", hdrs, p.length, True)
        method = str(names.pick(p.rng, p.stats.get("methods", {}), "GET"))
        method = method if method in BODYLESS else "GET"
        return message(f"{method} /{{pad}} HTTP/1.1\r\n", "a", hdrs, p.length, False)
    if p.length < len("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"):
        return message("HTTP/1.1 204 No Content{pad}\r\n", "!", [], p.length, False)
    return message("HTTP/1.1 200 OK{pad}\r\n", "!", hdrs, p.length, True)


def build_ssdp(p: Packet) -> bytes:
    usn = f"USN: uuid:{names.word(p.server)}::upnp:rootdevice\r\n"
    loc = f"LOCATION: http://{'.'.join(map(str, names.doc_ip(p.server)))}:49152/{names.word(p.server)}.xml\r\n"
    server = "SERVER: netdiff/1.0 UPnP/1.0\r\n"
    if p.side == 1:
        hdrs = [server, "EXT:\r\n", "CACHE-CONTROL: max-age=1800\r\n", loc, "ST: upnp:rootdevice\r\n", usn]
        return padded("HTTP/1.1 200 OK\r\n", hdrs, p.length)
    if str(names.pick(p.rng, p.stats.get("kinds", {}), "M-SEARCH")) == "NOTIFY":
        hdrs = [server, "HOST: 239.255.255.250:1900\r\n", "NTS: ssdp:alive\r\n", "NT: upnp:rootdevice\r\n",
                "CACHE-CONTROL: max-age=1800\r\n", loc, usn]
        return padded("NOTIFY * HTTP/1.1\r\n", hdrs, p.length)
    hdrs = ["USER-AGENT: netdiff/1.0\r\n", "HOST: 239.255.255.250:1900\r\n", 'MAN: "ssdp:discover"\r\n',
            "MX: 1\r\n", "ST: ssdp:all\r\n"]
    return padded("M-SEARCH * HTTP/1.1\r\n", hdrs, p.length)


def padded(first: str, hdrs: list[str], length: int) -> bytes:
    """Start line, the headers that fit, the first header's value padded to ``length`` bytes (no body)."""
    kept = hdrs[:1]
    for h in hdrs[1:]:
        if len(first) + sum(map(len, kept)) + len(h) + 2 <= length:
            kept.append(h)
    pad = length - len(first) - sum(map(len, kept)) - 2
    kept[0] = kept[0][:-2] + " " + "x" * (pad - 1) + "\r\n" if pad > 0 else kept[0]
    return (first + "".join(kept) + "\r\n").encode()


def detect_http(payload: bytes) -> bool:
    return payload.startswith(b"HTTP/1.") or any(payload.startswith(m.encode() + b" /") for m in METHODS)


def detect_ssdp(payload: bytes) -> bool:
    return payload.startswith((b"M-SEARCH * HTTP/1.1", b"NOTIFY * HTTP/1.1", b"HTTP/1.1 200"))


def learn_http(stats: dict, payload: bytes, side: int) -> None:
    head = payload.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    if not payload.startswith(b"HTTP/"):
        count(stats, "methods", head[0].split(b" ", 1)[0].decode("ascii", "replace"))
    for line in head[1:]:
        name = line.split(b":", 1)[0].decode("ascii", "replace").strip().title()
        if name in HEADERS:
            count(stats, f"headers_{side}", name)


def learn_ssdp(stats: dict, payload: bytes, side: int) -> None:
    count(stats, "kinds", payload.split(b" ", 1)[0].decode("ascii", "replace"))


HTTP = Service("http", "tcp", lambda n, side: 0 if n <= 0 else max(n, MIN_REQUEST if side == 0 else MIN_RESPONSE),
               build_http, detect_http, learn_http)
SSDP = Service("ssdp", "udp", lambda n, side: 0 if n <= 0 else max(n, SSDP_MIN[side]), build_ssdp, detect_ssdp,
               learn_ssdp)
