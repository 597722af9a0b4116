"""Schema modules (models/schema.py): a mistake is one SchemaError naming the module and the line (exit 2 from
the CLI); a good one gives a new registry that extends the one it was loaded on (which stays as it was), and the
conditions it declares can be decided per machine type without a state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import SchemaError
from harness.wire import virtio as wire
from models import schema
from models.conditions import GuestFeature, MachineAtLeast, Property, Python, StateField, Transport
from models.config import Config, realize
from models.model import reset_state
from models.registry import BASE
from models.releases import MachineType, V

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
EXAMPLES = HERE.parents[1] / "examples" / "schemas"
ROOT = HERE.parents[1]


@pytest.mark.parametrize(("module", "line", "words"), [
    ("syntax_error.py", 5, "syntax error"),
    ("unknown_field_type.py", 8, "unknown type 'u32'"),
    ("bound_field.py", 9, "of=, shift=, rows= and loaded_until= bind a field to the device state's own"),
    ("clashing_name.py", 9, "virtio-net-device/rss clashes with the one in models"),
    ("release_before_base.py", 6, "release 11.0 is placed before 11.2, the release it builds on"),
    ("blk_subsection.py", 6, "has no subsections"),
    ("name_error.py", 4, "NameError: name 'Release' is not defined"),
])
def test_a_mistake_names_the_module_and_the_line(module: str, line: int, words: str) -> None:
    with pytest.raises(SchemaError) as e:
        schema.load(SCHEMAS / module)
    assert str(e.value).startswith(f"{SCHEMAS / module}:{line}: "), str(e.value)
    assert words in str(e.value)


def test_more_mistakes(tmp_path: Path) -> None:
    cases = {
        "x = 1\n": ":1: a schema module binds DECLARATIONS",
        "DECLARATIONS = (1,)\n": ":1: 1 is not a declaration",
        "from models.releases import V\nfrom models.schema import Release\n"
        "DECLARATIONS = (\n    Release(V('11.1'), after=V('11.0')),\n)\n": ":4: release 11.1 is already modelled",
        "from models.releases import V\nfrom models.schema import Release\n"
        "DECLARATIONS = (\n    Release(V('11.2'), after=V('7.2')),\n)\n": ":4: release 11.2 builds on 7.2, but 11.1",
        "from models.releases import V\nfrom models.schema import Prop\n"
        "DECLARATIONS = (Prop('virtio-net-device', 'mq', True),)\n": ":3: property mq of virtio-net-device clashes",
        "from models.releases import V\nfrom models.schema import Compat\n"
        "DECLARATIONS = (Compat(V('11.1'), 'virtio-device', 'x-no', False, V('11.2')),)\n": "x-no is not a property",
    }
    head = ("from models.conditions import Property\nfrom models.releases import V\n"
            "from models.schema import DeviceVersion, Field, Release, SubsectionVersion\n"
            "DECLARATIONS = (\n    Release(V('11.2'), after=V('11.1')),\n    ")
    device_cases = {  # DeviceVersion and the field types, each on line 6 of its module
        "DeviceVersion('virtio-blk-device', V('11.2')),": "virtio-blk has none (save_device/load_device)",
        "DeviceVersion('virtio-net-device', V('11.2'), fields=(Field('foo', 'uint32', version=13),), version=12),":
            "field 'foo' is on the wire from version 13, above the vmsd's version_id 12",
        "DeviceVersion('virtio-net-device', V('11.2'), version=10),": "a version_id goes down in 11.2 (11 -> 10",
        "DeviceVersion('virtio-net-device', V('11.2'), minimum_version=12),":
            "virtio-net-device's minimum_version_id 12 is above its version_id 11",
        "DeviceVersion('virtio-net-device', V('11.2'), version=0),": "version is a version_id (a positive int32)",
        "DeviceVersion('virtio-net-device', V('11.2'), fields=(Field('promisc', 'uint8'),)),":
            "field 'promisc' clashes with a state field",
        "DeviceVersion('virtio-net-device', V('11.2'), fields=(Field('k', 'buffer'),)),": "a buffer has a size",
        "DeviceVersion('virtio-net-device', V('11.2'), fields=(Field('k', 'uint8', count=-1),)),":
            "count is a number of elements",
        "DeviceVersion('virtio-net-device', V('11.2'), fields=(Field('k', 'uint8', version=12, "
        "present=Property('x')),), version=12),": "gated by its version or by a test",
        "DeviceVersion('virtio-net-device', V('12.0')),": "release 12.0 is not modelled",
        "SubsectionVersion('virtio/stardom', V('11.2'), 2),": "models/ has no such subsection",
        "SubsectionVersion('virtio-net-device/rss', V('11.2'), 2),": "version 2 is not above 2, the version 11.2",
        "SubsectionVersion('virtio/started', V('11.2'), 2, fields=(Field('k', 'uint8'),)),":
            "field 'k' must come with a version above 1 and up to 2",
    }
    cases.update({head + text + "\n)\n": words for text, words in device_cases.items()})
    for i, (text, words) in enumerate(cases.items()):
        module = tmp_path / f"m{i}.py"
        module.write_text(text)
        with pytest.raises(SchemaError) as e:
            schema.load(module)
        assert words in str(e.value) and str(module) in str(e.value), str(e.value)
        if text.startswith(head):
            assert str(e.value).startswith(f"{module}:6: "), str(e.value)
    with pytest.raises(SchemaError, match="no such schema module"):
        schema.load(tmp_path / "missing.py")


def test_the_cli_prints_one_line_and_exits_2() -> None:
    for args in (["diff", "11.1", "11.2", "--schema", str(SCHEMAS / "unknown_field_type.py")],
                 ["check", "--schema", str(SCHEMAS / "release_before_base.py"), "--profile", "dev"]):
        proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"virtio-compat: error: {SCHEMAS}/")


def test_loading_extends_a_new_registry_and_leaves_the_base_as_it_was() -> None:
    before = (BASE.releases, BASE.all_versions, BASE.props, BASE.compat, BASE.core_subsections, BASE.wire)
    reg = schema.load(SCHEMAS / "core_bar_gated.py")
    [loaded] = reg.schemas
    assert loaded.releases == (V("11.2"),) and reg.schema_paths() == [str(SCHEMAS / "core_bar_gated.py")]
    assert reg.releases[-1] == V("11.2") and V("11.2") in reg.all_versions
    names = [s.name for s in reg.core_subsections]
    assert names.index("virtio/bar") == names.index("virtio/started") + 1  # after=
    assert "virtio/bar" in wire.core_subsections("pci", reg.wire).known
    assert schema.load(SCHEMAS / "core_bar_gated.py", reg) is reg  # loading again: the same, once
    cfg = Config(V("11.2"), MachineType("pc-q35", V("11.2")), "virtio-rng")
    assert realize(cfg, reg).registry is reg and realize(cfg, reg).props["x-bar"] is True
    assert dict(reset_state(realize(cfg, reg)).extra) == {"bar": 0, "bar_on": 0}
    old = Config(V("11.2"), MachineType("pc-q35", V("11.1")), "virtio-rng")
    assert realize(old, reg).props["x-bar"] is False  # hw_compat_11_1
    with pytest.raises(SchemaError, match="QEMU 11.2 has no machine type pc-q35-11.2"):
        realize(cfg)  # the in-tree registry has no 11.2
    assert (BASE.releases, BASE.all_versions, BASE.props, BASE.compat, BASE.core_subsections, BASE.wire) == before
    assert "virtio/bar" not in wire.core_subsections("pci").known
    assert dict(reset_state(realize(Config(V("11.1"), MachineType("pc-q35", V("11.1")), "virtio-rng"))).extra) == {}
    # the same module loaded again on the base is a registry of its own, equal in what it declares
    again = schema.load(SCHEMAS / "core_bar_gated.py")
    assert again is not reg and again.releases == reg.releases and again.schema_paths() == reg.schema_paths()


def test_downstream_machine_types() -> None:
    reg = schema.load(SCHEMAS / "rhel_foo.py")
    rhel = [m for m in reg.machine_types(V("11.2"), "pci") if m.line]
    assert [m.name for m in rhel] == ["pc-q35-rhel9.4.0", "pc-q35-rhel10.0.0", "pc-q35-rhel11.1.0"]
    assert reg.machine("pc-q35-rhel9.4.0") == MachineType("pc-q35", V("8.2"), "rhel", V("9.4"))
    assert [m.name for m in reg.machine_types(V("11.1"), "pci") if m.line] == ["pc-q35-rhel9.4.0", "pc-q35-rhel10.0.0"]
    rhel94 = reg.machine("pc-q35-rhel9.4.0")
    on = Config(V("11.2"), rhel94, "virtio-net")
    assert realize(on, reg).props["x-foo"] is False  # the line's own entry (hw_compat_rhel_10_0)
    # upstream entries do not reach the line (upstream_compat=False): 10.1's tunnel properties stay on
    assert realize(Config(V("11.1"), rhel94, "virtio-net"), reg).props["host_tunnel"] is True
    assert realize(Config(V("11.1"), MachineType("pc-q35", V("8.2")), "virtio-net"), reg).props["host_tunnel"] is False
    with pytest.raises(ValueError):
        BASE.machine("pc-q35-rhel9.4.0")
    assert not [m for m in BASE.machine_types(V("11.1"), "pci") if m.line]


def test_conditions_are_decided_per_machine_type_without_a_state() -> None:
    reg = schema.load(EXAMPLES / "net_foo_gated.py")
    gate = Property("x-foo") & (StateField("foo") != 0)
    assert gate.describe() == "x-foo and foo != 0" and not gate.python() and gate.properties() == {"x-foo"}
    new, old = MachineType("pc-q35", V("11.2")), MachineType("pc-q35", V("11.1"))
    assert gate.static(reg.static(V("11.2"), old, "virtio-net", "pci")) is False  # hw_compat_11_1
    assert gate.static(reg.static(V("11.2"), new, "virtio-net", "pci")) is None  # the state decides
    varied = reg.static(V("11.2"), old, "virtio-net", "pci", frozenset({"x-foo"}))
    assert gate.static(varied) is None  # a property users set decides nothing
    assert (MachineAtLeast(V("11.2")) | StateField("foo")).static(reg.static(V("11.2"), new, "virtio-net", "pci"))
    assert (~Transport("pci")).static(reg.static(V("11.2"), new, "virtio-net", "pci")) is False
    opaque = Python(lambda r, s: True) & MachineAtLeast(V("2.0"))
    assert opaque.python() and opaque.static(reg.static(V("11.2"), new, "virtio-net", "pci")) is None
    r = realize(Config(V("11.2"), new, "virtio-net"), reg)
    s = reset_state(r)
    assert not gate(r, s) and gate(r, s.with_(extra=(("foo", 3),)))
    assert GuestFeature(32)(r, s.with_(guest_features=1 << 32)) and StateField("broken")(r, s.with_(broken=True))


def test_loading_rebinds_no_module_global() -> None:
    """A schema module gives a new registry: no name in models/ or in the wire layouts is bound to anything else
    afterwards (the declarations were once module globals that loading rebound)."""
    import importlib
    import pkgutil

    import models

    mods = [importlib.import_module(f"models.{m.name}") for m in pkgutil.walk_packages(models.__path__)] + [wire]
    before = {(m.__name__, k): id(v) for m in mods for k, v in vars(m).items()}
    loaded = [schema.load(SCHEMAS / m) for m in ("rhel_foo.py", "core_bar_gated.py", "started_v2.py",
                                                 "net_device_v12.py")]
    assert [r.schemas[0].path.name for r in loaded] == ["rhel_foo.py", "core_bar_gated.py", "started_v2.py",
                                                       "net_device_v12.py"]
    assert {(m.__name__, k): id(v) for m in mods for k, v in vars(m).items()} == before
