"""ttrpc: the protobuf RPC of kata-agent, the attestation agent and the confidential data hub (specs/ttrpc.md).

``framing`` and ``messages`` are sans-IO (bytes in, values out); ``server`` and ``client`` are the asyncio
edges; ``address`` parses ``unix://`` and ``vsock://`` addresses and ``transport`` opens them.
"""
