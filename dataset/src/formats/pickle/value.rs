//! The inert value tree a restricted pickle load produces.
//!
//! Calls (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`) are not performed: they become [`Value::Object`]
//! records that remember what would have been called with which arguments, plus whatever
//! `BUILD`, `SETITEM(S)` and `APPEND(S)` did to the result. Consumers interpret the few shapes
//! they know (a torch tensor rebuild, a numpy array reconstruct) and reject everything else.

/// Which opcode created an [`Object`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// `REDUCE`: `callable(*args)`.
    Reduce,
    /// `NEWOBJ` / `NEWOBJ_EX` / `OBJ` / `INST`: `cls.__new__(cls, *args)` or `cls(*args)`.
    NewObj,
}

/// A call that a real unpickler would have made, recorded instead of executed.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// How it was created.
    pub kind: CallKind,
    /// The callable or class (normally a [`Value::Global`]).
    pub callable: Value,
    /// The positional arguments (normally a [`Value::Tuple`]).
    pub args: Value,
    /// Keyword arguments (`NEWOBJ_EX` only).
    pub kwargs: Option<Value>,
    /// Argument of `BUILD` (`__setstate__`), if any; the last one wins.
    pub state: Option<Value>,
    /// Items set on the object by `SETITEM(S)` (e.g. an `OrderedDict`), in order.
    pub dict_items: Vec<(Value, Value)>,
    /// Items appended by `APPEND(S)`, in order.
    pub list_items: Vec<Value>,
}

/// A Python value as far as a data-only pickle can describe it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer, little-endian two's complement (as `LONG1`/`LONG4` store it).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// `bytes`, `bytearray`, or a Python 2 `str` (read as bytes, like `encoding='bytes'`).
    Bytes(Vec<u8>),
    /// A text string.
    Str(String),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in insertion order (duplicate keys keep the last value at the first position).
    Dict(Vec<(Value, Value)>),
    /// A set or frozenset, in insertion order.
    Set(Vec<Value>),
    /// A reference to `module.name` that passed the allow-list.
    Global {
        /// Module path, e.g. `collections`.
        module: String,
        /// Attribute name, e.g. `OrderedDict`.
        name: String,
    },
    /// A recorded call; see [`Object`].
    Object(Box<Object>),
    /// A persistent id (`PERSID`/`BINPERSID`), e.g. a torch storage reference.
    PersistentId(Box<Value>),
}

impl Value {
    /// True if this is the global `module.name`.
    pub fn is_global(&self, module: &str, name: &str) -> bool {
        matches!(self, Value::Global { module: m, name: n } if m == module && n == name)
    }

    /// `module.name` if this is a global.
    pub fn global_name(&self) -> Option<String> {
        match self {
            Value::Global { module, name } => Some(format!("{module}.{name}")),
            _ => None,
        }
    }

    /// The integer value of `Int` or `Bool`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The text of a `Str`, or of `Bytes` that are valid UTF-8 (Python 2 `str` keys).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Elements of a tuple or list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The recorded call, if this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Items of a mapping: a plain dict, or an object (e.g. `collections.OrderedDict()`) that
    /// received `SETITEM(S)`. Returns `None` for anything else.
    pub fn as_mapping(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(items) => Some(items),
            Value::Object(o) => Some(&o.dict_items),
            _ => None,
        }
    }

    /// A short type name for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Global { .. } => "global",
            Value::Object(_) => "object",
            Value::PersistentId(_) => "persistent id",
        }
    }
}
