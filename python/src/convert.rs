//! Python arguments to the core's types, with a `TypeError` naming the argument for a value of
//! the wrong type.

use crate::cache;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use slicetrace::options::UnixNanos;
use slicetrace::{Attr, Name, Rid, Value};
use std::borrow::Cow;

pub fn type_error(func: &str, arg: &str, expected: &str, got: &Bound<'_, PyAny>) -> PyErr {
    let ty = got
        .get_type()
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    PyTypeError::new_err(format!(
        "{func}() argument '{arg}' must be {expected}, not {ty}"
    ))
}

/// A slice or event name: a `str` (or a subclass, such as SGLang's `RequestStage` enum).
#[inline]
pub fn name(func: &str, arg: &Bound<'_, PyAny>) -> PyResult<&'static Name> {
    cache::name(name_arg(func, arg)?)
}

/// A name argument, its type checked once for both the off path and the lookup.
#[inline]
pub fn name_arg<'a, 'py>(
    func: &str,
    arg: &'a Bound<'py, PyAny>,
) -> PyResult<&'a Bound<'py, PyString>> {
    arg.cast::<PyString>()
        .map_err(|_| type_error(func, "name", "str", arg))
}

/// A request id argument, its type checked once for both the off path and the lookup.
pub enum RidArg<'a, 'py> {
    Str(&'a Bound<'py, PyString>),
    Int(&'a Bound<'py, PyAny>),
}

#[inline]
pub fn rid_arg<'a, 'py>(func: &str, arg: &'a Bound<'py, PyAny>) -> PyResult<RidArg<'a, 'py>> {
    if let Ok(s) = arg.cast::<PyString>() {
        return Ok(RidArg::Str(s));
    }
    check_rid(func, arg)?;
    Ok(RidArg::Int(arg))
}

impl RidArg<'_, '_> {
    /// The interned name and this rid, a str rid looked up with the name in one cache visit.
    #[inline]
    pub fn with_name(
        &self,
        func: &str,
        name: &Bound<'_, PyString>,
    ) -> PyResult<(&'static Name, Rid)> {
        match self {
            RidArg::Str(s) => cache::name_and_rid(name, s),
            RidArg::Int(_) => Ok((cache::name(name)?, self.rid(func)?)),
        }
    }

    #[inline]
    pub fn rid(&self, func: &str) -> PyResult<Rid> {
        match self {
            RidArg::Str(s) => cache::rid(s),
            RidArg::Int(a) => Ok(Rid::from_str_id(&rid_text(func, a)?)),
        }
    }
}

/// Checks the type of a name without looking it up (for calls made while tracing is off).
#[inline]
pub fn check_name(func: &str, arg: &Bound<'_, PyAny>) -> PyResult<()> {
    if arg.is_instance_of::<PyString>() {
        Ok(())
    } else {
        Err(type_error(func, "name", "str", arg))
    }
}

/// Checks the type of a request id without hashing it.
#[inline]
pub fn check_rid(func: &str, arg: &Bound<'_, PyAny>) -> PyResult<()> {
    if arg.is_instance_of::<PyString>()
        || (arg.is_instance_of::<PyInt>() && !arg.is_instance_of::<PyBool>())
    {
        Ok(())
    } else {
        Err(type_error(func, "rid", "str or int", arg))
    }
}

/// A request id: a `str`, or an `int` taken as its decimal text (SGLang calls `str(rid)`;
/// bootstrap rooms serve as rids in its router).
#[inline]
pub fn rid(func: &str, arg: &Bound<'_, PyAny>) -> PyResult<Rid> {
    rid_arg(func, arg)?.rid(func)
}

/// The text of a request id, for the calls that record it whole.
pub fn rid_text<'a>(func: &str, arg: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, str>> {
    if let Ok(s) = arg.cast::<PyString>() {
        return s.to_cow();
    }
    if arg.is_instance_of::<PyInt>() && !arg.is_instance_of::<PyBool>() {
        return Ok(Cow::Owned(arg.str()?.to_str()?.to_owned()));
    }
    Err(type_error(func, "rid", "str or int", arg))
}

/// SGLang's `ts`: nanoseconds since the Unix epoch; `None` or `0` mean now.
#[inline]
pub fn ts(t: Option<u64>) -> Option<UnixNanos> {
    match t {
        None | Some(0) => None,
        Some(t) => Some(UnixNanos(t)),
    }
}

/// An attribute value as the core takes it. `None` values are skipped (as OpenTelemetry drops
/// them). A list or tuple whose elements are all `str`, all `bool`, all `int` (within 64 bits)
/// or all `float` is an array, as OpenTelemetry's sequences; integers beyond 64 bits, other
/// sequences (mixed, holding `None`, nested) and values of other types are recorded as their
/// `str()`. Strings are borrowed from their Python objects, not copied.
pub enum OwnedValue {
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(PyBackedStr),
    I64s(Vec<i64>),
    F64s(Vec<f64>),
    Bools(Vec<bool>),
    Strs(Vec<PyBackedStr>),
}

impl OwnedValue {
    fn from_py(v: &Bound<'_, PyAny>) -> PyResult<OwnedValue> {
        if let Some(scalar) = OwnedValue::from_element(v)? {
            return Ok(scalar);
        }
        let array = if let Ok(list) = v.cast::<PyList>() {
            Self::array(list.iter())?
        } else if let Ok(tuple) = v.cast::<PyTuple>() {
            Self::array(tuple.iter())?
        } else {
            None
        };
        match array {
            Some(array) => Ok(array),
            None => Ok(OwnedValue::Str(PyBackedStr::try_from(v.str()?)?)),
        }
    }

    /// The array a sequence's elements make, if they are all of one type the core takes.
    fn array<'py>(
        items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    ) -> PyResult<Option<OwnedValue>> {
        let mut out: Option<OwnedValue> = None;
        let n = items.len();
        for item in items {
            let Some(e) = OwnedValue::from_element(&item)? else {
                return Ok(None);
            };
            let out = out.get_or_insert_with(|| match e {
                OwnedValue::I64(_) => OwnedValue::I64s(Vec::with_capacity(n)),
                OwnedValue::F64(_) => OwnedValue::F64s(Vec::with_capacity(n)),
                OwnedValue::Bool(_) => OwnedValue::Bools(Vec::with_capacity(n)),
                _ => OwnedValue::Strs(Vec::with_capacity(n)),
            });
            match (out, e) {
                (OwnedValue::I64s(xs), OwnedValue::I64(i)) => xs.push(i),
                (OwnedValue::F64s(xs), OwnedValue::F64(f)) => xs.push(f),
                (OwnedValue::Bools(xs), OwnedValue::Bool(b)) => xs.push(b),
                (OwnedValue::Strs(xs), OwnedValue::Str(s)) => xs.push(s),
                _ => return Ok(None),
            }
        }
        Ok(Some(out.unwrap_or(OwnedValue::Strs(Vec::new()))))
    }

    /// A scalar the core takes (also an array's element): a `str`, `bool`, `float`, or `int`
    /// within 64 bits; else `None`.
    fn from_element(v: &Bound<'_, PyAny>) -> PyResult<Option<OwnedValue>> {
        Ok(Some(if let Ok(s) = v.cast::<PyString>() {
            OwnedValue::Str(PyBackedStr::try_from(s.clone())?)
        } else if let Ok(b) = v.cast::<PyBool>() {
            OwnedValue::Bool(b.is_true())
        } else if v.is_instance_of::<PyInt>() {
            match v.extract::<i64>() {
                Ok(i) => OwnedValue::I64(i),
                Err(_) => return Ok(None),
            }
        } else if let Ok(f) = v.cast::<PyFloat>() {
            OwnedValue::F64(f.value())
        } else {
            return Ok(None);
        }))
    }
}

pub struct Attrs {
    items: Vec<(&'static Name, OwnedValue)>,
}

impl Attrs {
    pub fn from_dict(func: &str, arg: &str, d: Option<&Bound<'_, PyDict>>) -> PyResult<Attrs> {
        let mut items = Vec::new();
        let Some(d) = d else {
            return Ok(Attrs { items });
        };
        items.reserve(d.len());
        for (k, v) in d.iter() {
            let key = match k.cast::<PyString>() {
                Ok(s) => cache::name(s)?,
                Err(_) => return Err(type_error(func, &format!("{arg}' key '{k}"), "str", &k)),
            };
            if v.is_none() {
                continue;
            }
            items.push((key, OwnedValue::from_py(&v)?));
        }
        Ok(Attrs { items })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Runs `f` with the attributes as the core's calls borrow them.
    pub fn with_core<R>(&self, f: impl FnOnce(&[Attr<'_>]) -> R) -> R {
        // A string array is borrowed as a slice of `&str`, which the stored strings are not.
        let texts: Vec<Vec<&str>> = self
            .items
            .iter()
            .filter_map(|(_, v)| match v {
                OwnedValue::Strs(xs) => Some(xs.iter().map(|s| &**s).collect()),
                _ => None,
            })
            .collect();
        let mut texts = texts.iter();
        let core: Vec<Attr<'_>> = self
            .items
            .iter()
            .map(|(k, v)| Attr {
                key: k,
                value: match v {
                    OwnedValue::I64(i) => Value::I64(*i),
                    OwnedValue::F64(f) => Value::F64(*f),
                    OwnedValue::Bool(b) => Value::Bool(*b),
                    OwnedValue::Str(s) => Value::Str(s),
                    OwnedValue::I64s(xs) => Value::I64s(xs),
                    OwnedValue::F64s(xs) => Value::F64s(xs),
                    OwnedValue::Bools(xs) => Value::Bools(xs),
                    OwnedValue::Strs(_) => Value::Strs(texts.next().map_or(&[], |t| t)),
                },
            })
            .collect();
        f(&core)
    }
}
