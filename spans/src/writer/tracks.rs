//! Thread tracks: their names, their overlap lanes, the tids made for lanes and for threads
//! with no id, and which lane each slice went to (for the arrow ends that bind to it).

use super::lanes::{LaneOf, Lanes};
use super::two_gen::TwoGen;
use crate::util::MixHash;
use std::collections::{HashMap, VecDeque};

/// Overlap lanes, and threads whose id is unknown, get tids from here up: above every Linux
/// thread id (below 2^22), within the 32 bits viewers keep.
pub(super) const FIRST_SYNTHETIC_TID: u64 = 1 << 31;

/// What a thread span said of its thread, written beside its track's title so that a reader
/// need not take the title apart (a label may itself hold `" ["`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ThreadFields {
    pub label: String,
    pub tp_rank: Option<i64>,
    pub dp_rank: Option<i64>,
}

/// A named track's title, and the fields of the thread span that named it (none for a thread
/// that gave no label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TrackName {
    pub title: String,
    pub thread: Option<ThreadFields>,
}

#[derive(Default)]
struct Track {
    name: Option<TrackName>,
    lanes: Lanes,
}

pub(super) struct Tracks {
    tracks: HashMap<(u32, u64), Track, MixHash>,
    /// Tracks made for thread spans that name no thread, oldest first: one per such span, so
    /// they are forgotten once no slice can be placed on them any more.
    minted: VecDeque<(u32, u64)>,
    /// How many minted tracks may still be reached: as many as the index of placed spans holds.
    keep_minted: usize,
    next_synthetic_tid: u64,
    /// The lane of each slice written to one other than its thread's own track.
    lane_of: TwoGen<u64, u64>,
}

/// A slice's lane: where it goes, and the name of a lane it opened, to be written.
pub(super) struct Laned {
    pub tid: u64,
    /// (lane number, the thread's name) for a new lane of a named thread.
    pub name_lane: Option<(u64, String)>,
    pub opened: bool,
}

impl Tracks {
    pub fn new(index_window: usize, keep_minted: usize) -> Tracks {
        Tracks {
            tracks: HashMap::default(),
            minted: VecDeque::new(),
            keep_minted,
            next_synthetic_tid: FIRST_SYNTHETIC_TID,
            lane_of: TwoGen::new(index_window),
        }
    }

    /// The last tid made, for a writer that goes on in a new file.
    pub fn last_synthetic_tid(&self) -> u64 {
        self.next_synthetic_tid
    }

    pub fn resume_synthetic_tids(&mut self, last: u64) {
        self.next_synthetic_tid = last;
    }

    /// A tid of no thread: for a thread span that names none, or an overlap lane.
    #[inline]
    pub fn synthetic_tid(&mut self) -> u64 {
        self.next_synthetic_tid += 1;
        self.next_synthetic_tid
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    #[inline]
    pub fn is_named(&self, pid: u32, tid: u64) -> bool {
        self.tracks
            .get(&(pid, tid))
            .is_some_and(|t| t.name.is_some())
    }

    /// Names track `pid`/`tid`; returns the tids of its overlap lanes, to be named after it.
    pub fn name(&mut self, pid: u32, tid: u64, name: TrackName) -> Vec<u64> {
        let track = self.track(pid, tid);
        track.name = Some(name);
        track.lanes.overlap_tids().collect()
    }

    /// The tracks no thread span named.
    pub fn unnamed(&self) -> Vec<(u32, u64)> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.name.is_none())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Every named track, with its name.
    pub fn names(&self) -> Vec<((u32, u64), TrackName)> {
        self.tracks
            .iter()
            .filter_map(|(k, t)| t.name.clone().map(|n| (*k, n)))
            .collect()
    }

    /// The lane of thread `pid`/`tid` where slice `span` (`start..end`) nests.
    #[inline]
    pub fn lane_for(&mut self, pid: u32, tid: u64, span: u64, start: u64, end: u64) -> Laned {
        let next = &mut self.next_synthetic_tid;
        let track = Self::mint(
            &mut self.tracks,
            &mut self.minted,
            self.keep_minted,
            *next,
            pid,
            tid,
        );
        let LaneOf { tid: lane, opened } = track.lanes.place(tid, start, end, || {
            *next += 1;
            *next
        });
        if lane != tid {
            self.lane_of.insert(span, lane);
        }
        Laned {
            tid: lane,
            name_lane: opened.and_then(|n| track.name.as_ref().map(|name| (n, name.title.clone()))),
            opened: opened.is_some(),
        }
    }

    /// The lane slice `span` went to, if not its thread's own track.
    #[inline]
    pub fn lane_of(&self, span: u64) -> Option<u64> {
        self.lane_of.get(&span).copied()
    }

    #[inline]
    fn track(&mut self, pid: u32, tid: u64) -> &mut Track {
        Self::mint(
            &mut self.tracks,
            &mut self.minted,
            self.keep_minted,
            self.next_synthetic_tid,
            pid,
            tid,
        )
    }

    /// The state of track `pid`/`tid`, made if new. A track of a thread with no id is kept
    /// while the index of placed spans may still place a slice on it: each came with its
    /// thread span's entry there, which is gone once as many newer ones came. A slice already
    /// queued for a forgotten track makes it anew; its name was written when it was given.
    #[inline]
    fn mint<'t>(
        tracks: &'t mut HashMap<(u32, u64), Track, MixHash>,
        minted: &mut VecDeque<(u32, u64)>,
        keep: usize,
        last_synthetic: u64,
        pid: u32,
        tid: u64,
    ) -> &'t mut Track {
        let synthetic = (FIRST_SYNTHETIC_TID..=last_synthetic).contains(&tid);
        if synthetic && !tracks.contains_key(&(pid, tid)) {
            minted.push_back((pid, tid));
            if minted.len() > keep {
                if let Some(old) = minted.pop_front() {
                    tracks.remove(&old);
                }
            }
        }
        tracks.entry((pid, tid)).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titled(title: &str) -> TrackName {
        TrackName {
            title: title.to_owned(),
            thread: None,
        }
    }

    /// A named thread's new lane comes back with the name, to be written; the lane's tid is a
    /// synthetic one, and arrow ends find it by the slice.
    #[test]
    fn lanes_are_made_with_synthetic_tids_and_found_by_slice() {
        let mut t = Tracks::new(1 << 10, 1 << 10);
        assert!(t.name(1, 5, titled("scheduler")).is_empty());
        let a = t.lane_for(1, 5, 10, 0, 100);
        assert_eq!((a.tid, a.opened, a.name_lane), (5, false, None));
        let b = t.lane_for(1, 5, 11, 50, 150);
        assert_eq!(b.tid, FIRST_SYNTHETIC_TID + 1);
        assert!(b.opened);
        assert_eq!(b.name_lane, Some((1, "scheduler".to_owned())));
        assert_eq!(t.lane_of(10), None);
        assert_eq!(t.lane_of(11), Some(FIRST_SYNTHETIC_TID + 1));
        // Renamed (a resumed file), its lanes are named again after it.
        assert_eq!(t.name(1, 5, titled("scheduler")), [FIRST_SYNTHETIC_TID + 1]);
        // An unnamed thread's lane comes with no name to write.
        let c = t.lane_for(1, 6, 12, 0, 100);
        let d = t.lane_for(1, 6, 13, 50, 150);
        assert_eq!(c.tid, 6);
        assert!(d.opened && d.name_lane.is_none());
        assert_eq!(t.unnamed(), [(1, 6)]);
        assert_eq!(t.names(), [((1, 5), titled("scheduler"))]);
    }

    /// Tracks of threads with no id are forgotten beyond what the index can still reach; others
    /// are kept.
    #[test]
    fn minted_tracks_are_bounded() {
        let mut t = Tracks::new(1 << 10, 4);
        t.name(1, 5, titled("scheduler"));
        for _ in 0..100 {
            let tid = t.synthetic_tid();
            t.name(1, tid, titled("worker"));
        }
        assert_eq!(t.len(), 5);
        assert!(t.is_named(1, 5));
        assert!(t.is_named(1, t.last_synthetic_tid()));
        assert!(!t.is_named(1, FIRST_SYNTHETIC_TID + 1));
    }
}
