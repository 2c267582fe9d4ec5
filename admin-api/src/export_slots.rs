//! Who may run a usage export now (attack round 3, B8): at most
//! [`MAX_CONCURRENT_EXPORTS`] per admin process, and at most one per admin
//! (a second is 429), so that one account cannot hold every slot. A slot is
//! given back when its export ends, however it ends (a [`Slot`] dropped).

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

/// Exports running at once, per admin process.
pub const MAX_CONCURRENT_EXPORTS: usize = 2;

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// This admin already runs an export.
    Yours,
    /// Every slot is taken.
    Full,
}

#[derive(Debug, Default)]
struct Running {
    admins: HashSet<i64>,
}

/// The export slots of one admin process.
#[derive(Debug)]
pub struct ExportSlots {
    running: Mutex<Running>,
    max: usize,
}

impl Default for ExportSlots {
    fn default() -> Self {
        Self::new(MAX_CONCURRENT_EXPORTS)
    }
}

impl ExportSlots {
    pub fn new(max: usize) -> Self {
        Self {
            running: Mutex::new(Running::default()),
            max: max.max(1),
        }
    }

    /// A slot for `admin`, released when dropped.
    pub fn acquire(self: &Arc<Self>, admin: i64) -> Result<Slot, NoSlot> {
        let mut r = self.running.lock();
        if r.admins.contains(&admin) {
            return Err(NoSlot::Yours);
        }
        if r.admins.len() >= self.max {
            return Err(NoSlot::Full);
        }
        r.admins.insert(admin);
        Ok(Slot {
            slots: self.clone(),
            admin,
        })
    }

    /// Exports running now.
    pub fn running(&self) -> usize {
        self.running.lock().admins.len()
    }
}

/// One running export's slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ExportSlots>,
    admin: i64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.running.lock().admins.remove(&self.admin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_admin_and_a_total() {
        let s = Arc::new(ExportSlots::new(2));
        let a = s.acquire(1).expect("first");
        assert_eq!(s.acquire(1).err(), Some(NoSlot::Yours));
        let b = s.acquire(2).expect("second admin");
        assert_eq!(s.acquire(3).err(), Some(NoSlot::Full));
        assert_eq!(s.acquire(2).err(), Some(NoSlot::Yours));
        drop(a);
        assert_eq!(s.running(), 1);
        let c = s.acquire(1).expect("again");
        drop((b, c));
        assert_eq!(s.running(), 0);
    }
}
