//! What the writer keeps of a slice while it waits for its thread and for the reorder window:
//! the ids, times and first link inline, the name as a number in a table of names, and the
//! rarer parts (attributes, events, an error, more links) boxed apart.
//!
//! A slice waits about as long as the window (2 s of trace time, tens of thousands of spans),
//! so everything it holds is cold when it is written: as a `HeldSlice` it is two cache lines in
//! the writer's own slab rather than three allocations (a box, its name, its links), and its
//! span's memory is freed while still warm.

use crate::model::{AttrValue, Span, SpanEvent};
use crate::util::json_str;
use std::collections::HashMap;

/// Distinct names kept in the table; a slice with a name past these carries its own.
const MAX_NAMES: usize = 1 << 12;

pub(super) struct HeldSlice {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The link when the span has exactly one (the common case: the slice before it).
    link: (u128, u64),
    one_link: bool,
    name: u32,
    rest: Option<Box<Rest>>,
}

/// The parts most slices do not have.
#[derive(Default)]
struct Rest {
    /// The name, when the table had no room for it.
    name: Option<String>,
    /// Every link, when there is not exactly one.
    links: Vec<(u128, u64)>,
    attrs: Vec<(String, AttrValue)>,
    events: Vec<SpanEvent>,
    error: Option<String>,
}

/// Places in the table of recently seen names.
const RECENT: usize = 64;

/// Span names, each once, as JSON strings ready to copy into a line.
pub(super) struct Names {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    json: Vec<Box<str>>,
    /// Ids of names seen lately, by a cheap hash of the name: a few dozen names make up
    /// nearly every slice, and one comparison finds them without the keyed hash the table
    /// needs against input chosen to collide.
    recent: [u32; RECENT],
}

impl Default for Names {
    fn default() -> Names {
        Names {
            ids: HashMap::new(),
            names: Vec::new(),
            json: Vec::new(),
            recent: [u32::MAX; RECENT],
        }
    }
}

impl Names {
    fn id(&mut self, name: &str) -> Option<u32> {
        let b = name.as_bytes();
        let at = match (b.first(), b.last()) {
            (Some(&f), Some(&l)) => (b.len() ^ (f as usize) << 1 ^ (l as usize) << 3) % RECENT,
            _ => 0,
        };
        let guess = self.recent[at];
        if self.names.get(guess as usize).is_some_and(|n| **n == *name) {
            return Some(guess);
        }
        let id = match self.ids.get(name) {
            Some(id) => *id,
            None if self.json.len() >= MAX_NAMES => return None,
            None => {
                let id = self.json.len() as u32;
                let mut text = String::with_capacity(name.len() + 2);
                json_str(&mut text, name);
                self.json.push(text.into_boxed_str());
                self.names.push(name.into());
                self.ids.insert(name.into(), id);
                id
            }
        };
        self.recent[at] = id;
        Some(id)
    }
}

impl HeldSlice {
    /// Takes what the writer needs from `span`; the rest of it is dropped here.
    pub fn new(span: Span, names: &mut Names) -> HeldSlice {
        let name = names.id(&span.name);
        let one_link = span.links.len() == 1;
        let link = if one_link { span.links[0] } else { (0, 0) };
        let plain = name.is_some()
            && (one_link || span.links.is_empty())
            && span.attrs.is_empty()
            && span.events.is_empty()
            && span.error.is_none();
        let rest = (!plain).then(|| {
            Box::new(Rest {
                name: name.is_none().then_some(span.name),
                links: if one_link { Vec::new() } else { span.links },
                attrs: span.attrs,
                events: span.events,
                error: span.error,
            })
        });
        HeldSlice {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent: span.parent,
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            link,
            one_link,
            name: name.unwrap_or(u32::MAX),
            rest,
        }
    }

    /// (trace id, span id) of each linked span.
    pub fn links(&self) -> &[(u128, u64)] {
        match (&self.rest, self.one_link) {
            (_, true) => std::slice::from_ref(&self.link),
            (Some(r), false) => &r.links,
            (None, false) => &[],
        }
    }

    pub fn attrs(&self) -> &[(String, AttrValue)] {
        self.rest.as_ref().map_or(&[], |r| &r.attrs)
    }

    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attrs().iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn error(&self) -> Option<&str> {
        self.rest.as_ref().and_then(|r| r.error.as_deref())
    }

    /// Takes the span's events, leaving none.
    pub fn take_events(&mut self) -> Vec<SpanEvent> {
        self.rest
            .as_mut()
            .map_or_else(Vec::new, |r| std::mem::take(&mut r.events))
    }

    /// Appends the name as a JSON string.
    pub fn push_name(&self, out: &mut String, names: &Names) {
        match names.json.get(self.name as usize) {
            Some(json) => out.push_str(json),
            None => {
                let name = self.rest.as_ref().and_then(|r| r.name.as_deref());
                json_str(out, name.unwrap_or_default())
            }
        }
    }

    /// Where the boxed parts are, for a prefetch; null when there are none.
    pub fn rest_ptr(&self) -> *const u8 {
        self.rest
            .as_deref()
            .map_or(std::ptr::null(), |r| (r as *const Rest).cast())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, links: Vec<(u128, u64)>, attrs: Vec<(String, AttrValue)>) -> Span {
        Span {
            trace_id: 7,
            span_id: 8,
            parent: 9,
            name: name.to_owned(),
            start_ns: 10,
            end_ns: 20,
            attrs,
            events: Vec::new(),
            links,
            error: None,
            role: crate::model::Role::Slice,
        }
    }

    fn name_of(h: &HeldSlice, names: &Names) -> String {
        let mut s = String::new();
        h.push_name(&mut s, names);
        s
    }

    /// Whatever the span has — no link, one, several, attributes, a name past the table —
    /// the held slice gives back the same.
    #[test]
    fn a_held_slice_gives_back_what_its_span_had() {
        let mut names = Names::default();
        let one = vec![(1u128, 2u64)];
        let many = vec![(1u128, 2u64), (3, 4), (5, 6)];
        let attrs = vec![("k".to_owned(), AttrValue::Int(3))];
        for (links, attrs) in [
            (vec![], vec![]),
            (one.clone(), vec![]),
            (many.clone(), vec![]),
            (one.clone(), attrs.clone()),
        ] {
            let h = HeldSlice::new(span("de\"code", links.clone(), attrs.clone()), &mut names);
            assert_eq!(h.links(), &links[..]);
            assert_eq!(h.attrs(), &attrs[..]);
            assert_eq!(name_of(&h, &names), r#""de\"code""#);
            assert_eq!((h.trace_id, h.span_id, h.parent), (7, 8, 9));
            assert_eq!((h.start_ns, h.end_ns), (10, 20));
        }
        assert_eq!(names.json.len(), 1);
        let mut s = span("failed", vec![], vec![]);
        s.error = Some("bad".to_owned());
        s.events = vec![SpanEvent {
            name: "ev".to_owned(),
            time_ns: 15,
            attrs: Vec::new(),
        }];
        let mut h = HeldSlice::new(s.clone(), &mut names);
        assert_eq!(h.error(), Some("bad"));
        assert_eq!(h.take_events(), s.events);
        assert!(h.take_events().is_empty());
        let plain = HeldSlice::new(span("decode", one.clone(), vec![]), &mut names);
        assert!(plain.rest_ptr().is_null() && !h.rest_ptr().is_null());
        for i in 1..MAX_NAMES + 5 {
            let h = HeldSlice::new(span(&format!("n{i}"), one.clone(), vec![]), &mut names);
            assert_eq!(name_of(&h, &names), format!("\"n{i}\""));
            assert_eq!(h.links(), &one[..]);
        }
        assert_eq!(names.json.len(), MAX_NAMES);
    }
}
