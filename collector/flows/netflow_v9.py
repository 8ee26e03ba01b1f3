"""NetFlow v9 decoder (RFC 3954): templates scoped by (exporter, source id, template id), batch decoding.

The header carries the exporter's uptime (ms) and export time (s); FIRST_SWITCHED/LAST_SWITCHED (22/21) are uptimes,
so a flow starts (uptime - first) mod 2**32 ms before export. The sequence number counts export packets per
(exporter, source id). Flowset 0 holds templates, 1 options templates, 256 and up data. Everything else is in
``templates.TemplateFlowDecoder``.
"""

from __future__ import annotations

import numpy as np

from collector.flows.templates import TemplateFlowDecoder, TemplateOp, parse_v9_template_set


class NetflowV9Decoder(TemplateFlowDecoder):
    """Decodes NetFlow v9 export packets; counts sequence gaps per (exporter, source id) in export packets."""

    name = "netflow.v9"
    version = 9
    metric = "netflow_v9"

    def _parse_template_set(self, data: bytes, set_id: int) -> list[TemplateOp]:
        return parse_v9_template_set(data, set_id)

    def _account_sequences(self, ex_hi, ex_lo, hdr, records, unknown) -> None:
        self._account(ex_hi, ex_lo, hdr, np.ones(len(ex_hi), np.int64), np.zeros(len(ex_hi), bool))
