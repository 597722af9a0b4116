"""A structure-aware fuzzer for the stream decoder (issue 5, hostile streams).

The decoder's contract, checked for every input: `decode_stream(bytes)` and `decode_payload(bytes, transport,
device)` either succeed or raise StreamError whose offset is an int within the input and whose path is not empty;
nothing else, no hang, no allocation beyond a bounded multiple of the input, and no memory kept once it returns.

Inputs are mutations of the seed streams (the package's samples, or `--seeds DIR`). Field positions come from
the decoded structure: the stream is decoded once and every construct parse is recorded with its stream positions
(`field_map`), so a mutation can flip, insert, delete or duplicate bytes or whole fields, set lengths and counts to
0, max or just past the bytes that remain, rewrite the JSON description the walk trusts, or splice sections between
streams. Input `i` of a run depends only on the seed and `i`, so any input can be made again.

With `--target verdict` a whole stream that decodes is then given to `verdict` (the model's load, no QEMU), which
must answer or refuse with a HarnessError. `--engine atheris` runs the same checks under libFuzzer's coverage
guidance, with these mutations among libFuzzer's own.

The package by its sections: `fields` (the field map and its views), `seeds`, `mutators` (edits of one view, the
JSON description), `mutant` (whole inputs, the Mutator), `checker` (one input against the contract), `targets`
(the verdict after the decoder), `runner` (a run, findings saved and read back), `cli` (`virtio-compat fuzz`),
`guided` (the atheris engine).
"""

from harness.fuzz.checker import Checker, Finding
from harness.fuzz.fields import Field, PayloadRef, Seed, View, field_map
from harness.fuzz.mutant import MUTATIONS, Mutant, Mutator, with_payload_size
from harness.fuzz.mutators import Edit, apply_edits
from harness.fuzz.runner import Stats, run, save_finding
from harness.fuzz.seeds import load_seeds

__all__ = [
    "MUTATIONS", "Checker", "Edit", "Field", "Finding", "Mutant", "Mutator", "PayloadRef", "Seed", "Stats", "View",
    "apply_edits", "field_map", "load_seeds", "run", "save_finding", "with_payload_size",
]
