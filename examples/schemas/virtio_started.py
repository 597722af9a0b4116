"""QEMU 4.1's virtio/started (badaf79cfd, "virtio: Introduce started flag to VirtioDevice"), declared as a schema
module: a core subsection carrying VirtIODevice.started, sent when it is set, which virtio_set_started does only
where the new property use-started is on; hw_compat_4_0 turns it off, so machine types 4.0 and older never send
it. models/ holds the same three declarations in-tree (models/props.py, models/releases.py, models/core.py); this
module gives them to a registry that lacks them (README, "Adding a release or a device version")."""

from models.conditions import Property, StateField, Status
from models.releases import V
from models.schema import Compat, Field, Prop, Subsection

STARTED = Field("started", "bool", derived=Status(4) & Property("use-started"))  # follows DRIVER_OK

DECLARATIONS = (
    Prop("virtio-device", "use-started", True, V("4.1"), source="badaf79cfd"),
    Compat(V("4.0"), "virtio-device", "use-started", False, V("4.1"), source="hw_compat_4_0"),
    Subsection("virtio/started", V("4.1"), fields=(STARTED,),
               needed=StateField("started", settable=STARTED.derived), after="virtio/extra_state",
               source="badaf79cfd"),
)
