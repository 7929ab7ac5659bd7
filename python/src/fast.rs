//! The hottest calls as raw `METH_FASTCALL | METH_KEYWORDS` functions. PyO3's wrapper costs
//! about as much again as the call itself (measured: 40 ns for a PyO3 function of no
//! arguments, 26 ns for `len('x')`), so these bind their arguments here: a positional call
//! with two arguments goes straight to the body; keywords are matched by text.

use crate::calls;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString};
use pyo3::Borrowed;
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

type Arg<'a, 'py> = Option<Borrowed<'a, 'py, PyAny>>;

/// Binds a vectorcall's arguments to `names` (null: not given).
///
/// # Safety
/// `args` holds `nargs` positional values followed by one value per name in `kwnames` (a
/// tuple of `str`, or null), all alive for `'a`, as CPython passes them.
unsafe fn bind<'a, 'py, const N: usize>(
    py: Python<'py>,
    func: &str,
    names: [&str; N],
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<[Arg<'a, 'py>; N]> {
    let mut out: [Arg<'a, 'py>; N] = [None; N];
    let nargs = nargs.max(0) as usize;
    if nargs > N {
        return Err(PyTypeError::new_err(format!(
            "{func}() takes at most {N} positional arguments ({nargs} given)"
        )));
    }
    for (i, slot) in out.iter_mut().enumerate().take(nargs) {
        // SAFETY: i < nargs, and the caller guarantees `nargs` valid positional values.
        *slot = Some(unsafe { Borrowed::from_ptr(py, *args.add(i)) });
    }
    if !kwnames.is_null() {
        // SAFETY: `kwnames` is a live tuple (the caller's guarantee).
        let kw = unsafe { Borrowed::from_ptr(py, kwnames) };
        let n = kw.len()?;
        for j in 0..n {
            let key = kw.get_item(j)?;
            let key = key.cast::<PyString>()?.to_str()?.to_owned();
            let Some(at) = names.iter().position(|n| *n == key) else {
                return Err(PyTypeError::new_err(format!(
                    "{func}() got an unexpected keyword argument '{key}'"
                )));
            };
            if out[at].is_some() {
                return Err(PyTypeError::new_err(format!(
                    "{func}() got multiple values for argument '{key}'"
                )));
            }
            // SAFETY: keyword values follow the positional ones, one per name.
            out[at] = Some(unsafe { Borrowed::from_ptr(py, *args.add(nargs + j)) });
        }
    }
    Ok(out)
}

fn need<'a, 'py>(func: &str, arg: &str, a: Arg<'a, 'py>) -> PyResult<Borrowed<'a, 'py, PyAny>> {
    a.ok_or_else(|| PyTypeError::new_err(format!("{func}() missing required argument '{arg}'")))
}

fn given<'a, 'py>(a: Arg<'a, 'py>) -> Arg<'a, 'py> {
    a.filter(|v| !v.is_none())
}

fn ts(func: &str, a: Arg<'_, '_>) -> PyResult<Option<u64>> {
    match given(a) {
        None => Ok(None),
        Some(v) if v.is_instance_of::<PyInt>() => v.extract::<u64>().map(Some),
        Some(v) => Err(crate::convert::type_error(func, "ts", "int or None", &v)),
    }
}

fn flag(func: &str, arg: &str, a: Arg<'_, '_>) -> PyResult<bool> {
    match a {
        None => Ok(false),
        Some(v) => v
            .cast::<pyo3::types::PyBool>()
            .map(|b| b.is_true())
            .map_err(|_| crate::convert::type_error(func, arg, "bool", &v)),
    }
}

fn dict<'a, 'py>(func: &str, a: Arg<'a, 'py>) -> PyResult<Option<Borrowed<'a, 'py, PyDict>>> {
    match given(a) {
        None => Ok(None),
        Some(v) => v
            .cast::<PyDict>()
            .map(Some)
            .map_err(|_| crate::convert::type_error(func, "attrs", "dict or None", &v)),
    }
}

/// The body of each entry point: `args`, `nargs` and `kwnames` as CPython passed them.
type Body = unsafe fn(
    Python<'_>,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> PyResult<()>;

/// Two positional arguments, when the call has exactly those.
///
/// # Safety
/// As [`bind`].
unsafe fn two<'a, 'py>(
    py: Python<'py>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> Option<(Borrowed<'a, 'py, PyAny>, Borrowed<'a, 'py, PyAny>)> {
    if nargs == 2 && kwnames.is_null() {
        // SAFETY: exactly two positional values, as just checked.
        Some(unsafe {
            (
                Borrowed::from_ptr(py, *args),
                Borrowed::from_ptr(py, *args.add(1)),
            )
        })
    } else {
        None
    }
}

unsafe fn slice_start(
    py: Python<'_>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<()> {
    const F: &str = "trace_slice_start";
    // SAFETY (both calls): forwarded unchanged from CPython's call.
    if let Some((name, rid)) = unsafe { two(py, args, nargs, kwnames) } {
        return calls::trace_slice_start(py, &name, &rid, None, false);
    }
    let [name, rid, t, anon] = unsafe {
        bind(
            py,
            F,
            ["name", "rid", "ts", "anonymous"],
            args,
            nargs,
            kwnames,
        )?
    };
    let (name, rid) = (need(F, "name", name)?, need(F, "rid", rid)?);
    calls::trace_slice_start(py, &name, &rid, ts(F, t)?, flag(F, "anonymous", anon)?)
}

unsafe fn slice_end(
    py: Python<'_>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<()> {
    const F: &str = "trace_slice_end";
    // SAFETY (both calls): forwarded unchanged from CPython's call.
    if let Some((name, rid)) = unsafe { two(py, args, nargs, kwnames) } {
        return calls::trace_slice_end(py, &name, &rid, None, None, false, false);
    }
    let names = [
        "name",
        "rid",
        "ts",
        "attrs",
        "auto_next_anon",
        "thread_finish_flag",
    ];
    let [name, rid, t, attrs, next, finish] = unsafe { bind(py, F, names, args, nargs, kwnames)? };
    let (name, rid) = (need(F, "name", name)?, need(F, "rid", rid)?);
    let attrs = dict(F, attrs)?;
    calls::trace_slice_end(
        py,
        &name,
        &rid,
        ts(F, t)?,
        attrs.as_deref(),
        flag(F, "auto_next_anon", next)?,
        flag(F, "thread_finish_flag", finish)?,
    )
}

unsafe fn event(
    py: Python<'_>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<()> {
    const F: &str = "trace_event";
    // SAFETY (both calls): forwarded unchanged from CPython's call.
    if let Some((name, rid)) = unsafe { two(py, args, nargs, kwnames) } {
        return calls::trace_event(py, &name, &rid, None, None);
    }
    let [name, rid, t, attrs] =
        unsafe { bind(py, F, ["name", "rid", "ts", "attrs"], args, nargs, kwnames)? };
    let (name, rid) = (need(F, "name", name)?, need(F, "rid", rid)?);
    let attrs = dict(F, attrs)?;
    calls::trace_event(py, &name, &rid, ts(F, t)?, attrs.as_deref())
}

/// Runs `body` for CPython: `None` on success; on an error (or, should one happen, a panic)
/// the exception set and null.
#[inline(always)]
fn run(
    body: Body,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a `PyCFunction` with the calling thread attached to the
    // interpreter, which is what the token stands for.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: the arguments are CPython's own for this call.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe {
        body(py, args, nargs, kwnames)
    }));
    match r {
        Ok(Ok(())) => py.None().into_ptr(),
        Ok(Err(e)) => {
            e.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            PyRuntimeError::new_err("slicetrace: internal error in a tracing call").restore(py);
            std::ptr::null_mut()
        }
    }
}

macro_rules! entry {
    ($raw:ident, $body:ident) => {
        unsafe extern "C" fn $raw(
            _module: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            run($body, args, nargs, kwnames)
        }
    };
}

entry!(raw_slice_start, slice_start);
entry!(raw_slice_end, slice_end);
entry!(raw_event, event);

const FUNCS: [(&CStr, ffi::PyCFunctionFastWithKeywords, &CStr); 3] = [
    (
        c"trace_slice_start",
        raw_slice_start,
        c"trace_slice_start(name, rid, ts=None, anonymous=False)\n--\n\nOpens a slice under this request's innermost open slice on this thread (else its thread span); anonymous=True leaves the name to the trace_slice_end that closes it.",
    ),
    (
        c"trace_slice_end",
        raw_slice_end,
        c"trace_slice_end(name, rid, ts=None, attrs=None, auto_next_anon=False, thread_finish_flag=False)\n--\n\nEnds this request's innermost open slice on this thread (an anonymous one takes name), then opens the next anonymous slice (auto_next_anon) or ends the thread span (thread_finish_flag).",
    ),
    (
        c"trace_event",
        raw_event,
        c"trace_event(name, rid, ts=None, attrs=None)\n--\n\nA span event on this request's innermost open slice on this thread.",
    ),
];

/// Adds the entry points to the module.
pub fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let module_name = m.name()?;
    for (name, fun, doc) in FUNCS {
        // The interpreter keeps a pointer to the definition for the function's lifetime:
        // leaked once per import, three small structs.
        let def = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: fun,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: doc.as_ptr(),
        }));
        // SAFETY: `def` lives forever and describes a fastcall-with-keywords function of the
        // right signature; the module name is a live `str`.
        let f = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyCMethod_New(
                    def,
                    std::ptr::null_mut(),
                    module_name.as_ptr(),
                    std::ptr::null_mut(),
                ),
            )?
        };
        m.add(name.to_string_lossy().as_ref(), f)?;
    }
    Ok(())
}
