"""A subsection that needs a recent machine type, a modern driver and one feature bit at once: 11.2 sends
virtio-net-device/bar where the guest negotiated RING_RESET (bit 40, which only a VERSION_1 driver sees), and the
machine type gate is one release off (MachineAtLeast(11.1), where it must be 11.2). GATE_OFF False is the fix."""

from models import features as F
from models.conditions import GuestFeature, MachineAtLeast
from models.releases import V
from models.schema import Field, Release, Subsection

GATE_OFF = True

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Subsection("virtio-net-device/bar", V("11.2"), fields=(Field("bar", "uint32"),),
               needed=MachineAtLeast(V("11.1") if GATE_OFF else V("11.2")) & GuestFeature(F.RING_RESET)),
)
