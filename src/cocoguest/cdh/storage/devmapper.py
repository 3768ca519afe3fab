"""Whether this kernel can map devices (device-mapper), checked before ``cryptsetup open``.

Two facts must hold: the kernel registered the ``device-mapper`` misc device (``/proc/misc``), and its control
node ``/dev/mapper/control`` exists. The node alone proves nothing: cryptsetup creates it with ``mknod`` even
where the kernel has no device-mapper. Tests pass other paths to exercise every answer through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

DEVICE_MAPPER_CONTROL: Final = Path("/dev/mapper/control")
PROC_MISC: Final = Path("/proc/misc")


def device_mapper_missing(control: Path = DEVICE_MAPPER_CONTROL, proc_misc: Path = PROC_MISC) -> str | None:
    """``None`` when device-mapper is usable, else the reason naming the missing kernel feature."""
    if not control.exists():
        return f"no {control}: device-mapper not available (kernel module dm_mod / dm_crypt)"
    try:
        misc = proc_misc.read_text(encoding="ascii", errors="replace")
    except OSError:
        return f"cannot read {proc_misc}: device-mapper not available"
    if not any(line.split()[1:2] == ["device-mapper"] for line in misc.splitlines()):
        return f"no device-mapper in {proc_misc}: device-mapper not available (load kernel module dm_mod)"
    return None
