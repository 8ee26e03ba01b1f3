"""Exporter addresses matched to their ``Exporters.devices`` entries, vectorised, and the sampling-rate override.

A FlowBatch's exporter column is two uint64 words per row; the device entries become (network, mask) word arrays
(``analytics.config.AddressSet``, longest prefix first) so a block of rows is matched with a few array operations
per entry, never Python per row.
"""

from __future__ import annotations

import numpy as np

from analytics.config import AddressSet
from analytics.exporters import Device, ExportersConfig
from analytics.schema import dataset_id


class DeviceTable:
    """The device entries that satisfy ``keep`` (all by default), matched against exporter words."""

    def __init__(self, config: ExportersConfig, keep=lambda d: True):
        self.devices: tuple[Device, ...] = tuple(d for d in config.devices if keep(d))
        self.set = AddressSet.build([(d.cidr, 0, -1, d.cidr) for d in self.devices])

    def __len__(self) -> int:
        return len(self.devices)

    def match(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Per address, the index of its device (longest prefix) or -1."""
        return self.set.match(hi, lo)


#: Datasets whose counters an exporter samples (a firewall's session log is not sampled).
FLOW_DATASETS = np.array([dataset_id(n) for n in ("netflow.v5", "netflow.v9", "ipfix", "sflow")], np.uint8)


class SamplingOverride:
    """Per-exporter sampling rates from the config, for exporters that lie about theirs or omit it."""

    def __init__(self, config: ExportersConfig):
        self.table = DeviceTable(config, lambda d: d.sampling_rate is not None)
        self.rates = np.array([d.sampling_rate for d in self.table.devices], np.uint64)

    def __bool__(self) -> bool:
        return len(self.table) > 0

    def apply(self, rows: np.ndarray) -> int:
        """Rescale bytes and packets of the flow rows (FLOW_DTYPE) of overridden exporters; returns rows changed.

        The decoders scaled the counters by the rate the exporter stated (0 or 1: unsampled), exactly, so the raw
        counts are a division away; they are scaled by the configured rate instead, which is kept in
        ``sampling_rate``.
        """
        if not len(self.table) or not len(rows):
            return 0
        idx = self.table.match(rows["exporter_hi"], rows["exporter_lo"])
        hit = (idx >= 0) & np.isin(rows["dataset"], FLOW_DATASETS)
        if not hit.any():
            return 0
        sel = np.flatnonzero(hit)
        stated = np.maximum(rows["sampling_rate"][sel].astype(np.uint64), np.uint64(1))
        rate = self.rates[idx[sel]]
        rows["bytes"][sel] = rows["bytes"][sel] // stated * rate
        rows["packets"][sel] = rows["packets"][sel] // stated * rate
        rows["sampling_rate"][sel] = rate.astype(np.uint32)
        return len(sel)
