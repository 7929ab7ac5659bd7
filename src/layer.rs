//! A [`tracing_subscriber::Layer`] that records the spans and events of chosen targets as
//! async slices of a request (feature `tracing`).
//!
//! A `tracing` span belongs to a request when it, or an ancestor, carries the request id in a
//! field (`rid` unless [`SliceLayer::rid_field`] says otherwise): an unsigned or signed integer
//! is the [`Rid`] itself, a string (`rid = text.as_str()`, or `rid = %text`) is hashed as
//! [`req_start`](crate::req_start) hashes it. Such a span of a chosen target becomes an
//! [`AsyncSlice`] from its creation to its close, under the nearest ancestor span recorded so
//! (else the async slice of the request entered on the thread, else the request span), with
//! its fields (and those recorded later) as attributes; an event
//! inside it becomes an event on it, its fields as attributes (the `message` too), named by
//! its callsite. While such a span is entered, async slices of its request started on that
//! thread ([`InSlice`](crate::InSlice), [`AsyncSlice::start`]) nest under it.
//!
//! With [`SliceLayer::starting_requests`], a span that carries the request id while no
//! ancestor does starts the request when it is made (under the span of the OpenTelemetry
//! context current then, if it holds a valid one: what a propagator extracted from a request's
//! headers) and finishes it when it closes.
//!
//! Names come from callsites, which are `'static`: each is interned once, and a span costs a
//! lock-free lookup of its callsite's name, the visit of its fields, and the async slice's
//! records.

use crate::args::{Attr, Opts, Value};
use crate::local::api::{req_finish, req_start_with, ReqStart};
use crate::local::task::{current_entered, enter_raw, entered_for, event_on, restore, AsyncSlice};
use crate::{Name, PropagateContext, Rid};
use slicetrace_spans::util::MixHash;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The layer: see the module docs.
#[derive(Debug, Clone)]
pub struct SliceLayer {
    targets: Vec<String>,
    rid_field: &'static str,
    start_requests: bool,
}

impl Default for SliceLayer {
    fn default() -> Self {
        SliceLayer::new()
    }
}

impl SliceLayer {
    /// Records spans of every target, the request id in the field `rid`; starts no request.
    pub fn new() -> SliceLayer {
        SliceLayer {
            targets: Vec::new(),
            rid_field: "rid",
            start_requests: false,
        }
    }

    /// Records only spans and events whose target is one of `prefixes` or below one
    /// (`"gateway"` takes `gateway` and `gateway::route`). A span of another target inside a
    /// request is not recorded, but passes the request on to its children.
    pub fn with_targets<I, S>(mut self, prefixes: I) -> SliceLayer
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.targets = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// The field that carries the request id.
    pub fn rid_field(mut self, field: &'static str) -> SliceLayer {
        self.rid_field = field;
        self
    }

    /// A span carrying the request id under no span that does starts the request, and
    /// finishes it when it closes (see the module docs).
    pub fn starting_requests(mut self) -> SliceLayer {
        self.start_requests = true;
        self
    }

    fn records(&self, target: &str) -> bool {
        self.targets.is_empty()
            || self.targets.iter().any(|p| {
                target
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
    }
}

/// What a span of a request keeps in its extensions.
struct InRequest {
    rid: Rid,
    /// The nearest recorded slice, this span's own or an ancestor's (0: none).
    slice_id: u64,
    own: Option<AsyncSlice>,
    /// It started the request, and finishes it when it closes.
    started: bool,
}

thread_local! {
    /// The spans entered on this thread and not exited, innermost last, as the registry's own
    /// stack: a span made in another's scope finds its parent's request here, unlooked-up.
    static ENTERED: RefCell<Stack> = const {
        RefCell::new(Stack {
            entries: Vec::new(),
            lost: false,
        })
    };
    /// This thread's copy of the names made so far, read without a lock.
    static LOCAL_NAMES: RefCell<HashMap<(usize, usize), &'static Name, MixHash>> =
        const { RefCell::new(HashMap::with_hasher(MixHash)) };
}

thread_local! {
    /// The span made last on this thread and its request: most spans are entered right after
    /// they are made (`in_scope`, an instrumented function's first poll), and their entry then
    /// needs no lookup. A span id names one span while it lives, and the registry's ids carry
    /// a generation, so a reused slot is another id.
    static MADE_LAST: Cell<(u64, Option<(Rid, u64)>)> = const { Cell::new((0, None)) };
}

/// Spans entered at once on a thread that the stack follows; past it (or with an entry
/// refused) it is not trusted until it is empty again, and parents are looked up.
const MAX_ENTERED: usize = 256;

struct Stack {
    entries: Vec<Entry>,
    /// An entry was refused: the stack no longer mirrors the registry's.
    lost: bool,
}

struct Entry {
    span: u64,
    /// Its request and nearest slice, if it is of one.
    req: Option<(Rid, u64)>,
    /// The entered slice `on_exit` puts back, when entering it entered a slice.
    prev: Option<(u64, u64)>,
    /// The entered slice once it was entered: another one later means an async slice was
    /// entered inside it (a future's `in_slice` being polled), innermost since.
    seen: (u64, u64),
    /// Entered again while already entered: the registry's current span ignores such an entry.
    duplicate: bool,
}

impl Stack {
    /// The innermost entry the registry counts as current.
    fn top(&self) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| !e.duplicate)
    }
}

/// What an entry says of the request and slice work in its scope belongs to: its own, or an
/// async slice of the request entered inside it since.
fn in_scope_of(e: &Entry) -> Option<(Rid, u64)> {
    let (rid, slice) = e.req?;
    let now = current_entered();
    if now != e.seen && now.0 == rid.0 && now.1 != 0 {
        return Some((rid, now.1));
    }
    Some((rid, slice))
}

/// What the parent of a new span says of its request: `Some(None)` when it is known to be of
/// none (or there is no parent); `None` when it must be looked up.
fn entered_parent(attrs: &Attributes<'_>) -> Option<Option<(Rid, u64)>> {
    if attrs.is_root() {
        return Some(None);
    }
    ENTERED
        .try_with(|s| {
            let s = s.borrow();
            if s.lost {
                return None;
            }
            match (attrs.parent(), s.top()) {
                // In the scope of the innermost span entered here: that is its parent.
                (None, Some(top)) => Some(in_scope_of(top)),
                (None, None) => Some(None),
                (Some(p), Some(top)) if top.span == p.into_u64() => Some(top.req),
                (Some(_), _) => None,
            }
        })
        .ok()
        .flatten()
}

/// For an event in the scope of span `span`: an async slice of `rid` entered inside it since,
/// if one is.
fn entered_inside(span: u64, rid: Rid) -> Option<u64> {
    ENTERED
        .try_with(|s| {
            let s = s.borrow();
            let top = s.top().filter(|t| t.span == span && !s.lost)?;
            in_scope_of(top)
                .filter(|(r, _)| *r == rid)
                .map(|(_, id)| id)
        })
        .ok()
        .flatten()
}

/// The `Name` of a `'static` text (a callsite's or a field's name), made once.
fn name_of(text: &'static str) -> &'static Name {
    // By address: a callsite's texts are the same `'static` strings at every call.
    static NAMES: RwLock<Option<HashMap<(usize, usize), &'static Name>>> = RwLock::new(None);
    let key = (text.as_ptr() as usize, text.len());
    let local = LOCAL_NAMES.try_with(|m| m.borrow().get(&key).copied());
    if let Ok(Some(n)) = local {
        return n;
    }
    let n = shared_name(&NAMES, key, text);
    let _ = LOCAL_NAMES.try_with(|m| m.borrow_mut().insert(key, n));
    n
}

fn shared_name(
    names: &RwLock<Option<HashMap<(usize, usize), &'static Name>>>,
    key: (usize, usize),
    text: &'static str,
) -> &'static Name {
    if let Some(n) = names
        .read()
        .ok()
        .and_then(|m| m.as_ref().and_then(|m| m.get(&key).copied()))
    {
        return n;
    }
    let mut map = names.write().unwrap_or_else(|e| e.into_inner());
    map.get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert_with(|| Box::leak(Box::new(Name::new(text))))
}

enum Owned {
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
}

/// A span's or event's fields, and the request id among them.
struct Fields<'l> {
    rid_field: &'l str,
    rid: Option<(Rid, Option<String>)>,
    attrs: Vec<(&'static Name, Owned)>,
}

impl<'l> Fields<'l> {
    fn new(rid_field: &'l str) -> Fields<'l> {
        Fields {
            rid_field,
            rid: None,
            attrs: Vec::new(),
        }
    }

    /// A field: the request id (which every slice carries as `rid` already), or an attribute.
    fn put(&mut self, field: &Field, v: Owned) {
        if field.name() != self.rid_field {
            self.attrs.push((name_of(field.name()), v));
            return;
        }
        self.rid = match v {
            Owned::I64(i) => Some((Rid(i as u64), None)),
            Owned::Str(s) => Some((Rid::from_str_id(&s), Some(s))),
            _ => None,
        };
    }

    /// The attributes, borrowing their values, for a call to take.
    fn with_attrs<R>(&self, f: impl FnOnce(&[Attr<'_>]) -> R) -> R {
        let attrs: Vec<Attr<'_>> = self
            .attrs
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Owned::I64(i) => Value::I64(*i),
                    Owned::F64(x) => Value::F64(*x),
                    Owned::Bool(b) => Value::Bool(*b),
                    Owned::Str(s) => Value::Str(s),
                };
                Attr::new(k, value)
            })
            .collect();
        f(&attrs)
    }
}

impl Visit for Fields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Owned::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        // OpenTelemetry has no unsigned integers: one past i64's range is kept as text; a
        // request id is the integer's bits.
        if field.name() == self.rid_field {
            self.rid = Some((Rid(value), None));
            return;
        }
        match i64::try_from(value) {
            Ok(v) => self.put(field, Owned::I64(v)),
            Err(_) => self.put(field, Owned::Str(value.to_string())),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Owned::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Owned::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Owned::Str(value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Owned::Str(format!("{value:?}")));
    }
}

/// The span context OpenTelemetry holds as current, as a parent for a request started here.
fn current_otel_parent() -> Option<PropagateContext> {
    use opentelemetry::trace::TraceContextExt;
    let cx = opentelemetry::Context::current();
    PropagateContext::from_span_context(cx.span().span_context())
}

impl<S> tracing_subscriber::Layer<S> for SliceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !crate::is_enabled() {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        // Held from here to the insert: one lock of the new span's extensions.
        let mut ext = span.extensions_mut();
        if ext.get_mut::<InRequest>().is_some() {
            // Another `SliceLayer` in the same subscriber took the span.
            return;
        }
        let mut fields = Fields::new(self.rid_field);
        attrs.record(&mut fields);
        let inherited = entered_parent(attrs).unwrap_or_else(|| {
            let p = span.parent()?;
            let ext = p.extensions();
            ext.get::<InRequest>().map(|r| (r.rid, r.slice_id))
        });
        let mut started = false;
        let (rid, parent) = match (inherited, fields.rid.take()) {
            // A span naming another request than its ancestors' starts afresh under it.
            (Some((rid, parent)), own) if own.as_ref().is_none_or(|(r, _)| *r == rid) => {
                (rid, parent)
            }
            (_, Some((rid, text))) => {
                if self.start_requests {
                    let parent = current_otel_parent();
                    let opts = ReqStart {
                        parent: parent.as_ref(),
                        no_room_span: true,
                        ..ReqStart::default()
                    };
                    match &text {
                        Some(t) => req_start_with(t.as_str(), opts),
                        None => req_start_with(rid, opts),
                    };
                    started = true;
                }
                // At the top of its `tracing` tree: under the async slice of its request
                // entered here (a future's `in_slice` being polled), else the request's span.
                (rid, if started { 0 } else { entered_for(rid) })
            }
            (_, None) => {
                let _ = MADE_LAST.try_with(|m| m.set((id.into_u64(), None)));
                return;
            }
        };
        let meta = span.metadata();
        let own = self.records(meta.target()).then(|| {
            let name = name_of(meta.name());
            fields.with_attrs(|attrs| {
                AsyncSlice::start_under(name, rid, Some(parent), Opts { ts: None, attrs })
            })
        });
        let slice_id = own.as_ref().and_then(AsyncSlice::span_id).unwrap_or(parent);
        let _ = MADE_LAST.try_with(|m| m.set((id.into_u64(), Some((rid, slice_id)))));
        ext.insert(InRequest {
            rid,
            slice_id,
            own,
            started,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let ext = span.extensions();
        let Some(slice) = ext.get::<InRequest>().and_then(|r| r.own.as_ref()) else {
            return;
        };
        let mut fields = Fields::new(self.rid_field);
        values.record(&mut fields);
        fields.with_attrs(|attrs| slice.add_attrs(attrs));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !crate::is_enabled() || !self.records(event.metadata().target()) {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let found = span
            .extensions()
            .get::<InRequest>()
            .map(|r| (r.rid, r.slice_id));
        let Some((rid, mut slice_id)) = found else {
            return;
        };
        if event.is_contextual() {
            slice_id = entered_inside(span.id().into_u64(), rid).unwrap_or(slice_id);
        }
        if slice_id == 0 {
            return;
        }
        let mut fields = Fields::new(self.rid_field);
        event.record(&mut fields);
        let name = name_of(event.metadata().name());
        fields.with_attrs(|attrs| event_on(rid, slice_id, name, Opts { ts: None, attrs }));
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let made = MADE_LAST
            .try_with(|m| m.get())
            .ok()
            .filter(|m| m.0 == id.into_u64());
        let req = match made {
            Some((_, req)) => req,
            None => {
                let Some(span) = ctx.span(id) else {
                    return;
                };
                let ext = span.extensions();
                ext.get::<InRequest>().map(|r| (r.rid, r.slice_id))
            }
        };
        let span_id = id.into_u64();
        let _ = ENTERED.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.entries.len() >= MAX_ENTERED {
                s.lost = true;
                return;
            }
            let duplicate = s.entries.iter().any(|e| e.span == span_id);
            let prev = match req {
                Some((rid, slice_id)) if slice_id != 0 && !duplicate => {
                    Some(enter_raw(rid, slice_id))
                }
                _ => None,
            };
            s.entries.push(Entry {
                span: span_id,
                req,
                prev,
                seen: current_entered(),
                duplicate,
            });
        });
    }

    fn on_exit(&self, id: &Id, _: Context<'_, S>) {
        let span_id = id.into_u64();
        let _ = ENTERED.try_with(|s| {
            let mut s = s.borrow_mut();
            // The registry takes off the innermost entry of the span, wherever it is: guards
            // may be dropped out of order.
            if let Some(i) = s.entries.iter().rposition(|e| e.span == span_id) {
                let gone = s.entries.remove(i);
                if let Some(prev) = gone.prev {
                    match s.entries[i..].iter_mut().find(|e| e.prev.is_some()) {
                        // An entry above it put back what this one had entered: it puts back
                        // what this one found instead.
                        Some(above) if above.prev == Some(gone.seen) => above.prev = Some(prev),
                        Some(_) => {}
                        None => restore(prev),
                    }
                }
            }
            if s.entries.is_empty() {
                s.lost = false;
            }
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let _ = MADE_LAST.try_with(|m| {
            if m.get().0 == id.into_u64() {
                m.set((0, None));
            }
        });
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(r) = span.extensions_mut().remove::<InRequest>() else {
            return;
        };
        drop(r.own);
        if r.started {
            req_finish(r.rid);
        }
    }
}
