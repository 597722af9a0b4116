"""Real QEMU as a backend and oracle.

process.py     one QEMU process: lifecycle state machine, scratch folder, QMP (qemu.qmp), cleanup
reaper.py      scratch folders and the QEMUs alive in this Python process; what ends them at exit or when killed
qtest.py       the qtest text protocol (port I/O, guest memory) over QEMU's -qtest socket
release.py     what a binary takes and offers, by its version: migration URI, safe introspection, machine types
drive.py       a legacy virtio-pci driver over qtest; returns the ground truth it wrote and read back
drive_mmio.py  the same for legacy virtio-mmio (aarch64 virt); virtio-ccw cannot be driven over qtest
backend.py     save_stream / load_stream: drive, migrate to bytes, load bytes, QEMU's verdict
loaded.py      what a destination holds after a load: x-query-virtio where safe, else its re-save decoded
oracle.py      QEMU against the model (R12): verdicts, loaded state, re-saved bytes, failure files
crosscheck.py  `virtio-compat qemu`: random reachable states through two binaries, the rules and R12
"""
