//! Command identifiers in flight, shared by the NVMe and virtio-blk drivers.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Command identifiers in flight: the lowest free one is handed out, and a completion must
/// name one that is in flight. Each carries a tag (the driver's index of the piece).
#[derive(Clone, Debug)]
pub struct Tracker {
    busy: Vec<Option<usize>>,
    in_flight: usize,
}

impl Tracker {
    /// A table of `ids` identifiers (0 to `ids - 1`).
    pub fn new(ids: usize) -> Tracker {
        Tracker {
            busy: vec![None; ids],
            in_flight: 0,
        }
    }

    /// Identifiers in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Takes the lowest free identifier for `tag`; `None` when all are in flight.
    pub fn start(&mut self, tag: usize) -> Option<u16> {
        let id = self.busy.iter().position(Option::is_none)?;
        self.busy[id] = Some(tag);
        self.in_flight += 1;
        Some(id as u16)
    }

    /// Ends identifier `id`; its tag, or an error when it was not in flight.
    pub fn finish(&mut self, id: u16) -> Result<usize, String> {
        let tag = self
            .busy
            .get_mut(usize::from(id))
            .and_then(Option::take)
            .ok_or_else(|| format!("completion for command {id}, which is not in flight"))?;
        self.in_flight -= 1;
        Ok(tag)
    }

    /// Forgets everything in flight (after the device was reset or declared broken).
    pub fn clear(&mut self) {
        self.busy.iter_mut().for_each(|b| *b = None);
        self.in_flight = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_tracked() {
        let mut t = Tracker::new(4);
        assert_eq!(t.start(10), Some(0));
        assert_eq!(t.start(11), Some(1));
        assert_eq!(t.start(12), Some(2));
        assert_eq!(t.finish(1), Ok(11));
        assert_eq!(t.in_flight(), 2);
        // The lowest free identifier comes back first.
        assert_eq!(t.start(13), Some(1));
        assert_eq!(t.start(14), Some(3));
        assert_eq!(t.start(15), None, "all four in flight");
        // A completion twice, or for an identifier never used, is refused.
        assert_eq!(t.finish(3), Ok(14));
        assert!(t.finish(3).unwrap_err().contains("not in flight"));
        assert!(t.finish(9).is_err());
        assert_eq!(t.in_flight(), 3);
        t.clear();
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.start(0), Some(0));
    }
}
