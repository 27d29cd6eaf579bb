//! A restricted pickle virtual machine for protocols 0–5 that never executes anything.
//!
//! Python's own unpickler imports and calls whatever a file names, so loading an untrusted
//! checkpoint or `.bin` with it can run arbitrary code. This reader interprets the opcodes
//! itself: globals are checked against an [`AllowList`] the moment they appear (rejecting e.g.
//! `os.system` with the file, offset and name), and calls become inert [`Object`] records.
//!
//! Objects live in an arena and the stack and memo hold indices, so aliasing and in-place
//! mutation (`SETITEMS` on a memoised dict, `BUILD` on a memoised object) behave exactly as in
//! Python. The arena is turned into a [`Value`] tree at `STOP`, with limits on nesting depth and
//! total size so hostile inputs (deep nesting, exponential sharing, cycles) fail cleanly instead
//! of exhausting the stack or memory. Every length is checked against the bytes remaining
//! before anything is allocated.

use std::collections::HashMap;
use std::path::Path;

use super::allow::AllowList;
use super::opcodes::{self as op, opcode_name};
use super::value::{CallKind, Object, Value};
use crate::formats::FormatError;

/// Deepest value nesting accepted in the result.
const MAX_DEPTH: usize = 200;
/// Highest pickle protocol understood.
const MAX_PROTOCOL: u8 = 5;

/// Reads a pickle from a file with the given allow-list of globals.
pub fn load_file(path: &Path, allow: &AllowList) -> Result<Value, FormatError> {
    let data = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    load(&data, path, allow)
}

/// Runs the restricted VM over `data`; `source` names the file in errors.
pub fn load(data: &[u8], source: &Path, allow: &AllowList) -> Result<Value, FormatError> {
    let mut vm = Vm { data, pos: 0, source, allow, nodes: Vec::new(), stack: Vec::new(), memo: HashMap::new() };
    let root = vm.run()?;
    // Budgets for the conversion: generous multiples of the input size.
    let mut budget = Budget { nodes: 16 * data.len() as u64 + 4096, bytes: 4 * data.len() as u64 + (1 << 20) };
    vm.to_value(root, 0, &mut budget)
}

type Id = usize;

/// A hashable summary of a dict key, so `SETITEM` with a repeated key replaces in place.
#[derive(Hash, PartialEq, Eq)]
enum KeyRepr {
    Int(i64),
    Str(String),
    Bytes(Vec<u8>),
    NoneKey,
}

#[derive(Default)]
struct Mapping {
    items: Vec<(Id, Id)>,
    index: HashMap<KeyRepr, usize>,
}

enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Bytes(Vec<u8>),
    Str(String),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Mapping),
    Set(Vec<Id>),
    Global { module: String, name: String },
    Object(Box<ObjNode>),
    PersistentId(Id),
}

struct ObjNode {
    kind: CallKind,
    callable: Id,
    args: Id,
    kwargs: Option<Id>,
    state: Option<Id>,
    dict_items: Mapping,
    list_items: Vec<Id>,
}

#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Val(Id),
}

struct Budget {
    nodes: u64,
    bytes: u64,
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    source: &'a Path,
    allow: &'a AllowList,
    nodes: Vec<Node>,
    stack: Vec<Slot>,
    memo: HashMap<u64, Id>,
}

impl<'a> Vm<'a> {
    fn err(&self, offset: usize, message: impl Into<String>) -> FormatError {
        FormatError::corrupt(self.source, offset as u64, message)
    }

    fn take(&mut self, n: usize, at: usize) -> Result<&'a [u8], FormatError> {
        let data: &'a [u8] = self.data;
        let end = self.pos.checked_add(n).filter(|&e| e <= data.len()).ok_or_else(|| {
            self.err(
                at,
                format!(
                    "truncated pickle: opcode {} needs {n} more bytes, {} remain",
                    opcode_name(data.get(at).copied().unwrap_or(0)),
                    data.len().saturating_sub(self.pos)
                ),
            )
        })?;
        let s = &data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn take_array<const N: usize>(&mut self, at: usize) -> Result<[u8; N], FormatError> {
        let s = self.take(N, at)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn take_len(&mut self, n: u64, at: usize) -> Result<&'a [u8], FormatError> {
        let n = usize::try_from(n).map_err(|_| self.err(at, format!("length {n} is too large")))?;
        self.take(n, at)
    }

    fn line(&mut self, at: usize) -> Result<&'a [u8], FormatError> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos.min(data.len())..];
        let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.err(at, "truncated pickle: text argument has no newline"))?;
        self.pos += nl + 1;
        Ok(&rest[..nl])
    }

    fn line_str(&mut self, at: usize) -> Result<&'a str, FormatError> {
        let l = self.line(at)?;
        std::str::from_utf8(l).map_err(|_| self.err(at, "text argument is not UTF-8"))
    }

    fn push_node(&mut self, n: Node) -> Id {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn push(&mut self, n: Node) {
        let id = self.push_node(n);
        self.stack.push(Slot::Val(id));
    }

    fn pop(&mut self, at: usize) -> Result<Id, FormatError> {
        match self.stack.pop() {
            Some(Slot::Val(id)) => Ok(id),
            Some(Slot::Mark) => Err(self.err(at, "found a MARK where a value was expected")),
            None => Err(self.err(at, "pickle stack underflow")),
        }
    }

    fn top(&self, at: usize) -> Result<Id, FormatError> {
        match self.stack.last() {
            Some(Slot::Val(id)) => Ok(*id),
            Some(Slot::Mark) => Err(self.err(at, "found a MARK where a value was expected")),
            None => Err(self.err(at, "pickle stack is empty")),
        }
    }

    /// Pops everything down to (and including) the last MARK.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Id>, FormatError> {
        let m = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)).ok_or_else(|| self.err(at, "no MARK on the pickle stack"))?;
        let items = self.stack[m + 1..]
            .iter()
            .map(|s| match s {
                Slot::Val(id) => *id,
                Slot::Mark => 0, // unreachable: m is the last mark
            })
            .collect();
        self.stack.truncate(m);
        Ok(items)
    }

    fn check_global(&self, module: &str, name: &str, at: usize) -> Result<(), FormatError> {
        if self.allow.allows(module, name) {
            return Ok(());
        }
        let code = self.data.get(at).copied().unwrap_or(0);
        Err(FormatError::ForbiddenGlobal {
            path: self.source.to_path_buf(),
            offset: at as u64,
            opcode: opcode_name(code),
            global: format!("{module}.{name}"),
            allowed: self.allow.describe(),
        })
    }

    fn key_repr(&self, id: Id) -> Option<KeyRepr> {
        match self.nodes.get(id)? {
            Node::Int(i) => Some(KeyRepr::Int(*i)),
            Node::Bool(b) => Some(KeyRepr::Int(i64::from(*b))),
            Node::Str(s) => Some(KeyRepr::Str(s.clone())),
            Node::Bytes(b) => Some(KeyRepr::Bytes(b.clone())),
            Node::None => Some(KeyRepr::NoneKey),
            _ => None,
        }
    }

    fn set_items(&mut self, target: Id, pairs: &[(Id, Id)], at: usize) -> Result<(), FormatError> {
        let reprs: Vec<Option<KeyRepr>> = pairs.iter().map(|(k, _)| self.key_repr(*k)).collect();
        let type_name = node_type(self.nodes.get(target));
        let map = match self.nodes.get_mut(target) {
            Some(Node::Dict(m)) => m,
            Some(Node::Object(o)) => &mut o.dict_items,
            _ => return Err(self.err(at, format!("SETITEM(S) on a {type_name}, not a dict"))),
        };
        for (&(k, v), repr) in pairs.iter().zip(reprs) {
            match repr {
                Some(r) => match map.index.get(&r) {
                    Some(&i) => map.items[i] = (k, v),
                    None => {
                        map.index.insert(r, map.items.len());
                        map.items.push((k, v));
                    }
                },
                None => map.items.push((k, v)),
            }
        }
        Ok(())
    }

    fn append_items(&mut self, target: Id, items: &[Id], at: usize) -> Result<(), FormatError> {
        let type_name = node_type(self.nodes.get(target));
        match self.nodes.get_mut(target) {
            Some(Node::List(l)) => l.extend_from_slice(items),
            Some(Node::Object(o)) => o.list_items.extend_from_slice(items),
            _ => return Err(self.err(at, format!("APPEND(S) on a {type_name}, not a list"))),
        }
        Ok(())
    }

    fn new_object(&mut self, kind: CallKind, callable: Id, args: Id, kwargs: Option<Id>) {
        self.push(Node::Object(Box::new(ObjNode {
            kind,
            callable,
            args,
            kwargs,
            state: None,
            dict_items: Mapping::default(),
            list_items: Vec::new(),
        })));
    }

    fn memo_get(&self, key: u64, at: usize) -> Result<Id, FormatError> {
        self.memo.get(&key).copied().ok_or_else(|| self.err(at, format!("memo key {key} was never stored")))
    }

    fn memo_put(&mut self, key: u64, at: usize) -> Result<(), FormatError> {
        let id = self.top(at)?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn int_from_le(&mut self, bytes: &[u8]) -> Node {
        if bytes.len() <= 8 {
            let mut buf = [0u8; 8];
            buf[..bytes.len()].copy_from_slice(bytes);
            if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                for b in buf.iter_mut().skip(bytes.len()) {
                    *b = 0xff;
                }
            }
            Node::Int(i64::from_le_bytes(buf))
        } else {
            Node::BigInt(bytes.to_vec())
        }
    }

    fn parse_decimal(&self, text: &str, at: usize) -> Result<i64, FormatError> {
        let t = text.trim().trim_end_matches('L');
        t.parse::<i64>().map_err(|_| self.err(at, format!("integer '{t}' is not a 64-bit decimal integer")))
    }

    fn run(&mut self) -> Result<Id, FormatError> {
        loop {
            let at = self.pos;
            let Some(&code) = self.data.get(at) else {
                return Err(self.err(at, "truncated pickle: ended without a STOP opcode"));
            };
            self.pos += 1;
            match code {
                op::PROTO => {
                    let [v] = self.take_array::<1>(at)?;
                    if v > MAX_PROTOCOL {
                        return Err(self.err(at, format!("pickle protocol {v} is newer than 5")));
                    }
                }
                op::FRAME => {
                    let n = u64::from_le_bytes(self.take_array::<8>(at)?);
                    if n > (self.data.len() - self.pos) as u64 {
                        return Err(self.err(at, format!("FRAME of {n} bytes runs past the end")));
                    }
                }
                op::STOP => return self.pop(at),
                op::MARK => self.stack.push(Slot::Mark),
                op::POP => {
                    if self.stack.pop().is_none() {
                        return Err(self.err(at, "POP on an empty stack"));
                    }
                }
                op::POP_MARK => {
                    self.pop_mark(at)?;
                }
                op::DUP => {
                    let id = self.top(at)?;
                    self.stack.push(Slot::Val(id));
                }
                // --- constants and numbers
                op::NONE => self.push(Node::None),
                op::NEWTRUE => self.push(Node::Bool(true)),
                op::NEWFALSE => self.push(Node::Bool(false)),
                op::INT => {
                    let t = self.line_str(at)?;
                    let n = match t {
                        "00" => Node::Bool(false),
                        "01" => Node::Bool(true),
                        _ => Node::Int(self.parse_decimal(t, at)?),
                    };
                    self.push(n);
                }
                op::LONG => {
                    let t = self.line_str(at)?;
                    let node = match self.parse_decimal(t, at) {
                        Ok(v) => Node::Int(v),
                        Err(e) => Node::BigInt(decimal_to_le(t).ok_or(e)?),
                    };
                    self.push(node);
                }
                op::BININT => {
                    let v = i32::from_le_bytes(self.take_array::<4>(at)?);
                    self.push(Node::Int(i64::from(v)));
                }
                op::BININT1 => {
                    let [v] = self.take_array::<1>(at)?;
                    self.push(Node::Int(i64::from(v)));
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.take_array::<2>(at)?);
                    self.push(Node::Int(i64::from(v)));
                }
                op::LONG1 => {
                    let [n] = self.take_array::<1>(at)?;
                    let b = self.take(usize::from(n), at)?;
                    let node = self.int_from_le(b);
                    self.push(node);
                }
                op::LONG4 => {
                    let n = i32::from_le_bytes(self.take_array::<4>(at)?);
                    if n < 0 {
                        return Err(self.err(at, "LONG4 with a negative length"));
                    }
                    let b = self.take_len(n as u64, at)?;
                    let node = self.int_from_le(b);
                    self.push(node);
                }
                op::FLOAT => {
                    let t = self.line_str(at)?;
                    let v = t.trim().parse::<f64>().map_err(|_| self.err(at, format!("float '{t}' does not parse")))?;
                    self.push(Node::Float(v));
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.take_array::<8>(at)?);
                    self.push(Node::Float(v));
                }
                // --- byte strings (Python 2 str is read as bytes, like encoding='bytes')
                op::STRING => {
                    let l = self.line(at)?;
                    let b = unquote_repr(l).map_err(|m| self.err(at, m))?;
                    self.push(Node::Bytes(b));
                }
                op::BINSTRING => {
                    let n = i32::from_le_bytes(self.take_array::<4>(at)?);
                    if n < 0 {
                        return Err(self.err(at, "BINSTRING with a negative length"));
                    }
                    let b = self.take_len(n as u64, at)?.to_vec();
                    self.push(Node::Bytes(b));
                }
                op::SHORT_BINSTRING | op::SHORT_BINBYTES => {
                    let [n] = self.take_array::<1>(at)?;
                    let b = self.take(usize::from(n), at)?.to_vec();
                    self.push(Node::Bytes(b));
                }
                op::BINBYTES => {
                    let n = u32::from_le_bytes(self.take_array::<4>(at)?);
                    let b = self.take_len(u64::from(n), at)?.to_vec();
                    self.push(Node::Bytes(b));
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = u64::from_le_bytes(self.take_array::<8>(at)?);
                    let b = self.take_len(n, at)?.to_vec();
                    self.push(Node::Bytes(b));
                }
                // --- text strings
                op::UNICODE => {
                    let l = self.line(at)?;
                    let s = raw_unicode_escape(l).map_err(|m| self.err(at, m))?;
                    self.push(Node::Str(s));
                }
                op::BINUNICODE => {
                    let n = u32::from_le_bytes(self.take_array::<4>(at)?);
                    let b = self.take_len(u64::from(n), at)?;
                    let s = self.utf8(b, at)?;
                    self.push(Node::Str(s));
                }
                op::SHORT_BINUNICODE => {
                    let [n] = self.take_array::<1>(at)?;
                    let b = self.take(usize::from(n), at)?;
                    let s = self.utf8(b, at)?;
                    self.push(Node::Str(s));
                }
                op::BINUNICODE8 => {
                    let n = u64::from_le_bytes(self.take_array::<8>(at)?);
                    let b = self.take_len(n, at)?;
                    let s = self.utf8(b, at)?;
                    self.push(Node::Str(s));
                }
                // --- containers
                op::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new())),
                op::TUPLE => {
                    let items = self.pop_mark(at)?;
                    self.push(Node::Tuple(items));
                }
                op::TUPLE1 => {
                    let a = self.pop(at)?;
                    self.push(Node::Tuple(vec![a]));
                }
                op::TUPLE2 => {
                    let b = self.pop(at)?;
                    let a = self.pop(at)?;
                    self.push(Node::Tuple(vec![a, b]));
                }
                op::TUPLE3 => {
                    let c = self.pop(at)?;
                    let b = self.pop(at)?;
                    let a = self.pop(at)?;
                    self.push(Node::Tuple(vec![a, b, c]));
                }
                op::EMPTY_LIST => self.push(Node::List(Vec::new())),
                op::LIST => {
                    let items = self.pop_mark(at)?;
                    self.push(Node::List(items));
                }
                op::APPEND => {
                    let v = self.pop(at)?;
                    let target = self.top(at)?;
                    self.append_items(target, &[v], at)?;
                }
                op::APPENDS => {
                    let items = self.pop_mark(at)?;
                    let target = self.top(at)?;
                    self.append_items(target, &items, at)?;
                }
                op::EMPTY_DICT => self.push(Node::Dict(Mapping::default())),
                op::DICT => {
                    let items = self.pop_mark(at)?;
                    if items.len() % 2 != 0 {
                        return Err(self.err(at, "DICT with an odd number of items"));
                    }
                    let id = self.push_node(Node::Dict(Mapping::default()));
                    let pairs: Vec<(Id, Id)> = items.chunks(2).map(|c| (c[0], c[1])).collect();
                    self.set_items(id, &pairs, at)?;
                    self.stack.push(Slot::Val(id));
                }
                op::SETITEM => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    let target = self.top(at)?;
                    self.set_items(target, &[(k, v)], at)?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark(at)?;
                    if items.len() % 2 != 0 {
                        return Err(self.err(at, "SETITEMS with an odd number of items"));
                    }
                    let target = self.top(at)?;
                    let pairs: Vec<(Id, Id)> = items.chunks(2).map(|c| (c[0], c[1])).collect();
                    self.set_items(target, &pairs, at)?;
                }
                op::EMPTY_SET => self.push(Node::Set(Vec::new())),
                op::ADDITEMS => {
                    let items = self.pop_mark(at)?;
                    let target = self.top(at)?;
                    match self.nodes.get_mut(target) {
                        Some(Node::Set(s)) => s.extend(items),
                        _ => return Err(self.err(at, "ADDITEMS on something that is not a set")),
                    }
                }
                op::FROZENSET => {
                    let items = self.pop_mark(at)?;
                    self.push(Node::Set(items));
                }
                // --- memo
                op::PUT => {
                    let t = self.line_str(at)?;
                    let k = self.parse_decimal(t, at)?;
                    self.memo_put(k as u64, at)?;
                }
                op::BINPUT => {
                    let [k] = self.take_array::<1>(at)?;
                    self.memo_put(u64::from(k), at)?;
                }
                op::LONG_BINPUT => {
                    let k = u32::from_le_bytes(self.take_array::<4>(at)?);
                    self.memo_put(u64::from(k), at)?;
                }
                op::MEMOIZE => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k, at)?;
                }
                op::GET => {
                    let t = self.line_str(at)?;
                    let k = self.parse_decimal(t, at)?;
                    let id = self.memo_get(k as u64, at)?;
                    self.stack.push(Slot::Val(id));
                }
                op::BINGET => {
                    let [k] = self.take_array::<1>(at)?;
                    let id = self.memo_get(u64::from(k), at)?;
                    self.stack.push(Slot::Val(id));
                }
                op::LONG_BINGET => {
                    let k = u32::from_le_bytes(self.take_array::<4>(at)?);
                    let id = self.memo_get(u64::from(k), at)?;
                    self.stack.push(Slot::Val(id));
                }
                // --- globals and calls (recorded, never executed)
                op::GLOBAL => {
                    let module = self.line_str(at)?.to_string();
                    let name = self.line_str(at)?.to_string();
                    self.check_global(&module, &name, at)?;
                    self.push(Node::Global { module, name });
                }
                op::STACK_GLOBAL => {
                    let name_id = self.pop(at)?;
                    let module_id = self.pop(at)?;
                    let (Some(Node::Str(module)), Some(Node::Str(name))) = (self.nodes.get(module_id), self.nodes.get(name_id)) else {
                        return Err(self.err(at, "STACK_GLOBAL needs two strings on the stack"));
                    };
                    let (module, name) = (module.clone(), name.clone());
                    self.check_global(&module, &name, at)?;
                    self.push(Node::Global { module, name });
                }
                op::INST => {
                    let module = self.line_str(at)?.to_string();
                    let name = self.line_str(at)?.to_string();
                    self.check_global(&module, &name, at)?;
                    let args = self.pop_mark(at)?;
                    let cls = self.push_node(Node::Global { module, name });
                    let args = self.push_node(Node::Tuple(args));
                    self.new_object(CallKind::NewObj, cls, args, None);
                }
                op::OBJ => {
                    let items = self.pop_mark(at)?;
                    let Some((&cls, args)) = items.split_first() else {
                        return Err(self.err(at, "OBJ without a class"));
                    };
                    let args = self.push_node(Node::Tuple(args.to_vec()));
                    self.new_object(CallKind::NewObj, cls, args, None);
                }
                op::REDUCE => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    self.new_object(CallKind::Reduce, callable, args, None);
                }
                op::NEWOBJ => {
                    let args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    self.new_object(CallKind::NewObj, cls, args, None);
                }
                op::NEWOBJ_EX => {
                    let kwargs = self.pop(at)?;
                    let args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    self.new_object(CallKind::NewObj, cls, args, Some(kwargs));
                }
                op::BUILD => {
                    let state = self.pop(at)?;
                    let target = self.top(at)?;
                    let type_name = node_type(self.nodes.get(target));
                    match self.nodes.get_mut(target) {
                        Some(Node::Object(o)) => o.state = Some(state),
                        _ => return Err(self.err(at, format!("BUILD on a {type_name}, not an object"))),
                    }
                }
                op::PERSID => {
                    let t = self.line_str(at)?.to_string();
                    let pid = self.push_node(Node::Str(t));
                    self.push(Node::PersistentId(pid));
                }
                op::BINPERSID => {
                    let pid = self.pop(at)?;
                    self.push(Node::PersistentId(pid));
                }
                op::READONLY_BUFFER => {
                    self.top(at)?;
                }
                _ => {
                    return Err(FormatError::PickleOpcode {
                        path: self.source.to_path_buf(),
                        offset: at as u64,
                        opcode: code,
                        name: opcode_name(code),
                    })
                }
            }
        }
    }

    fn utf8(&self, b: &[u8], at: usize) -> Result<String, FormatError> {
        String::from_utf8(b.to_vec()).map_err(|_| self.err(at, "string is not valid UTF-8"))
    }

    fn to_value(&self, id: Id, depth: usize, budget: &mut Budget) -> Result<Value, FormatError> {
        if depth > MAX_DEPTH {
            return Err(self.err(self.data.len(), format!("pickle nests deeper than {MAX_DEPTH} levels (or is self-referential)")));
        }
        if budget.nodes == 0 {
            return Err(self.err(self.data.len(), "pickle expands to too many values"));
        }
        budget.nodes -= 1;
        let spend = |n: usize, b: &mut Budget| -> Result<(), FormatError> {
            if (n as u64) > b.bytes {
                return Err(self.err(self.data.len(), "pickle expands to too many bytes"));
            }
            b.bytes -= n as u64;
            Ok(())
        };
        let seq = |ids: &[Id], budget: &mut Budget| -> Result<Vec<Value>, FormatError> {
            ids.iter().map(|&i| self.to_value(i, depth + 1, budget)).collect()
        };
        let map = |m: &Mapping, budget: &mut Budget| -> Result<Vec<(Value, Value)>, FormatError> {
            m.items.iter().map(|&(k, v)| Ok((self.to_value(k, depth + 1, budget)?, self.to_value(v, depth + 1, budget)?))).collect()
        };
        let Some(node) = self.nodes.get(id) else {
            return Err(self.err(self.data.len(), "internal: dangling pickle reference"));
        };
        Ok(match node {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::Int(*i),
            Node::BigInt(b) => {
                spend(b.len(), budget)?;
                Value::BigInt(b.clone())
            }
            Node::Float(f) => Value::Float(*f),
            Node::Bytes(b) => {
                spend(b.len(), budget)?;
                Value::Bytes(b.clone())
            }
            Node::Str(s) => {
                spend(s.len(), budget)?;
                Value::Str(s.clone())
            }
            Node::Tuple(ids) => Value::Tuple(seq(ids, budget)?),
            Node::List(ids) => Value::List(seq(ids, budget)?),
            Node::Set(ids) => Value::Set(seq(ids, budget)?),
            Node::Dict(m) => Value::Dict(map(m, budget)?),
            Node::Global { module, name } => Value::Global { module: module.clone(), name: name.clone() },
            Node::PersistentId(p) => Value::PersistentId(Box::new(self.to_value(*p, depth + 1, budget)?)),
            Node::Object(o) => {
                let callable = self.to_value(o.callable, depth + 1, budget)?;
                let args = self.to_value(o.args, depth + 1, budget)?;
                let kwargs = match o.kwargs {
                    Some(k) => Some(self.to_value(k, depth + 1, budget)?),
                    None => None,
                };
                let state = match o.state {
                    Some(s) => Some(self.to_value(s, depth + 1, budget)?),
                    None => None,
                };
                Value::Object(Box::new(Object {
                    kind: o.kind,
                    callable,
                    args,
                    kwargs,
                    state,
                    dict_items: map(&o.dict_items, budget)?,
                    list_items: seq(&o.list_items, budget)?,
                }))
            }
        })
    }
}

fn node_type(n: Option<&Node>) -> &'static str {
    match n {
        Some(Node::None) => "None",
        Some(Node::Bool(_)) => "bool",
        Some(Node::Int(_)) | Some(Node::BigInt(_)) => "int",
        Some(Node::Float(_)) => "float",
        Some(Node::Bytes(_)) => "bytes",
        Some(Node::Str(_)) => "str",
        Some(Node::Tuple(_)) => "tuple",
        Some(Node::List(_)) => "list",
        Some(Node::Dict(_)) => "dict",
        Some(Node::Set(_)) => "set",
        Some(Node::Global { .. }) => "global",
        Some(Node::Object(_)) => "object",
        Some(Node::PersistentId(_)) => "persistent id",
        None => "missing value",
    }
}

/// Converts a decimal integer (optionally signed, optional trailing `L`) to minimal
/// little-endian two's complement bytes, as `LONG1` stores it. At most 10,000 digits.
fn decimal_to_le(text: &str) -> Option<Vec<u8>> {
    let t = text.trim().trim_end_matches('L');
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty() || digits.len() > 10_000 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // magnitude, little-endian base 256
    let mut mag: Vec<u8> = vec![0];
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    mag.push(0); // room for the sign bit
    if neg {
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    // trim redundant sign-extension bytes
    while mag.len() > 1 {
        let last = mag[mag.len() - 1];
        let prev = mag[mag.len() - 2];
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            mag.pop();
        } else {
            break;
        }
    }
    Some(mag)
}

/// Decodes the Python `repr()` of a byte string as protocol 0's STRING opcode stores it.
fn unquote_repr(line: &[u8]) -> Result<Vec<u8>, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = match (line.first(), line.last()) {
        (Some(&q), Some(&e)) if line.len() >= 2 && (q == b'\'' || q == b'"') && e == q => &line[1..line.len() - 1],
        _ => return Err("STRING argument is not quoted".to_string()),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return Err("STRING ends with a lone backslash".to_string());
        };
        i += 1;
        match e {
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\n' => {}
            b'x' => {
                let h = inner.get(i..i + 2).ok_or("STRING has a short \\x escape")?;
                let s = std::str::from_utf8(h).map_err(|_| "bad \\x escape")?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| "bad \\x escape")?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                            n += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Decodes Python's `raw-unicode-escape` (protocol 0's UNICODE opcode).
fn raw_unicode_escape(line: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'\\' && matches!(line.get(i + 1), Some(b'u') | Some(b'U')) {
            let n = if line[i + 1] == b'u' { 4 } else { 8 };
            let hex = line.get(i + 2..i + 2 + n).ok_or("UNICODE has a short escape")?;
            let s = std::str::from_utf8(hex).map_err(|_| "bad unicode escape")?;
            let v = u32::from_str_radix(s, 16).map_err(|_| "bad unicode escape")?;
            out.push(char::from_u32(v).ok_or("unicode escape is not a character")?);
            i += 2 + n;
        } else {
            out.push(char::from(c));
            i += 1;
        }
    }
    Ok(out)
}
