"""virtio/device_endian declared again (on a registry without it), with the mistake of reading "VIRTIO 1.0 devices
are always little-endian" backwards: sent only for a VERSION_1 device that is not little-endian, never for a legacy
one. On a little-endian target a legacy device of a big-endian guest (aarch64 virt, reset by an EE=1 CPU) is big,
QEMU sends the subsection, this module does not: only the real stream shows it (R5 against QEMU's), as the model's
own R5 and R7 hold the stream to the same needed(). MODERN_ONLY False is QEMU's rule (virtio_device_endian_needed)."""

from models import features as F
from models.conditions import GuestFeature, StateField, TargetEndian
from models.endian import BiEndianTarget, GuestEndian
from models.releases import V
from models.schema import Field, Subsection
from models.state import ENDIAN_LITTLE

MODERN_ONLY = True

VERSION_1 = GuestFeature(F.VERSION_1)
ENDIAN = StateField("device_endian", settable=BiEndianTarget(), reset=TargetEndian())
RIGHT = (VERSION_1 & (ENDIAN != ENDIAN_LITTLE)) | (~VERSION_1 & (ENDIAN != TargetEndian()))

DECLARATIONS = (
    Subsection("virtio/device_endian", V("2.4"),
               fields=(Field("device_endian", "uint8", reset=TargetEndian(), derived=GuestEndian()),),
               needed=VERSION_1 & (ENDIAN != ENDIAN_LITTLE) if MODERN_ONLY else RIGHT, after="virtio"),
)
