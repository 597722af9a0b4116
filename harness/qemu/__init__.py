"""Real QEMU as a backend and oracle.

process.py  one QEMU process: lifecycle state machine, scratch folder, QMP (qemu.qmp), cleanup
qtest.py    the qtest text protocol (port I/O, guest memory) over QEMU's -qtest socket
drive.py    a legacy virtio-pci driver over qtest; returns the ground truth it wrote and read back
backend.py  save_stream / load_stream: drive, migrate to bytes, load bytes, QEMU's verdict
"""
