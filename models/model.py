"""save() and load() of one virtio device payload, for any modelled release: the model's public face.

save(realized, state) gives the bytes virtio_save writes (models/save.py); load(realized, data, ...) replays
virtio_load's steps in QEMU's order (§4, models/load.py) and returns the outcome, the loaded state and a trace;
reset_state() is what a destination starts from (models/reset.py), guest_rings() what it reads of guest RAM
(models/rings.py).
"""

from __future__ import annotations

from models.load import ACCEPTED, ACCEPTED_BROKEN, CRASHED, REJECTED, UNDEFINED, LoadResult, load
from models.load_checks import Rejected
from models.reset import local_config_space, reset_state, rom_bar_size
from models.rings import GuestRam, guest_rings, ring_addresses, rings_big_endian, vring_align, with_rings
from models.save import save, saved_queue_count, section_version, state_from_wire, to_wire

__all__ = ["ACCEPTED", "ACCEPTED_BROKEN", "CRASHED", "REJECTED", "UNDEFINED", "GuestRam", "LoadResult", "Rejected",
           "guest_rings", "load", "local_config_space", "reset_state", "ring_addresses", "rings_big_endian",
           "rom_bar_size", "save",
           "saved_queue_count", "section_version", "state_from_wire", "to_wire", "vring_align", "with_rings"]
