"""Application payloads for reconstructed packets: valid messages of the generated length, learned per class.

nPrint without ``-p`` (and so the generators) carries no payload bytes, only payload lengths; tshark judges
payloads by port, and zeros are not DHCP, NTP or anything else.  This package fills them:

- :mod:`.dhcp`, :mod:`.dns` (and mDNS), :mod:`.ntp`, :mod:`.text` (HTTP, SSDP), :mod:`.tls`: one builder per
  service, consistent with the flow (requests from clients, answers from servers, shared transaction ids);
- :mod:`.ports` with ``ports.json`` (measured by :mod:`.scan`): bytes that tshark accepts on every other port;
- :mod:`.profile`: :class:`PayloadProfile`, the per-class structure learned from training captures (JSON,
  ``payloads.json`` in a model folder), never the identifying values, which :mod:`.names` makes up;
- :mod:`.synth`: the two reconstruction steps (lengths before the TCP rules, bytes after).
"""

from netdiff_lib.payloads.profile import FILE_NAME, PayloadProfile, load_payloads

__all__ = ["FILE_NAME", "PayloadProfile", "load_payloads"]
