"""Pure compute for brokerwatch: the columnar schema, config model, numba kernels and DET0002 detections.

Nothing here imports ``collector``, asyncio or does I/O.
"""
