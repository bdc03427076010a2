"""The trace store ("netdiff-trace-store/1"): many encoded traces per shard file, stored as their header bytes.

:class:`StoreWriter` writes one (local folder or ``s3://`` prefix); :func:`open_store` reads one or several as a
:class:`StoreSource`, a :class:`~netdiff_lib.tracesource.TraceSource` that knows every trace's label, source and
length from the index and decodes shards on demand.  See :mod:`netdiff_lib.store.codec` for the row encoding and
:mod:`netdiff_lib.store.writer` for the files.
"""

from netdiff_lib.store.codec import pack_rows, row_plan, unpack_rows
from netdiff_lib.store.container import STORE_FORMAT
from netdiff_lib.store.source import StoreSource, is_store, open_store
from netdiff_lib.store.writer import INDEX_JSON, StoreWriter, store_fingerprint

__all__ = ["INDEX_JSON", "STORE_FORMAT", "StoreSource", "StoreWriter", "is_store", "open_store", "pack_rows",
           "row_plan", "store_fingerprint", "unpack_rows"]
