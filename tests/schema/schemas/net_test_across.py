"""11.2 adds two virtio-net-device subsections: `mode` first, then `regs`, whose `regs_hi` is a VMSTATE_*_TEST
field whose test reads `mode`. QEMU loads the subsections into the device in stream order, so on the destination
the test sees the `mode` just loaded (the source's), and the field is read exactly when it was written. Gated by
x-mode (hw_compat_11_1), so 11.1 machine types send neither. A correct module: every cell passes."""

from models.conditions import Property, StateField
from models.releases import V
from models.schema import Compat, Field, Prop, Release, Subsection

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Prop("virtio-net-device", "x-mode", True, V("11.2")),
    Compat(V("11.1"), "virtio-net-device", "x-mode", False, V("11.2"), source="hw_compat_11_1"),
    Subsection("virtio-net-device/mode", V("11.2"), fields=(Field("mode", "uint8", values=(0, 1, 2)),),
               needed=Property("x-mode") & (StateField("mode") != 0)),
    Subsection("virtio-net-device/regs", V("11.2"),
               fields=(Field("regs_lo", "uint32"), Field("regs_hi", "uint32", present=StateField("mode") == 2)),
               needed=Property("x-mode") & (StateField("regs_lo") != 0)),
)
