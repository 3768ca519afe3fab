"""coco-keyprovider, the host-side ocicrypt key provider of Confidential Containers (guest-components.md §7.4).

``params`` parses the ``keyid=...::keypath=...::algorithm=...::sample=...`` parameters, ``kek_store`` registers
KEKs in a KBS through its admin API, ``wrap`` answers the key provider protocol's ``keywrap`` with an
AnnotationPacket v1. The gRPC service lives in :mod:`cocoguest.rpc.services.keyprovider_service`; the binary in
:mod:`cocoguest.cli.coco_keyprovider`.
"""
