//! virtio-net (virtio 1.1 §5.1): one receive and one transmit queue, enough to exchange
//! Ethernet frames; the self test resolves the gateway of QEMU's user network by ARP.
//!
//! - §5.1.2: queues `receiveq1` (index 0) and `transmitq1` (1). No control queue, no
//!   multiqueue.
//! - §5.1.3: features. Only VIRTIO_NET_F_MAC (bit 5) is accepted besides
//!   VIRTIO_F_VERSION_1, when offered; no offloads, no mergeable buffers, no status.
//!   Without VIRTIO_NET_F_MAC the driver makes up a locally administered address.
//! - §5.1.4: device configuration. `mac` is six bytes at offset 0, read byte by byte inside
//!   a `config_generation` check.
//! - §5.1.6: every packet starts with `struct virtio_net_hdr`, 12 bytes with VERSION_1 (its
//!   `num_buffers` is always there), all zero for a plain frame (no checksum offload, no
//!   GSO). Received buffers must hold at least 1526 bytes without mergeable buffers
//!   (§5.1.6.3.1); each here is [`RX_BUFFER_BYTES`].
//!
//! Ownership: [`VirtioNet`] is a [`VirtioPci`] plus the MAC address and counters. The
//! receive queue's DMA buffer is cut into [`RX_BUFFERS`] buffers, all posted to the device at
//! bind time and each posted again as soon as its frame is copied out; the transmit queue's
//! buffer holds one frame, sent and completed (by interrupt) before the next. Unbinding drops
//! the `VirtioPci`, which resets the device (so it stops filling receive buffers) before the
//! rings and buffers are freed.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use pci::irq::{IrqKinds, PciFunction};

use super::{QueueSpec, Segment, Spec, TYPE_NET, VENDOR, VirtioPci, WaitError};
use crate::{Bound, Driver, Match, ProbeError};

/// Receive buffers posted.
pub const RX_BUFFERS: u16 = 16;
/// Bytes per receive buffer (header and frame).
pub const RX_BUFFER_BYTES: u32 = 2048;
/// `struct virtio_net_hdr` with VERSION_1.
pub const HEADER_BYTES: usize = 12;
/// The largest frame sent (no FCS): 14-byte Ethernet header and a 1500-byte payload.
pub const MAX_FRAME: usize = 1514;
/// VIRTIO_NET_F_MAC.
const F_MAC: u64 = 1 << 5;
const RX: usize = 0;
const TX: usize = 1;
/// How long a transmission may take to complete.
const TX_TIMEOUT_US: u64 = 1_000_000;

const QUEUES: &[QueueSpec] = &[
    QueueSpec {
        name: "receiveq1",
        max_size: 64,
        buffer_bytes: RX_BUFFERS as u64 * RX_BUFFER_BYTES as u64,
    },
    QueueSpec {
        name: "transmitq1",
        max_size: 64,
        buffer_bytes: 2048,
    },
];

/// What the transport sets up for a network card.
pub const SPEC: Spec = Spec {
    device_type: TYPE_NET,
    name: "virtio-net",
    features: F_MAC,
    queues: QUEUES,
};

/// QEMU user networking: this guest's address.
pub const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
/// QEMU user networking: the gateway's address.
pub const GATEWAY_IP: [u8; 4] = [10, 0, 2, 2];

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The virtio-net driver.
pub struct VirtioNetDriver;

/// A bound virtio-net device.
#[derive(Debug)]
pub struct VirtioNet {
    dev: VirtioPci,
    mac: Mac,
    mac_from_device: bool,
    posted: u16,
    received: u64,
    sent: u64,
    /// Why the device is refused (a transmission timed out), if it is.
    broken: Option<String>,
}

impl Driver for VirtioNetDriver {
    fn name(&self) -> &'static str {
        "virtio-net"
    }

    fn matches(&self) -> &'static [Match] {
        // Modern 0x1040 + 1, transitional 0x1000 (whose Subsystem ID probe checks is 1).
        &[
            Match::Id {
                vendor: VENDOR,
                device: 0x1041,
            },
            Match::Id {
                vendor: VENDOR,
                device: 0x1000,
            },
        ]
    }

    fn probe(&self, function: PciFunction) -> Result<Box<dyn Bound>, (PciFunction, ProbeError)> {
        super::boxed(VirtioNet::probe(function))
    }
}

impl VirtioNet {
    /// Binds with MSI-X (INTx if there is none).
    pub fn probe(function: PciFunction) -> Result<VirtioNet, (PciFunction, ProbeError)> {
        VirtioNet::probe_with(function, IrqKinds::MSIX | IrqKinds::INTX)
    }

    /// Binds with the interrupt kinds `kinds` allows, and posts the receive buffers.
    pub fn probe_with(
        function: PciFunction,
        kinds: IrqKinds,
    ) -> Result<VirtioNet, (PciFunction, ProbeError)> {
        let mut dev = VirtioPci::probe(function, &SPEC, kinds)?;
        let from_device = dev.features() & F_MAC != 0;
        let mac = if from_device {
            let bytes = dev.transport().read_config(dev.function(), |t| {
                let f = dev.function();
                core::array::from_fn::<_, 6, _>(|i| t.device_read8(f, i as u32))
            });
            let bytes = match bytes {
                Ok(b) => b,
                Err(why) => return Err((dev.into_function(), ProbeError(why))),
            };
            match bytes.iter().copied().collect::<Option<Vec<u8>>>() {
                Some(b) => Mac([b[0], b[1], b[2], b[3], b[4], b[5]]),
                None => {
                    let why = ProbeError("MAC offered but no device configuration".into());
                    return Err((dev.into_function(), why));
                }
            }
        } else {
            // Locally administered, unicast, unique per function on this machine.
            let a = dev.function().address();
            Mac([
                0x02,
                0,
                a.segment() as u8,
                a.bus(),
                a.device(),
                a.function(),
            ])
        };
        let posted = RX_BUFFERS.min(dev.queue(RX).size());
        for i in 0..posted {
            let buffer =
                Segment::writes(u64::from(i) * u64::from(RX_BUFFER_BYTES), RX_BUFFER_BYTES);
            if let Err(why) = dev.add(RX, &[buffer]) {
                return Err((dev.into_function(), ProbeError(why)));
            }
        }
        dev.notify(RX);
        Ok(VirtioNet {
            dev,
            mac,
            mac_from_device: from_device,
            posted,
            received: 0,
            sent: 0,
            broken: None,
        })
    }

    /// The card's address.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The transport (vectors, queues).
    pub fn device(&self) -> &VirtioPci {
        &self.dev
    }

    /// Sends one Ethernet frame (without FCS; padded to 60 bytes) and waits for the device to
    /// complete it, by interrupt.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), String> {
        if let Some(why) = &self.broken {
            return Err(format!("device unusable until rebound: {why}"));
        }
        if frame.len() < 14 || frame.len() > MAX_FRAME {
            return Err(format!("a {}-byte frame", frame.len()));
        }
        let len = frame.len().max(60);
        let buffer = self.dev.queue(TX).buffers();
        super::copy_to(buffer, 0, &[0; HEADER_BYTES]);
        super::copy_to(buffer, HEADER_BYTES as u64, frame);
        super::copy_to(
            buffer,
            (HEADER_BYTES + frame.len()) as u64,
            &vec![0; len - frame.len()],
        );
        let head = self
            .dev
            .submit(TX, &[Segment::reads(0, (HEADER_BYTES + len) as u32)])?;
        let done = match self.dev.next_used(TX, TX_TIMEOUT_US) {
            Ok(u) if u.head == head => Ok(()),
            Ok(u) => Err(format!(
                "completion of chain {} while {head} was in flight",
                u.head
            )),
            Err(why) => Err(String::from(why)),
        };
        if let Err(why) = done {
            self.broken = Some(why.clone());
            return Err(why);
        }
        self.sent += 1;
        Ok(())
    }

    /// Waits up to `timeout_us` for a frame, announced by the receive queue's interrupt;
    /// returns it (without the virtio header) and posts its buffer again.
    pub fn receive(&mut self, timeout_us: u64) -> Result<Vec<u8>, WaitError> {
        if let Some(why) = &self.broken {
            return Err(WaitError::Device(format!(
                "device unusable until rebound: {why}"
            )));
        }
        let used = match self.dev.next_used(RX, timeout_us) {
            Ok(used) => used,
            // The queue broke its rules (a used element the queue refused keeps its buffer
            // the device's): nothing more is trusted, as for a send.
            Err(WaitError::Device(why)) => {
                self.broken = Some(why.clone());
                return Err(WaitError::Device(why));
            }
            Err(timeout) => return Err(timeout),
        };
        let len = used.len as usize;
        let result = if (HEADER_BYTES..=RX_BUFFER_BYTES as usize).contains(&len) {
            let mut frame = vec![0; len - HEADER_BYTES];
            super::copy_from(
                self.dev.queue(RX).buffers(),
                used.offset + HEADER_BYTES as u64,
                &mut frame,
            );
            self.received += 1;
            Ok(frame)
        } else {
            Err(WaitError::Device(format!("received a {len}-byte buffer")))
        };
        if let Err(why) = self
            .dev
            .submit(RX, &[Segment::writes(used.offset, RX_BUFFER_BYTES)])
        {
            self.broken = Some(why.clone());
            return Err(WaitError::Device(why));
        }
        result
    }

    /// Asks who has `target` (ARP request from `sender`, RFC 826) and waits for the reply;
    /// other frames are dropped. Tries three times, `timeout_us` each.
    pub fn arp_resolve(
        &mut self,
        sender: [u8; 4],
        target: [u8; 4],
        timeout_us: u64,
    ) -> Result<Mac, String> {
        let request = arp_request(self.mac, sender, target);
        let mut other = 0;
        for _ in 0..3 {
            self.send(&request)?;
            let deadline = self.dev.function().now_us() + timeout_us;
            loop {
                // A stream of other frames must not keep the wait going past its deadline.
                let now = self.dev.function().now_us();
                if now >= deadline {
                    break;
                }
                match self.receive(deadline - now) {
                    Ok(frame) => match arp_reply_from(&frame, target, self.mac) {
                        Some(mac) => return Ok(mac),
                        None => other += 1,
                    },
                    Err(WaitError::Timeout(_)) => break,
                    Err(why) => return Err(why.into()),
                }
            }
        }
        Err(format!(
            "no ARP reply for {}.{}.{}.{} after 3 requests ({other} other frame(s))",
            target[0], target[1], target[2], target[3]
        ))
    }
}

/// An ARP request (RFC 826) for `target` from `mac`/`sender`, broadcast.
pub fn arp_request(mac: Mac, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// The sender's hardware address if `frame` is an ARP reply from `target` to `mac`.
pub fn arp_reply_from(frame: &[u8], target: [u8; 4], mac: Mac) -> Option<Mac> {
    let arp = frame.get(14..42)?;
    let is_reply = frame[12..14] == [0x08, 0x06]
        && arp[..8] == [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02]
        && arp[14..18] == target
        && arp[18..24] == mac.0;
    is_reply.then(|| Mac([arp[8], arp[9], arp[10], arp[11], arp[12], arp[13]]))
}

impl Bound for VirtioNet {
    fn driver(&self) -> &'static str {
        "virtio-net"
    }

    fn address(&self) -> pci::Address {
        self.dev.function().address()
    }

    fn status(&self) -> String {
        format!(
            "{} ({}), receiveq1 {} entries with {} buffers, transmitq1 {} entries, {}, {} received, {} sent",
            self.mac,
            if self.mac_from_device {
                "from the device"
            } else {
                "locally administered"
            },
            self.dev.queue(RX).size(),
            self.posted,
            self.dev.queue(TX).size(),
            self.dev.describe_vectors(),
            self.received,
            self.sent
        )
    }

    /// Resolves QEMU's user-network gateway by ARP, the reply taken by interrupt.
    fn self_test(&mut self) -> Result<String, String> {
        crate::fault::point(self.address(), crate::fault::Point::SelfTest);
        let gateway = self.arp_resolve(GUEST_IP, GATEWAY_IP, 500_000)?;
        Ok(format!(
            "gateway 10.0.2.2 is at {gateway} (ARP reply by {} on receiveq1)",
            self.dev.irq_kind()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_request_and_reply_layout() {
        let me = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let request = arp_request(me, GUEST_IP, GATEWAY_IP);
        assert_eq!(request.len(), 42);
        assert_eq!(&request[38..42], &GATEWAY_IP);
        // The reply QEMU's slirp sends: its MAC is 52:55 followed by the IP address.
        let gw = Mac([0x52, 0x55, 10, 0, 2, 2]);
        let mut reply = Vec::new();
        reply.extend_from_slice(&me.0);
        reply.extend_from_slice(&gw.0);
        reply.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02]);
        reply.extend_from_slice(&gw.0);
        reply.extend_from_slice(&GATEWAY_IP);
        reply.extend_from_slice(&me.0);
        reply.extend_from_slice(&GUEST_IP);
        reply.resize(60, 0);
        assert_eq!(arp_reply_from(&reply, GATEWAY_IP, me), Some(gw));
        assert_eq!(arp_reply_from(&reply, [10, 0, 2, 3], me), None);
        assert_eq!(arp_reply_from(&request, GATEWAY_IP, me), None);
        assert_eq!(gw.to_string(), "52:55:0a:00:02:02");
    }
}
