//! Process tracks: a pid for each process spans come from — its own `process.pid` when no
//! other process took it, else one made up — and the processes not yet named because the
//! file's time origin, which their name event carries, is not known yet.

use crate::model::ProcessKey;
use std::collections::HashMap;

/// Pids made up for processes whose own is unknown or taken start above this.
const FIRST_SYNTHETIC_PID: u32 = 1 << 30;

pub(super) struct Processes {
    pids: HashMap<ProcessKey, u32>,
    /// Spans come in runs of one process: most lookups are the one before.
    last: Option<(ProcessKey, u32)>,
    used: HashMap<u32, ()>,
    next_synthetic: u32,
    unnamed: Vec<(ProcessKey, u32)>,
}

impl Processes {
    pub fn new() -> Processes {
        Processes {
            pids: HashMap::new(),
            last: None,
            used: HashMap::new(),
            next_synthetic: FIRST_SYNTHETIC_PID,
            unnamed: Vec::new(),
        }
    }

    /// Processes with the pids another writer gave them, and its last made-up pid: all to be
    /// named in the new file.
    pub fn resume(known: Vec<(ProcessKey, u32)>, last_synthetic: u32) -> Processes {
        let mut p = Processes::new();
        p.next_synthetic = last_synthetic;
        for (key, pid) in known {
            p.used.insert(pid, ());
            p.pids.insert(key.clone(), pid);
            p.unnamed.push((key, pid));
        }
        p
    }

    /// Keeps `pids` from every process: neither given as their own nor made up.
    pub fn reserve(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            self.used.insert(pid, ());
        }
    }

    /// The pid of process `p`, and whether it is new (to be named).
    #[inline]
    pub fn pid_for(&mut self, p: &ProcessKey) -> (u32, bool) {
        if let Some((last, pid)) = &self.last {
            if last == p {
                return (*pid, false);
            }
        }
        let (pid, new) = self.lookup(p);
        self.last = Some((p.clone(), pid));
        (pid, new)
    }

    fn lookup(&mut self, p: &ProcessKey) -> (u32, bool) {
        if let Some(pid) = self.pids.get(p) {
            return (*pid, false);
        }
        let wanted = u32::try_from(p.pid).ok().filter(|pid| *pid != 0);
        let pid = match wanted {
            Some(pid) if !self.used.contains_key(&pid) => pid,
            _ => loop {
                // Past u32::MAX it wraps to 0 and on: a pid never repeats while one is free.
                self.next_synthetic = self.next_synthetic.wrapping_add(1);
                if self.next_synthetic != 0 && !self.used.contains_key(&self.next_synthetic) {
                    break self.next_synthetic;
                }
            },
        };
        self.used.insert(pid, ());
        self.pids.insert(p.clone(), pid);
        (pid, true)
    }

    /// Keeps process `p` to be named once the time origin is known.
    pub fn name_later(&mut self, p: &ProcessKey, pid: u32) {
        self.unnamed.push((p.clone(), pid));
    }

    /// The processes kept to be named, now.
    pub fn take_unnamed(&mut self) -> Vec<(ProcessKey, u32)> {
        std::mem::take(&mut self.unnamed)
    }

    /// Every process and its pid.
    pub fn all(&self) -> Vec<(ProcessKey, u32)> {
        self.pids.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn last_synthetic(&self) -> u32 {
        self.next_synthetic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service: &str, pid: u64) -> ProcessKey {
        ProcessKey {
            service: service.into(),
            pid,
            ..ProcessKey::default()
        }
    }

    /// A process keeps its own pid unless another took it first or it has none; each is new
    /// once, whether asked again right away or after others.
    #[test]
    fn a_process_gets_its_own_pid_when_free() {
        let mut p = Processes::new();
        assert_eq!(p.pid_for(&key("a", 42)), (42, true));
        assert_eq!(p.pid_for(&key("a", 42)), (42, false));
        assert_eq!(p.pid_for(&key("b", 42)), (FIRST_SYNTHETIC_PID + 1, true));
        assert_eq!(p.pid_for(&key("c", 0)), (FIRST_SYNTHETIC_PID + 2, true));
        assert_eq!(p.pid_for(&key("a", 42)), (42, false));
        assert_eq!(
            p.pid_for(&key("d", 1 << 40)),
            (FIRST_SYNTHETIC_PID + 3, true)
        );
        let mut all = p.all();
        all.sort_by_key(|(_, pid)| *pid);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], (key("a", 42), 42));
    }

    /// Reserved pids are neither given as a process's own nor made up.
    #[test]
    fn reserved_pids_are_never_given() {
        let mut p = Processes::new();
        p.reserve([42, FIRST_SYNTHETIC_PID + 1, FIRST_SYNTHETIC_PID + 2]);
        assert_eq!(p.pid_for(&key("a", 42)), (FIRST_SYNTHETIC_PID + 3, true));
        assert_eq!(p.pid_for(&key("b", 0)), (FIRST_SYNTHETIC_PID + 4, true));
        assert_eq!(p.pid_for(&key("c", 43)), (43, true));
    }

    /// A resumed table answers with the pids it was given, names them all, and makes up pids
    /// after the last one made before.
    #[test]
    fn a_resumed_table_goes_on_where_it_stopped() {
        let mut p = Processes::resume(vec![(key("a", 42), 42)], FIRST_SYNTHETIC_PID + 7);
        assert_eq!(p.take_unnamed(), [(key("a", 42), 42)]);
        assert_eq!(p.pid_for(&key("a", 42)), (42, false));
        assert_eq!(p.pid_for(&key("b", 42)), (FIRST_SYNTHETIC_PID + 8, true));
        p.name_later(&key("b", 42), FIRST_SYNTHETIC_PID + 8);
        assert_eq!(p.take_unnamed().len(), 1);
        assert!(p.take_unnamed().is_empty());
    }
}
