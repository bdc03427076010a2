"""Backend ``native``: a class-conditional diffusion transformer over packet sequences, trained from scratch.

The backend (:mod:`.backend`) is generic over one seam, the *representation* of traces
(:mod:`.representation`: fit, rows, network, loss, schedule, sample, decode, save/load); a representation is
one module.  Today's is ``tokens`` (:mod:`.field_tokens`): header fields as categorical tokens
(:mod:`.tokens`, :mod:`.vocab`) and masked discrete diffusion in two stages, packet kinds then fields, jointly
with Gaussian diffusion of the inter-arrival time (:mod:`.discrete`, on the transformer of :mod:`.layers`).
:mod:`.model` is the loaded model and its folder, :mod:`.train` the generic training loop (data:
:mod:`.data`), :mod:`.sampler` the generic sampling loop.  The first design (numeric fields as continuous
features, Gaussian diffusion) was removed; it lives at commit 425ffc8 and BENCHMARKS.md keeps its numbers.
"""
