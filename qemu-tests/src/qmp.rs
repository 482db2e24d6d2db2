//! A small QMP (QEMU Machine Protocol) client, and QEMU's `query-pci` answer as a flat list of
//! functions.
//!
//! [`crate::Qemu::run_until_qmp`] starts QEMU with `-qmp unix:<dir>/qmp.sock,server=on,wait=off`
//! and, once a serial marker arrived, connects a [`Qmp`] (greeting, then the
//! `qmp_capabilities` handshake), hands it to the caller and finally sends `quit`.
//!
//! The wire format is one JSON object per line. Commands carry an `id` that QEMU echoes in its
//! answer (`{"return": ...}` or `{"error": {"class", "desc"}}`); asynchronous events
//! (`{"event": ...}`) can arrive at any time and are kept in [`Qmp::events`].
//!
//! [`parse_query_pci`] flattens `query-pci`: every top-level bus of the answer (a `pxb-pcie`
//! adds its own root bus, e.g. 0x80, next to bus 0) and, recursively, every bus behind a
//! bridge (`pci_bridge.devices`). QEMU has no segment numbers on `q35`/`pc`: everything is
//! segment 0. QEMU reports the class only down to the subclass (`class_info.class` =
//! `class << 8 | subclass`), and a BAR that is not mapped (not assigned, or decoding disabled
//! in the Command register) with address -1 (or 0xffff_ffff_ffff_ffff).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pci::{Bar, BarSpace, PciAddress};

/// A QMP connection.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    deadline: Instant,
    next_id: u64,
    /// QEMU's version from the greeting (`QMP.version.qemu`: major, minor, micro).
    pub version: Option<(u64, u64, u64)>,
    /// Asynchronous events received so far (while waiting for answers).
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects to the QMP socket at `path` (retrying until it exists), reads the greeting and
    /// performs the `qmp_capabilities` handshake. Every operation on the connection fails once
    /// `deadline` has passed.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Self, String> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("cannot connect to QMP at {}: {e}", path.display()));
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        let writer = stream
            .try_clone()
            .map_err(|e| format!("QMP: cannot clone the socket: {e}"))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
            deadline,
            next_id: 1,
            version: None,
            events: Vec::new(),
        };
        let greeting = loop {
            let message = qmp.read_message()?;
            if message.get("event").is_some() {
                qmp.events.push(message);
            } else {
                break message;
            }
        };
        let Some(banner) = greeting.get("QMP") else {
            return Err(format!("QMP: expected a greeting, got {greeting}"));
        };
        let v = &banner["version"]["qemu"];
        if let (Some(major), Some(minor), Some(micro)) = (
            v["major"].as_u64(),
            v["minor"].as_u64(),
            v["micro"].as_u64(),
        ) {
            qmp.version = Some((major, minor, micro));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Moves the deadline for all further operations.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = deadline;
        self
    }

    fn remaining(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err("QMP: deadline passed".to_owned())
        } else {
            Ok(left)
        }
    }

    /// Reads one JSON message (one line).
    fn read_message(&mut self) -> Result<Value, String> {
        let timeout = self.remaining()?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| format!("QMP: {e}"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP: connection closed by QEMU".to_owned()),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| format!("QMP: bad JSON from QEMU ({e}): {}", line.trim_end())),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err("QMP: timed out waiting for QEMU".to_owned())
            }
            Err(e) => Err(format!("QMP: read error: {e}")),
        }
    }

    fn send(&mut self, message: &Value) -> Result<(), String> {
        let timeout = self.remaining()?;
        self.writer
            .set_write_timeout(Some(timeout))
            .map_err(|e| format!("QMP: {e}"))?;
        let mut text = message.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|e| format!("QMP: write error: {e}"))
    }

    /// Runs a command and returns its `return` value; a QMP error becomes `Err("<class>:
    /// <desc>")`. Events that arrive in between are appended to [`Self::events`].
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        self.send(&message)?;
        loop {
            let mut answer = self.read_message()?;
            if answer.get("event").is_some() {
                self.events.push(answer);
                continue;
            }
            if answer.get("id").and_then(Value::as_u64) != Some(id) {
                return Err(format!(
                    "QMP: answer to `{command}` (id {id}) has another id: {answer}"
                ));
            }
            if let Some(value) = answer.get_mut("return") {
                return Ok(value.take());
            }
            if let Some(error) = answer.get("error") {
                return Err(format!(
                    "QMP `{command}` failed: {}: {}",
                    error["class"].as_str().unwrap_or("?"),
                    error["desc"].as_str().unwrap_or("?")
                ));
            }
            return Err(format!("QMP: unexpected answer to `{command}`: {answer}"));
        }
    }

    /// `query-pci`, flattened (see [`parse_query_pci`]).
    pub fn query_pci(&mut self) -> Result<Vec<QemuPciFunction>, String> {
        let answer = self.execute("query-pci", None)?;
        parse_query_pci(&answer)
    }

    /// `query-pci`, the raw answer.
    pub fn query_pci_json(&mut self) -> Result<Value, String> {
        self.execute("query-pci", None)
    }

    /// Sends `quit`. QEMU may close the connection before or right after answering; both count
    /// as success.
    pub fn quit(&mut self) -> Result<(), String> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            Err(e)
                if ["connection closed", "Connection reset", "Broken pipe"]
                    .iter()
                    .any(|m| e.contains(m)) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Bus numbers of a bridge (`pci_bridge.bus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeBuses {
    /// Primary bus (`number`).
    pub primary: u8,
    /// Secondary bus.
    pub secondary: u8,
    /// Subordinate bus.
    pub subordinate: u8,
}

/// One function as QEMU sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuPciFunction {
    /// Address (segment always 0).
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// `class << 8 | subclass` (QEMU does not report the programming interface).
    pub class: u16,
    /// `class_info.desc`, when QEMU knows a name for the class.
    pub class_desc: Option<String>,
    /// Interrupt Pin register: 0 none, 1..=4 INTA..INTD.
    pub irq_pin: u8,
    /// Interrupt Line register, reported by QEMU only when `irq_pin` is not 0.
    pub irq_line: Option<u8>,
    /// `-device ...,id=` of the function, empty if none was given.
    pub qdev_id: String,
    /// BARs (`regions`), including the expansion ROM as BAR 6.
    pub bars: Vec<Bar>,
    /// Bus numbers if the function is a bridge.
    pub bridge: Option<BridgeBuses>,
    /// Vendor and device ID of the bridge this function sits behind; `None` on a root bus.
    pub parent: Option<(u16, u16)>,
    /// The root bus this function belongs to (0, or e.g. 0x80 for a `pxb-pcie`).
    pub root_bus: u8,
}

impl QemuPciFunction {
    /// Whether this function is behind a conventional PCI bridge (`pci-bridge`, 1b36:0001) or
    /// a PCIe-to-PCI bridge (`pcie-pci-bridge`, 1b36:000e): such functions have no extended
    /// configuration space.
    pub fn behind_conventional_bridge(&self) -> bool {
        matches!(self.parent, Some((0x1b36, 0x0001 | 0x000e)))
    }
}

fn field<'a>(object: &'a Value, key: &str, context: &str) -> Result<&'a Value, String> {
    object
        .get(key)
        .ok_or_else(|| format!("query-pci: no `{key}` in {context}"))
}

fn uint<T: TryFrom<u64>>(object: &Value, key: &str, context: &str) -> Result<T, String> {
    let value = field(object, key, context)?;
    value
        .as_u64()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| format!("query-pci: `{key}` in {context} is not a small integer: {value}"))
}

/// A BAR address: `None` for QEMU's "unmapped" (-1 or any negative number, or
/// 0xffff_ffff_ffff_ffff).
fn bar_address(value: &Value) -> Option<Option<u64>> {
    match value.as_u64() {
        Some(a) => Some((a != u64::MAX).then_some(a)),
        None => value.as_i64().map(|a| u64::try_from(a).ok()),
    }
}

fn parse_region(region: &Value, context: &str) -> Result<Bar, String> {
    let slot: u8 = uint(region, "bar", context)?;
    let context = &format!("{context} BAR {slot}");
    let size: u64 = uint(region, "size", context)?;
    let address = bar_address(field(region, "address", context)?)
        .ok_or_else(|| format!("query-pci: bad address in {context}: {region}"))?;
    let space = match field(region, "type", context)?.as_str() {
        Some("io") => BarSpace::Io,
        Some("memory") => {
            if region
                .get("mem_type_64")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                BarSpace::Mem64
            } else {
                BarSpace::Mem32
            }
        }
        _ => return Err(format!("query-pci: bad type in {context}: {region}")),
    };
    let prefetch = region
        .get("prefetch")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Bar {
        slot,
        space,
        prefetch,
        address,
        size,
    })
}

fn parse_device(
    device: &Value,
    root_bus: u8,
    parent: Option<(u16, u16)>,
    out: &mut Vec<QemuPciFunction>,
) -> Result<(), String> {
    let context = "a device";
    let bus: u8 = uint(device, "bus", context)?;
    let slot: u8 = uint(device, "slot", context)?;
    let function: u8 = uint(device, "function", context)?;
    let address = PciAddress::new(0, bus, slot, function);
    let context = &format!("device {address}");
    let ids = field(device, "id", context)?;
    let class_info = field(device, "class_info", context)?;
    let irq_pin: u8 = device
        .get("irq_pin")
        .map_or(Ok(0), |_| uint(device, "irq_pin", context))?;
    let irq_line = match device.get("irq") {
        Some(_) => Some(uint(device, "irq", context)?),
        None => None,
    };
    let bars = device
        .get("regions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| parse_region(r, context))
        .collect::<Result<Vec<_>, _>>()?;
    let vendor: u16 = uint(ids, "vendor", context)?;
    let device_id: u16 = uint(ids, "device", context)?;
    let bridge = match device.get("pci_bridge") {
        None => None,
        Some(bridge) => {
            let buses = field(bridge, "bus", context)?;
            Some((
                BridgeBuses {
                    primary: uint(buses, "number", context)?,
                    secondary: uint(buses, "secondary", context)?,
                    subordinate: uint(buses, "subordinate", context)?,
                },
                bridge.get("devices"),
            ))
        }
    };
    out.push(QemuPciFunction {
        address,
        vendor,
        device: device_id,
        class: uint(class_info, "class", context)?,
        class_desc: class_info
            .get("desc")
            .and_then(Value::as_str)
            .map(str::to_owned),
        irq_pin,
        irq_line,
        qdev_id: device
            .get("qdev_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        bars,
        bridge: bridge.map(|(buses, _)| buses),
        parent,
        root_bus,
    });
    if let Some((_, Some(children))) = bridge {
        let children = children
            .as_array()
            .ok_or_else(|| format!("query-pci: pci_bridge.devices of {address} is not a list"))?;
        for child in children {
            parse_device(child, root_bus, Some((vendor, device_id)), out)?;
        }
    }
    Ok(())
}

/// Flattens a `query-pci` answer (the `return` value: a list of root buses) into functions,
/// sorted by address.
pub fn parse_query_pci(answer: &Value) -> Result<Vec<QemuPciFunction>, String> {
    let buses = answer
        .as_array()
        .ok_or_else(|| format!("query-pci: expected a list of buses, got {answer}"))?;
    let mut out = Vec::new();
    for bus in buses {
        let root: u8 = uint(bus, "bus", "a root bus")?;
        let devices = field(bus, "devices", "a root bus")?
            .as_array()
            .ok_or_else(|| format!("query-pci: devices of root bus {root:#x} is not a list"))?;
        for device in devices {
            parse_device(device, root, None, &mut out)?;
        }
    }
    out.sort_by_key(|f| f.address);
    Ok(out)
}

/// Parses a `query-pci` answer from JSON text: either the `return` value itself or a whole
/// QMP answer object `{"return": [...]}`.
pub fn parse_query_pci_text(text: &str) -> Result<Vec<QemuPciFunction>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("query-pci: bad JSON: {e}"))?;
    match value {
        Value::Object(mut map) if map.contains_key("return") => {
            parse_query_pci(&map.remove("return").unwrap_or_default())
        }
        other => parse_query_pci(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    const FIXTURE: &str = include_str!("../tests/fixtures/query-pci-topology-b.json");

    #[test]
    fn fixture_topology_b() {
        let functions = parse_query_pci_text(FIXTURE).unwrap();
        let find = |vendor: u16, device: u16| {
            functions
                .iter()
                .filter(move |f| f.vendor == vendor && f.device == device)
        };
        // Every function exactly once, sorted.
        let mut addresses: Vec<_> = functions.iter().map(|f| f.address).collect();
        addresses.dedup();
        assert_eq!(addresses.len(), functions.len());
        assert!(addresses.windows(2).all(|w| w[0] < w[1]));

        let nvme: Vec<_> = find(0x1b36, 0x0010).collect();
        assert_eq!(nvme.len(), 1);
        let nvme = nvme[0];
        assert_eq!(nvme.class, 0x0108);
        assert_eq!(nvme.parent, Some((0x1b36, 0x000c)));
        assert_eq!(nvme.bars.len(), 1);
        assert_eq!(nvme.bars[0].slot, 0);
        assert_eq!(nvme.bars[0].space, BarSpace::Mem64);
        assert!(!nvme.bars[0].prefetch);
        assert_eq!(nvme.bars[0].size, 0x4000);
        assert!(nvme.bars[0].address.is_some());
        assert_eq!(nvme.irq_pin, 1);

        // Four root ports with their MSI-X BAR, and the bridges' bus numbers.
        let ports: Vec<_> = find(0x1b36, 0x000c).collect();
        assert_eq!(ports.len(), 4);
        for port in &ports {
            assert!(port.bridge.is_some());
            assert_eq!(port.bars.len(), 1);
            assert_eq!(port.bars[0].size, 0x1000);
            assert_eq!(port.address.bus, 0);
        }
        let ppb = find(0x1b36, 0x000e).next().unwrap();
        let pb = find(0x1b36, 0x0001).next().unwrap();
        let ppb_buses = ppb.bridge.unwrap();
        let pb_buses = pb.bridge.unwrap();
        assert_eq!(pb.address.bus, ppb_buses.secondary);
        assert_eq!(pb_buses.primary, ppb_buses.secondary);
        assert!(ppb_buses.subordinate >= pb_buses.secondary);
        assert_eq!(pb.parent, Some((0x1b36, 0x000e)));

        // virtio-rng: three functions of one slot on bus 0 and one behind the pci-bridge.
        let rng: Vec<_> = find(0x1af4, 0x1005).collect();
        assert_eq!(rng.len(), 4);
        let behind: Vec<_> = rng
            .iter()
            .filter(|f| f.behind_conventional_bridge())
            .collect();
        assert_eq!(behind.len(), 1);
        assert_eq!(behind[0].address.bus, pb_buses.secondary);
        let multi: Vec<_> = rng.iter().filter(|f| f.address.bus == 0).collect();
        assert_eq!(
            multi.iter().map(|f| f.address.function).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(
            multi
                .iter()
                .all(|f| f.address.device == multi[0].address.device)
        );

        // The VGA expansion ROM is reported unmapped.
        let vga = find(0x1234, 0x1111).next().unwrap();
        let rom = vga.bars.iter().find(|b| b.slot == 6).unwrap();
        assert_eq!(rom.address, None);
        assert_eq!(rom.size, 0x10000);
        assert_eq!(vga.irq_pin, 0);
        assert_eq!(vga.irq_line, None);
        assert_eq!(vga.class_desc.as_deref(), Some("VGA controller"));

        // I/O BARs.
        let e1000e = find(0x8086, 0x10d3).next().unwrap();
        let io = e1000e.bars.iter().find(|b| b.slot == 2).unwrap();
        assert_eq!(io.space, BarSpace::Io);
        assert_eq!(io.size, 0x20);

        for id in [(0x1af4, 0x1041), (0x1af4, 0x1042), (0x1234, 0x11e8)] {
            assert_eq!(find(id.0, id.1).count(), 1, "{id:x?}");
        }
        assert!(functions.iter().all(|f| f.address.segment == 0));
        assert!(functions.iter().all(|f| f.root_bus == 0));
    }

    #[test]
    fn extra_root_bus_and_unmapped_addresses() {
        let answer = json!([
            {"bus": 128, "devices": [
                {"bus": 128, "slot": 0, "function": 0, "irq_pin": 1, "irq": 10,
                 "class_info": {"class": 1540, "desc": "PCI bridge"},
                 "id": {"vendor": 6966, "device": 12}, "qdev_id": "rpx",
                 "regions": [{"bar": 0, "type": "memory", "address": 4276707328u64,
                              "size": 4096, "prefetch": false, "mem_type_64": false}],
                 "pci_bridge": {"bus": {"number": 128, "secondary": 129, "subordinate": 129},
                                "devices": [
                    {"bus": 129, "slot": 0, "function": 0,
                     "class_info": {"class": 255}, "id": {"vendor": 6900, "device": 4164},
                     "regions": [
                        {"bar": 4, "type": "memory", "address": 18446744073709551615u64,
                         "size": 16384, "prefetch": true, "mem_type_64": true},
                        {"bar": 0, "type": "io", "address": -1, "size": 32}]}]}}]},
            {"bus": 0, "devices": [
                {"bus": 0, "slot": 0, "function": 0, "class_info": {"class": 1536},
                 "id": {"vendor": 32902, "device": 10688}, "regions": []}]}
        ]);
        let functions = parse_query_pci(&answer).unwrap();
        assert_eq!(functions.len(), 3);
        assert_eq!(functions[0].address, PciAddress::new(0, 0, 0, 0));
        assert_eq!(functions[1].address, PciAddress::new(0, 0x80, 0, 0));
        assert_eq!(functions[1].root_bus, 0x80);
        assert_eq!(functions[1].irq_line, Some(10));
        let rng = &functions[2];
        assert_eq!(rng.address, PciAddress::new(0, 0x81, 0, 0));
        assert_eq!(rng.root_bus, 0x80);
        assert_eq!(rng.parent, Some((0x1b36, 0x000c)));
        assert!(!rng.behind_conventional_bridge());
        assert_eq!(rng.irq_pin, 0);
        assert_eq!(rng.bars[0].address, None);
        assert_eq!(rng.bars[0].space, BarSpace::Mem64);
        assert!(rng.bars[0].prefetch);
        assert_eq!(rng.bars[1].address, None);
        assert_eq!(rng.bars[1].space, BarSpace::Io);
    }

    #[test]
    fn malformed_answers() {
        assert!(parse_query_pci(&json!({})).is_err());
        assert!(parse_query_pci(&json!([{"bus": 0}])).is_err());
        let bad_type = json!([{"bus": 0, "devices": [
            {"bus": 0, "slot": 0, "function": 0, "class_info": {"class": 1},
             "id": {"vendor": 1, "device": 2},
             "regions": [{"bar": 0, "type": "rom", "address": 0, "size": 1}]}]}]);
        let err = parse_query_pci(&bad_type).unwrap_err();
        assert!(err.contains("bad type"), "{err}");
        let big = json!([{"bus": 256, "devices": []}]);
        assert!(parse_query_pci(&big).is_err());
        assert_eq!(parse_query_pci_text(r#"{"return": []}"#), Ok(vec![]));
    }

    /// A fake QEMU on a socket: greeting, handshake, an event in the middle of an answer,
    /// an error, and `quit` with the connection closing.
    #[test]
    fn client_against_a_fake_server() {
        let dir = crate::unique_temp_dir("qmp-unit");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut out = stream;
            let mut send = |v: Value| {
                out.write_all(format!("{v}\n").as_bytes()).unwrap();
            };
            send(
                json!({"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}},
                                "capabilities": ["oob"]}}),
            );
            let mut seen = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let request: Value = serde_json::from_str(&line).unwrap();
                let id = request["id"].clone();
                let command = request["execute"].as_str().unwrap().to_owned();
                seen.push(command.clone());
                match command.as_str() {
                    "qmp_capabilities" => send(json!({"return": {}, "id": id})),
                    "query-pci" => {
                        send(json!({"event": "RESET", "data": {}}));
                        send(json!({"return": [{"bus": 0, "devices": []}], "id": id}));
                    }
                    "quit" => break, // QEMU may close without answering.
                    _ => send(json!({"error": {"class": "CommandNotFound",
                                               "desc": "The command nope has not been found"},
                                     "id": id})),
                }
            }
            seen
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut qmp = Qmp::connect(&path, deadline).unwrap();
        assert_eq!(qmp.version, Some((10, 0, 2)));
        assert_eq!(qmp.query_pci().unwrap(), vec![]);
        assert_eq!(qmp.events.len(), 1);
        let err = qmp.execute("nope", Some(json!({}))).unwrap_err();
        assert!(err.contains("CommandNotFound"), "{err}");
        qmp.quit().unwrap();
        assert_eq!(
            server.join().unwrap(),
            ["qmp_capabilities", "query-pci", "nope", "quit"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
