"""Secure mounts of the CDH (spec §8.5): ``block-device`` volumes encrypted with LUKS2 through cryptsetup.

``request`` validates a SecureMount request, ``keys`` obtains its key, ``cryptsetup`` runs the tool,
``devmapper`` says whether the kernel can map devices, ``block_device`` puts it together (:func:`secure_mount`).
"""
