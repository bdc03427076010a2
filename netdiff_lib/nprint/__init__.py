"""The pcap <-> nPrint codec: locate headers, encode bits, write/read nPrint CSV, decode back to packets.

The names below load their module on first use (PEP 562), so ``netdiff nprint``, which starts once per
capture under nprintML, imports only the modules its options need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netdiff_lib.nprint.csvio import CsvOptions, read_nprint_csv, write_nprint_csv
    from netdiff_lib.nprint.decode import Packed, decode_matrix, pack_matrix, write_trace_pcap
    from netdiff_lib.nprint.encode import EncodeResult, encode_batch, encode_pcap, iter_encoded

_HOME = {
    "CsvOptions": "csvio", "read_nprint_csv": "csvio", "write_nprint_csv": "csvio",
    "Packed": "decode", "decode_matrix": "decode", "pack_matrix": "decode", "write_trace_pcap": "decode",
    "EncodeResult": "encode", "encode_batch": "encode", "encode_pcap": "encode", "iter_encoded": "encode",
}
__all__ = [
    "CsvOptions",
    "EncodeResult",
    "Packed",
    "decode_matrix",
    "encode_batch",
    "encode_pcap",
    "iter_encoded",
    "pack_matrix",
    "read_nprint_csv",
    "write_nprint_csv",
    "write_trace_pcap",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
