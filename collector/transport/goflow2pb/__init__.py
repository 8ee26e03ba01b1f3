"""goflow2's published ``pb/flow.proto`` (BSD-3-Clause, netsampler/goflow2 at 6d92c9e) and its Python module.

``flow_pb2.py`` is generated, not written: ``python -m grpc_tools.protoc -I. --python_out=. flow.proto``
(grpcio-tools 1.85, protobuf gencode 7.35.1) in this folder. Regenerate it the same way when the proto changes.
"""
