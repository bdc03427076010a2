"""Long captures for the trace and label tests, made at test time from the project's recorded samples.

:func:`merge` lays recorded captures one after another on a new time line (each shifted to start at a given
time, optionally with its IPv4 addresses rewritten) and writes them, in time order, as one classic pcap with the
project's :class:`~netdiff_lib.pcap.PcapWriter`. It returns every packet with its flow fields, parsed by a small
independent parser (not netdiff's), so tests can compute the expected traces and write label files. The code
lives in :mod:`benchmarks.replay`, which the long-capture benchmark builds on too.
"""

from benchmarks.replay import NS, SAMPLES, Packet, Rewrite, flows, merge, parse, read, rewrite_v4

__all__ = ["NS", "SAMPLES", "Packet", "Rewrite", "flows", "merge", "parse", "read", "rewrite_v4"]
