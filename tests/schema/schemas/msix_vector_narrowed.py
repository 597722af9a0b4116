"""A removed load bound: 11.1 without virtio_pci_load_config/load_queue's MSI-X vector range check (models/core.py's
msix_vector holds from 7.2 on). The hostile classes config-vector-out-of-table and queue-vector-out-of-table hold
the 11.1 cells to -EINVAL, so the matrix catches it."""

from models.releases import V
from models.schema import LoadCheck

DECLARATIONS = (
    LoadCheck("msix_vector", V("7.2"), V("11.1"), "", source="an experiment"),
)
