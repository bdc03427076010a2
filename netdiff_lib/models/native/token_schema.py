"""Constants of the token view that encoding (:mod:`~netdiff_lib.models.native.tokens`) and decoding
(:mod:`~netdiff_lib.models.native.token_decode`) share: the fields read as values, the port fields, the TCP flag
bits, the option bytes and the inter-arrival bins (tokens.py's docstring has the whole table of fields)."""

from __future__ import annotations

#: the fields whose tokens stand for values (frequent values + escape bins), with their widths in bits
VALUE_FIELDS = {"ip_len": 16, "ttl": 8, "tos": 8, "ip_df": 1, "ip_id": 16, "v6_flow": 20, "tcp_flags": 9,
                "tcp_win": 16, "tcp_urp": 16, "icmp": 16}
PORT_FIELDS = ("sport", "dport")
IAT_BINS_PER_DECADE = 20
#: the nine TCP flag bits of the ``tcp_flags`` field, most significant first
TCP_FLAGS = ("ns", "cwr", "ece", "urg", "ackf", "psh", "rst", "syn", "fin")
OPTION_BYTES = 40
