//! A small pickle writer (protocol 2) for data-only values.
//!
//! Enough for the verification `.bin` layout: tuples, lists, dicts, bools, numbers, text, and
//! byte strings. Protocol 2 has no `bytes` opcode, so byte strings are written either the way
//! Python 3 itself does for protocol 2 (`_codecs.encode(<latin-1 text>, 'latin1')`, loads as
//! `bytes` under any `encoding=`) or as Python 2 `str` (`BINSTRING`, loads as `bytes` under
//! `encoding='bytes'`, the layout of the historical LFW/CFP/AgeDB files).

use super::opcodes as op;
use super::value::{CallKind, Value};

/// How byte strings are spelled in a protocol 2 pickle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BytesStyle {
    /// `_codecs.encode(str, 'latin1')`, what Python 3's `pickle.dumps(b, protocol=2)` writes.
    #[default]
    CodecsEncode,
    /// Python 2 `str` via `SHORT_BINSTRING` / `BINSTRING`.
    Py2Str,
}

/// Why a value could not be pickled.
#[derive(Debug, thiserror::Error)]
pub enum PickleWriteError {
    /// The value kind has no protocol 2 spelling here (sets, big integers).
    #[error("cannot write a {0} in a protocol 2 pickle")]
    Unsupported(&'static str),
    /// A byte string longer than `BINSTRING`'s 2 GiB limit.
    #[error("byte string of {0} bytes is too long for protocol 2")]
    TooLong(usize),
}

/// Serialises `value` as a protocol 2 pickle (PROTO 2 … STOP).
pub fn dumps(value: &Value, style: BytesStyle) -> Result<Vec<u8>, PickleWriteError> {
    let mut out = vec![op::PROTO, 2];
    write_value(&mut out, value, style)?;
    out.push(op::STOP);
    Ok(out)
}

fn write_unicode(out: &mut Vec<u8>, s: &str) -> Result<(), PickleWriteError> {
    let n = u32::try_from(s.len()).map_err(|_| PickleWriteError::TooLong(s.len()))?;
    out.push(op::BINUNICODE);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn write_value(out: &mut Vec<u8>, value: &Value, style: BytesStyle) -> Result<(), PickleWriteError> {
    match value {
        Value::None => out.push(op::NONE),
        Value::Bool(true) => out.push(op::NEWTRUE),
        Value::Bool(false) => out.push(op::NEWFALSE),
        Value::Int(i) => {
            let i = *i;
            if (0..=0xff).contains(&i) {
                out.extend_from_slice(&[op::BININT1, i as u8]);
            } else if (0..=0xffff).contains(&i) {
                out.push(op::BININT2);
                out.extend_from_slice(&(i as u16).to_le_bytes());
            } else if let Ok(v) = i32::try_from(i) {
                out.push(op::BININT);
                out.extend_from_slice(&v.to_le_bytes());
            } else {
                out.extend_from_slice(&[op::LONG1, 8]);
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
        Value::Float(f) => {
            out.push(op::BINFLOAT);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => write_unicode(out, s)?,
        Value::Bytes(b) => match style {
            BytesStyle::CodecsEncode => {
                out.extend_from_slice(b"c_codecs\nencode\n");
                let text: String = b.iter().map(|&c| char::from(c)).collect();
                write_unicode(out, &text)?;
                write_unicode(out, "latin1")?;
                out.extend_from_slice(&[op::TUPLE2, op::REDUCE]);
            }
            BytesStyle::Py2Str => {
                if let Ok(n) = u8::try_from(b.len()) {
                    out.extend_from_slice(&[op::SHORT_BINSTRING, n]);
                } else {
                    let n = i32::try_from(b.len()).map_err(|_| PickleWriteError::TooLong(b.len()))?;
                    out.push(op::BINSTRING);
                    out.extend_from_slice(&n.to_le_bytes());
                }
                out.extend_from_slice(b);
            }
        },
        Value::Tuple(items) => match items.len() {
            0 => out.push(op::EMPTY_TUPLE),
            1..=3 => {
                for v in items {
                    write_value(out, v, style)?;
                }
                out.push([op::TUPLE1, op::TUPLE2, op::TUPLE3][items.len() - 1]);
            }
            _ => {
                out.push(op::MARK);
                for v in items {
                    write_value(out, v, style)?;
                }
                out.push(op::TUPLE);
            }
        },
        Value::List(items) => {
            out.push(op::EMPTY_LIST);
            write_appends(out, items, style)?;
        }
        Value::Dict(items) => {
            out.push(op::EMPTY_DICT);
            write_setitems(out, items, style)?;
        }
        Value::Global { module, name } => {
            out.push(op::GLOBAL);
            out.extend_from_slice(module.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        Value::Object(o) => {
            if o.kwargs.is_some() {
                return Err(PickleWriteError::Unsupported("call with keyword arguments"));
            }
            write_value(out, &o.callable, style)?;
            write_value(out, &o.args, style)?;
            out.push(match o.kind {
                CallKind::Reduce => op::REDUCE,
                CallKind::NewObj => op::NEWOBJ,
            });
            write_appends(out, &o.list_items, style)?;
            write_setitems(out, &o.dict_items, style)?;
            if let Some(state) = &o.state {
                write_value(out, state, style)?;
                out.push(op::BUILD);
            }
        }
        Value::BigInt(_) => return Err(PickleWriteError::Unsupported("big integer")),
        Value::Set(_) => return Err(PickleWriteError::Unsupported("set")),
        Value::PersistentId(pid) => {
            write_value(out, pid, style)?;
            out.push(op::BINPERSID);
        }
    }
    Ok(())
}

fn write_appends(out: &mut Vec<u8>, items: &[Value], style: BytesStyle) -> Result<(), PickleWriteError> {
    for chunk in items.chunks(1000) {
        out.push(op::MARK);
        for v in chunk {
            write_value(out, v, style)?;
        }
        out.push(op::APPENDS);
    }
    Ok(())
}

fn write_setitems(out: &mut Vec<u8>, items: &[(Value, Value)], style: BytesStyle) -> Result<(), PickleWriteError> {
    for chunk in items.chunks(1000) {
        out.push(op::MARK);
        for (k, v) in chunk {
            write_value(out, k, style)?;
            write_value(out, v, style)?;
        }
        out.push(op::SETITEMS);
    }
    Ok(())
}
