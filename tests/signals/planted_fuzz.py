"""`virtio-compat` with bugs planted in the fuzzer's targets, for the signal tests: one input in 7 crashes the
decoder with one of five exceptions, so a run finds (and saves) up to five findings at moments of its own.
`python -m tests.signals.planted_fuzz fuzz --minutes 1 --out DIR`."""

from __future__ import annotations

import sys
from typing import Any

from harness.cli import main
from harness.fuzz import checker as fuzz_checker

_KINDS = (KeyError, ValueError, IndexError, TypeError, LookupError)


def _planted(real: Any) -> Any:
    def decode(data: bytes, *args: Any, **kwargs: Any) -> Any:
        if len(data) % 7 == 0:
            raise _KINDS[len(data) // 7 % len(_KINDS)]("planted")
        return real(data, *args, **kwargs)

    return decode


fuzz_checker.decode_stream = _planted(fuzz_checker.decode_stream)
fuzz_checker.decode_payload = _planted(fuzz_checker.decode_payload)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
