"""The pcap <-> nPrint codec: locate headers, encode bits, write/read nPrint CSV, decode back to packets."""

from netdiff_lib.nprint.csvio import CsvOptions, read_nprint_csv, write_nprint_csv
from netdiff_lib.nprint.decode import Packed, decode_matrix, pack_matrix, write_trace_pcap
from netdiff_lib.nprint.encode import EncodeResult, encode_batch, encode_pcap, iter_encoded

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
