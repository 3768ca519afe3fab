"""api-server-rest: the guest's loopback HTTP API for workloads, in front of the AA and the CDH (spec §11).

``http`` reads and writes HTTP/1.1 messages (bounded), ``peer`` decides who may ask, ``router`` maps a request to
an AA or CDH call, ``server`` runs it all on asyncio, ``openapi.json`` documents it (served at ``/openapi.json``).
"""
