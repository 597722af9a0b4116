"""`virtio-compat diff A B`: the static differences between the virtio formats of two releases, each with its
migration verdict.

Compared per device and transport: the subsections each release knows (core and device), their version and
body (the construct layouts: fields added, removed, moved, resized), their needed() rule, the load checks
that hold (models/core.py CHECKS) and the device properties with the values machine types give them.
A subsection one side sends and the other does not know breaks migration where needed() can hold on a machine
type both have. needed() written in the vocabulary of models/conditions.py is decided statically per machine
type; arbitrary Python (and load checks, which are code) is decided by running the matrix cells of the
direction concerned (harness.matrix.run_cell), and the output says so.

The parts: layout (the subsections a release knows, with their construct layouts), context (machine types both
releases have, static conditions), cells (the matrix cells run for Python), result (Diff, Difference), the
comparisons (subsections, devices: device vmsds, checks: load checks and properties) and command (diff(), the
text and the command line).
"""

from harness.diff.cells import CellRunner, exercises
from harness.diff.command import diff, format_text, run_cli
from harness.diff.context import common_machines, machine_ranges, static_context, undecided
from harness.diff.layout import SubInfo, fields_of, size_of, subsections_of, type_name
from harness.diff.result import BREAKS, GATE, SAFE, Diff, Difference
from harness.diff.subsections import compare_subsections
from harness.matrix import DEVICES

__all__ = ["BREAKS", "DEVICES", "GATE", "SAFE", "CellRunner", "Diff", "Difference", "SubInfo", "common_machines",
           "compare_subsections", "diff", "exercises", "fields_of", "format_text", "machine_ranges", "run_cli",
           "size_of", "static_context", "subsections_of", "type_name", "undecided"]
