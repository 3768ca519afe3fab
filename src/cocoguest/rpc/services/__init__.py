"""Proto <-> domain adapters: the AA (and later CDH, key provider) services on ttrpc and gRPC, and their clients.

Each service is one table of transport-neutral handlers (serialized request in, serialized answer out) bound to
both transports, so ttrpc and gRPC serve the same code; domain errors become status codes here.
"""
