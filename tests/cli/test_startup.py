"""A short command imports only what it needs: `decode` of a stream loads neither the models nor Hypothesis,
pytest, the matrix or the fleet (each command's module is imported when it runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, SAMPLES

# what decode without --schema never needs: the models, the strategies and the engines above them
HEAVY = ("models", "strategies", "hypothesis", "pytest", "_pytest", "harness.check", "harness.matrix",
         "harness.fleet", "harness.rules", "harness.verdict")

PROBE = """
import contextlib, io, json, sys
from harness.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _modules(*argv: str) -> tuple[int, list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VIRTIO_COMPAT_PARSER_CACHE": ""})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return got["code"], got["modules"]


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY or m.startswith(HEAVY)]


def test_decode_imports_no_model_and_no_engine() -> None:
    code, modules = _modules("decode", "--json", str(SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"))
    assert code == 0
    assert "harness.wire.stream" in modules  # the probe did decode
    assert _heavy(modules) == []


def test_decode_with_a_schema_module_loads_the_models() -> None:
    schema = ROOT / "tests" / "schema" / "schemas" / "net_device_v12.py"
    code, modules = _modules("decode", str(SAMPLES / "pc-i440fx-7.2-virtio-net-driven.bin"), "--schema", str(schema))
    assert code == 0
    assert "models.registry" in modules  # the same command with a schema module does need them


def test_a_usage_error_names_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "harness.cli", "decod"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    for name in ("decode", "verdict", "bench", "fuzz", "replay", "check", "diff", "qemu", "mutate", "fleet"):
        assert f"'{name}'" in out.stderr
