"""What `virtio-compat decode` shows: a summary of each virtio device in a stream, as a dict with
fixed key names (`--json`) or as text for a person."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import construct as c

from harness.wire import scsi as wire_scsi
from harness.wire.primitives import subsection
from harness.wire.stream import Section, Stream, VirtioPayload

if TYPE_CHECKING:  # the models load only with a schema module's registry: decode alone never needs them
    from models.registry import Registry

STATUS_BITS = {1: "ACKNOWLEDGE", 2: "DRIVER", 4: "DRIVER_OK", 8: "FEATURES_OK", 0x40: "NEEDS_RESET",
               0x80: "FAILED"}


def subsection_names(subs: list[Any]) -> list[str]:
    """Names in stream order, nested subsections (inside virtio/extra_state) included."""
    out: list[str] = []
    for sub in subs:
        out.append(sub.name)
        inner = getattr(sub.body, "subsections", None) if sub.body is not None else None
        if isinstance(inner, list):
            out += subsection_names(inner)
    return out


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _device_state(p: VirtioPayload) -> dict[str, Any]:
    d = p.value.device
    if p.device == "virtio-net":
        return {
            "mac": _mac(d.mac),
            "tx_waiting": d.tx_waiting,
            "mergeable_rx_bufs": d.mergeable_rx_bufs,
            "status": d.status,
            "promisc": d.promisc,
            "allmulti": d.allmulti,
            "mac_table_in_use": d.mac_table_in_use,
            "mac_table": [_mac(d.mac_table_macs[i : i + 6]) for i in range(0, min(len(d.mac_table_macs), 384), 6)],
            "has_vnet_hdr": d.has_vnet_hdr,
            "multi_overflow": d.multi_overflow,
            "uni_overflow": d.uni_overflow,
            "alluni": d.alluni,
            "nomulti": d.nomulti,
            "nouni": d.nouni,
            "nobcast": d.nobcast,
            "has_ufo": d.has_ufo,
            "max_queue_pairs": d.max_queue_pairs,
            "curr_queue_pairs": d.curr_queue_pairs,
            "tx_waiting_more": list(d.tx_waiting_more),
            "curr_guest_offloads": d.curr_guest_offloads,
            "subsections": subsection_names(d.subsections),
        }
    if p.device == "virtio-blk":
        reqs = []
        for r in d.requests:
            e = r.elem
            out_n, in_n = min(e.out_num, 1024), min(e.in_num, 1024)
            reqs.append({
                "queue": r.vq_index,
                "head": e.index,
                "out_num": e.out_num,
                "in_num": e.in_num,
                "out_addr": list(e.out_addr[:out_n]),
                "out_len": [sg[1] for sg in e.out_sg[:out_n]],
                "in_addr": list(e.in_addr[:in_n]),
                "in_len": [sg[1] for sg in e.in_sg[:in_n]],
            })
        return {"requests": reqs}
    if p.device == "virtio-balloon":
        fpr = subsection(d.subsections, "virtio-balloon-device/free-page-report")
        poison = subsection(d.subsections, "virtio-balloon-device/page-poison")
        return {
            "num_pages": d.num_pages,
            "actual": d.actual,
            "free_page_hint_cmd_id": fpr.free_page_hint_cmd_id if fpr else None,
            "free_page_hint_status": fpr.free_page_hint_status if fpr else None,
            "poison_val": poison.poison_val if poison else None,
            "subsections": subsection_names(d.subsections),
        }
    return {}


def device_summary(p: VirtioPayload, registry: Registry | None = None) -> dict[str, Any]:
    v = p.value
    subs = v.subsections
    f64 = subsection(subs, "virtio/64bit_features")
    f128 = subsection(subs, "virtio/128bit_features")
    vqs = subsection(subs, "virtio/virtqueues")
    endian = subsection(subs, "virtio/device_endian")
    broken = subsection(subs, "virtio/broken")
    started = subsection(subs, "virtio/started")
    t = v.transport
    msix = t.msix_vectors if p.transport == "pci" else 0
    if p.transport == "pci":
        config_vector = t.config_vector
    elif p.transport == "ccw":
        config_vector = t.tmp.config_vector
    else:
        config_vector = None
    queues = []
    for i, q in enumerate(v.queues):
        entry = {
            "index": i,
            "num": q.num,
            "desc": q.desc,
            "avail": vqs.vqs[i][0] if vqs is not None and i < len(vqs.vqs) else None,
            "used": vqs.vqs[i][1] if vqs is not None and i < len(vqs.vqs) else None,
            "last_avail_idx": q.last_avail_idx,
            "vector": q.get("vector"),
        }
        if p.transport == "mmio":
            entry["align"] = q.align
        queues.append(entry)
    out: dict[str, Any] = {
        "section": p.section,
        "instance_id": p.instance_id,
        "version_id": p.version_id,
        "device": p.device,
        "transport": p.transport,
        "offset": p.offset,
        "size": p.size,
        "status": v.status,
        "isr": v.isr,
        "queue_sel": v.queue_sel,
        "guest_features": f64.guest_features if f64 is not None else v.guest_features_lo,
        "guest_features_lo": v.guest_features_lo,
        "guest_features_hi64": f128.guest_features_ex1 if f128 is not None else None,
        "config_len": v.config_len,
        "config": bytes(v.config).hex(),
        "msix_vectors": msix,
        "config_vector": config_vector,
        "queues": queues,
        "subsections": subsection_names(subs),
        "device_endian": endian.device_endian if endian is not None else None,
        "broken": bool(broken.broken) if broken is not None else False,
        "started": bool(started.started) if started is not None else None,
        "device_state": _device_state(p),
    }
    if registry is not None and registry.schemas:  # the fields schema modules declare, as this payload carries them
        from models import declared

        out["schema_fields"] = {k: v.hex() if isinstance(v, bytes) else list(v) if isinstance(v, tuple) else v
                                for k, v in declared.sent(registry, v).items()}
    if p.transport == "pci":
        cfg = bytes(t.pci.config)
        out["pci_config_size"] = len(cfg)
        out["pci_command"] = int.from_bytes(cfg[4:6], "little")
    elif p.transport == "mmio":
        out["host_features_sel"] = t.host_features_sel
        out["guest_features_sel"] = t.guest_features_sel
        out["guest_page_shift"] = t.guest_page_shift
    else:
        out["revision"] = t.revision
    return out


def _undecoded(p: VirtioPayload) -> dict[str, Any]:
    """A device whose payload this tool cannot decode: where it is, and why."""
    return {"section": p.section, "instance_id": p.instance_id, "version_id": p.version_id, "device": p.device,
            "transport": p.transport, "offset": p.offset, "size": p.size, "error": str(p.error)}


def scsi_disks(s: Stream, hba_section: str) -> list[dict[str, Any]]:
    """The SCSI disk sections on the virtio-scsi of `hba_section`, with their in-flight requests."""
    out: list[dict[str, Any]] = []
    prefix = hba_section.rsplit("/", 1)[0]
    for rec in s.records:
        if not isinstance(rec, Section) or not wire_scsi.is_disk_section(rec.idstr) or \
                wire_scsi.hba_prefix(rec.idstr) != prefix:
            continue
        entry: dict[str, Any] = {"section": rec.idstr, "offset": rec.offset}
        body = rec.body if isinstance(rec.body, bytes) else b""
        try:
            v, emulated, packed = wire_scsi.read_disk(body, s.machine)
        except c.ConstructError as e:
            entry["error"] = str(e).splitlines()[0]
            out.append(entry)
            continue
        q = v.qdev
        entry.update(unit_attention=[q.unit_attention_key, q.unit_attention_asc, q.unit_attention_ascq],
                     sense_is_ua=bool(q.sense_is_ua), sense_len=q.sense_len, emulated_requests=emulated,
                     ndescs=packed, requests=[wire_scsi.request_summary(r) for r in wire_scsi.requests(v)],
                     subsections=[x.name for x in q.subsections] + [x.name for x in v.subsections])
        out.append(entry)
    return out


def stream_summary(s: Stream, registry: Registry | None = None) -> dict[str, Any]:
    """What `decode` shows of a stream; `registry`: the declarations it was decoded with (their fields shown;
    None: the in-tree ones, which declare none)."""
    devices = [device_summary(p, registry) if p.value is not None else _undecoded(p) for p in s.devices]
    for d in devices:
        if d["device"] == "virtio-scsi" and "error" not in d:  # its requests travel in its disks' sections
            d["device_state"] = {"disks": scsi_disks(s, d["section"])}
    return {
        "machine": s.machine,
        "machine_source": s.machine_source,
        "devices": devices,
        "stream": {
            "version": s.version,
            "configuration_section": s.configuration is not None,
            "section_footers": s.footers,
            "json_description": s.vmdesc is not None,
            "page_size": s.page_size,
            "not_understood": list(s.notes),
        },
    }


def _status_text(status: int) -> str:
    names = [n for bit, n in STATUS_BITS.items() if status & bit]
    return f"{status:#04x}" + (f" ({' '.join(names)})" if names else "")


def format_text(summary: dict[str, Any]) -> str:
    machine = summary["machine"] or "unknown (no configuration section)"
    if summary["machine_source"] == "inferred":
        machine += " (inferred: no configuration section, but a JSON description)"
    lines = [f"machine: {machine}"]
    st = summary["stream"]
    lines.append(f"stream: version {st['version']}, section footers {'yes' if st['section_footers'] else 'no'}, "
                 f"JSON description {'yes' if st['json_description'] else 'no'}, page size {st['page_size']}")
    for note in st["not_understood"]:
        lines.append(f"not understood: {note}")
    if not summary["devices"]:
        lines.append("no virtio devices in this stream")
    for d in summary["devices"]:
        lines.append("")
        if "error" in d:
            lines.append(f"{d['section']}  {d['device']} on {d['transport']}: payload of {d['size']} bytes at offset "
                         f"{d['offset']} not understood: {d['error']}")
            continue
        lines.append(f"{d['section']}  {d['device']} on {d['transport']}, instance {d['instance_id']}, "
                     f"version {d['version_id']}; payload {d['size']} bytes at offset {d['offset']}")
        lines.append(f"  status {_status_text(d['status'])}  isr {d['isr']}  queue_sel {d['queue_sel']}")
        lines.append(f"  guest features {d['guest_features']:#x} (32-bit field {d['guest_features_lo']:#x})")
        lines.append(f"  config ({d['config_len']} bytes): {d['config'] or '-'}")
        if d["transport"] == "pci":
            msix = f"{d['msix_vectors']} MSI-X vectors, config vector {d['config_vector']:#06x}" \
                if d["msix_vectors"] else "no MSI-X"
            lines.append(f"  PCI: {d['pci_config_size']}-byte config space, command {d['pci_command']:#x}, {msix}")
        lines.append(f"  queues: {len(d['queues'])}")
        for q in d["queues"]:
            extra = "".join(f"  {k} {q[k]:#x}" for k in ("avail", "used") if q[k] is not None)
            vec = f"  vector {q['vector']:#06x}" if q["vector"] is not None else ""
            lines.append(f"    [{q['index']}] num {q['num']}  desc {q['desc']:#x}{extra}  "
                         f"last_avail_idx {q['last_avail_idx']}{vec}")
        lines.append(f"  subsections: {', '.join(d['subsections']) or '-'}")
        flags = [f"broken {str(d['broken']).lower()}"]
        if d["started"] is not None:
            flags.append(f"started {str(d['started']).lower()}")
        if d["device_endian"] is not None:
            flags.append(f"device_endian {d['device_endian']}")
        lines.append("  " + ", ".join(flags))
        ds = d["device_state"]
        if d["device"] == "virtio-net":
            lines.append(f"  virtio-net: mac {ds['mac']}, link status {ds['status']}, tx_waiting {ds['tx_waiting']}, "
                         f"mergeable_rx_bufs {ds['mergeable_rx_bufs']}, promisc {ds['promisc']}, "
                         f"allmulti {ds['allmulti']}, MAC table {ds['mac_table_in_use']}, "
                         f"vnet header {ds['has_vnet_hdr']}, queue pairs {ds['curr_queue_pairs']}/"
                         f"{ds['max_queue_pairs']}")
        elif d["device"] == "virtio-blk":
            lines.append(f"  virtio-blk: {len(ds['requests'])} in-flight request(s)")
            for r in ds["requests"]:
                lines.append(f"    queue {r['queue']} head {r['head']}: out {r['out_len']} in {r['in_len']}")
        elif d["device"] == "virtio-scsi":
            for disk in ds["disks"]:
                if "error" in disk:
                    lines.append(f"  {disk['section']}: not understood: {disk['error']}")
                    continue
                lines.append(f"  {disk['section']}: {len(disk['requests'])} in-flight request(s), sense_len "
                             f"{disk['sense_len']}, unit attention {disk['unit_attention']}")
                for r in disk["requests"]:
                    lines.append(f"    queue {r['queue']} head {r['head']} tag {r['tag']} cdb {r['cdb'][:20]}"
                                 f"{' (retry)' * r['retry']}: out {r['out_len']} in {r['in_len']}, sector "
                                 f"{r['sector']} x {r['sector_count']}")
        elif d["device"] == "virtio-balloon":
            lines.append(f"  virtio-balloon: num_pages {ds['num_pages']}, actual {ds['actual']}")
        if "schema_fields" in d:
            lines.append("  schema fields: " + (", ".join(f"{k} {v}" for k, v in d["schema_fields"].items()) or "-"))
    return "\n".join(lines)
