//! The pipeline file: YAML text → [`PipelineSpec`], with `${ENV}` interpolation and `--set`
//! overrides applied, before any operator sees its parameters.
//!
//! Parsing is strict: unknown top-level fields, nodes without `op`, malformed inputs and bad
//! values are [`ConfigError`]s that name the file, the line/column, the node and the field.
//! Operator parameters stay untyped here (a JSON object per node, each value with its source
//! location); each operator deserialises its own typed parameters later through
//! [`NodeSpec::parse_params`], which keeps the error location.

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based position in the pipeline file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    /// Line, 1-based.
    pub line: u64,
    /// Column, 1-based.
    pub column: u64,
}

/// A configuration error: the pipeline file is invalid. Exit code 78 at the CLI.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The pipeline file.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub pos: Option<Pos>,
    /// The node id, when the error is inside a node.
    pub node: Option<String>,
    /// The field, when the error is about one field.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about the whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), pos: None, node: None, field: None, message: message.into() }
    }

    /// An error about one node (and optionally one of its fields).
    pub fn node(file: &Path, node: &str, field: Option<&str>, pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), pos, node: Some(node.to_string()), field: field.map(str::to_string), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        write!(f, ":")?;
        if let Some(n) = &self.node {
            write!(f, " node `{n}`")?;
            if self.field.is_some() {
                write!(f, ",")?;
            }
        }
        if let Some(fl) = &self.field {
            write!(f, " field `{fl}`")?;
        }
        if self.node.is_some() || self.field.is_some() {
            write!(f, ":")?;
        }
        write!(f, " {}", self.message)
    }
}

/// What an operator does when one row cannot be processed (e.g. a corrupt image).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail the run, naming the offending row (default).
    #[default]
    Fail,
    /// Drop the row, count it and report it.
    Skip,
}

/// One node of the pipeline as written in the file.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The node id (its key under `nodes:`).
    pub id: String,
    /// The operator name.
    pub op: String,
    /// Upstream node ids, in port order.
    pub inputs: Vec<String>,
    /// Error policy for rows.
    pub on_error: OnError,
    /// Operator parameters (everything but the engine fields).
    pub params: Map<String, Value>,
    /// Location of the node and of each field.
    pub pos: Option<Pos>,
    field_pos: IndexMap<String, Pos>,
    file: PathBuf,
}

impl NodeSpec {
    /// Location of one field of this node: a nested field (`model.checkpoint`) is located at
    /// its top-level field (`model`); falls back to the node itself.
    pub fn field_pos(&self, field: &str) -> Option<Pos> {
        let top = field.split(['.', '[']).next().unwrap_or(field);
        self.field_pos.get(field).or_else(|| self.field_pos.get(top)).copied().or(self.pos)
    }

    /// A [`ConfigError`] about this node.
    pub fn error(&self, field: Option<&str>, message: impl Into<String>) -> ConfigError {
        let pos = field.and_then(|f| self.field_pos(f)).or(self.pos);
        ConfigError::node(&self.file, &self.id, field, pos, message)
    }

    /// Deserialises the operator parameters into `T` (which should deny unknown fields);
    /// errors name the field and its line.
    pub fn parse_params<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let value = Value::Object(self.params.clone());
        serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde names unknown / missing fields only in the message; recover the field.
            let field = if path != "." && !path.is_empty() { Some(path) } else { backticked(&inner) };
            let top = field.as_deref().map(|f| f.split(['.', '[']).next().unwrap_or(f).to_string());
            let pos = top.as_deref().and_then(|f| self.field_pos.get(f).copied()).or(self.pos);
            ConfigError::node(&self.file, &self.id, field.as_deref(), pos, inner)
        })
    }
}

fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

/// A parsed, interpolated and overridden pipeline file.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    /// The file it came from.
    pub file: PathBuf,
    /// Pipeline name.
    pub name: String,
    /// Pipeline seed: every random draw derives from it.
    pub seed: u64,
    /// Worker threads per process.
    pub workers: usize,
    /// Optional free text.
    pub description: Option<String>,
    /// Nodes in file order.
    pub nodes: Vec<NodeSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    workers: Option<usize>,
    #[serde(default)]
    description: Option<String>,
    nodes: IndexMap<String, Spanned<IndexMap<String, Spanned<Value>>>>,
}

fn pos_of(loc: serde_saphyr::Location) -> Option<Pos> {
    let (line, column) = (loc.line(), loc.column());
    (line > 0).then_some(Pos { line, column })
}

/// One `--set path=value` override.
#[derive(Clone, Debug)]
pub struct Override {
    /// Dotted path: `seed`, `workers`, `name` or `nodes.<id>.<param>`.
    pub path: String,
    /// The value, parsed as a YAML scalar (so `3` is a number, `true` a bool).
    pub value: Value,
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, raw) = s.split_once('=').ok_or_else(|| format!("`--set {s}`: expected PATH=VALUE"))?;
        let value: Value = if raw.trim().is_empty() {
            Value::String(String::new())
        } else {
            serde_saphyr::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
        };
        Ok(Override { path: path.trim().to_string(), value })
    }
}

/// Reads and parses a pipeline file, applying `${ENV}` interpolation and overrides.
pub fn load(path: &Path, overrides: &[Override]) -> Result<PipelineSpec, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::file(path, format!("cannot read pipeline file: {e}")))?;
    parse(path, &text, overrides, &|k| std::env::var(k).ok())
}

/// Parses pipeline text (the file name is used in errors only).
pub fn parse(file: &Path, text: &str, overrides: &[Override], env: &dyn Fn(&str) -> Option<String>) -> Result<PipelineSpec, ConfigError> {
    let raw: RawPipeline = serde_saphyr::from_str(text).map_err(|e| {
        let pos = e.location().and_then(pos_of);
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid YAML");
        // The location is printed by us; drop the parser's own "error: line L column C:" prefix.
        let msg = match first.strip_prefix("error: ").and_then(|r| r.split_once(": ")) {
            Some((loc, rest)) if loc.starts_with("line ") => rest.to_string(),
            _ => first.to_string(),
        };
        ConfigError { file: file.to_path_buf(), pos, node: None, field: None, message: msg }
    })?;
    if raw.nodes.is_empty() {
        return Err(ConfigError::file(file, "`nodes` is empty: a pipeline needs at least one node"));
    }
    let mut spec = PipelineSpec {
        file: file.to_path_buf(),
        name: raw.name,
        seed: raw.seed.unwrap_or(0),
        workers: raw.workers.unwrap_or(1),
        description: raw.description,
        nodes: Vec::new(),
    };
    for (id, node) in raw.nodes {
        let node_pos = pos_of(node.referenced);
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(ConfigError::node(file, &id, None, node_pos, "node ids may contain only letters, digits, `_` and `-`"));
        }
        let mut field_pos = IndexMap::new();
        let mut fields = Map::new();
        for (k, v) in node.value {
            if let Some(p) = pos_of(v.referenced) {
                field_pos.insert(k.clone(), p);
            }
            fields.insert(k, v.value);
        }
        spec.nodes.push(NodeSpec {
            id,
            op: String::new(),
            inputs: Vec::new(),
            on_error: OnError::Fail,
            params: fields,
            pos: node_pos,
            field_pos,
            file: file.to_path_buf(),
        });
    }
    for o in overrides {
        apply_override(&mut spec, o)?;
    }
    for node in &mut spec.nodes {
        let mut params = std::mem::take(&mut node.params);
        for (k, v) in params.iter_mut() {
            interpolate(v, env).map_err(|m| node.error(Some(k), m))?;
        }
        node.params = params;
        finish_node(node)?;
    }
    if spec.workers == 0 {
        return Err(ConfigError::file(file, "`workers` must be at least 1"));
    }
    Ok(spec)
}

fn apply_override(spec: &mut PipelineSpec, o: &Override) -> Result<(), ConfigError> {
    let bad = |m: String| ConfigError::file(&spec.file, format!("--set {}: {m}", o.path));
    let parts: Vec<&str> = o.path.split('.').collect();
    match parts.as_slice() {
        ["seed"] => spec.seed = o.value.as_u64().ok_or_else(|| bad("expected a non-negative integer".into()))?,
        ["workers"] => spec.workers = o.value.as_u64().ok_or_else(|| bad("expected a positive integer".into()))? as usize,
        ["name"] => spec.name = o.value.as_str().map(str::to_string).unwrap_or_else(|| o.value.to_string()),
        ["nodes", id, rest @ ..] if !rest.is_empty() => {
            let node = spec.nodes.iter_mut().find(|n| n.id == *id).ok_or_else(|| bad(format!("no node `{id}` in the pipeline")))?;
            let mut slot = node.params.entry(rest[0].to_string()).or_insert(Value::Null);
            for key in &rest[1..] {
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                slot = slot.as_object_mut().expect("just made an object").entry(key.to_string()).or_insert(Value::Null);
            }
            *slot = o.value.clone();
        }
        _ => return Err(bad("expected `seed`, `workers`, `name` or `nodes.<id>.<param>`".into())),
    }
    Ok(())
}

fn finish_node(node: &mut NodeSpec) -> Result<(), ConfigError> {
    let op = node.params.remove("op").ok_or_else(|| node.error(None, "missing field `op` (the operator to run; see `idflow ops`)"))?;
    node.op = op.as_str().ok_or_else(|| node.error(Some("op"), "expected a string (an operator name)"))?.to_string();
    let input = node.params.remove("input");
    let inputs = node.params.remove("inputs");
    node.inputs = match (input, inputs) {
        (Some(_), Some(_)) => return Err(node.error(Some("inputs"), "give either `input` or `inputs`, not both")),
        (Some(Value::String(s)), None) => vec![s],
        (Some(_), None) => return Err(node.error(Some("input"), "expected a node id (a string)")),
        (None, Some(Value::Array(items))) => {
            let mut v = Vec::new();
            for it in items {
                v.push(it.as_str().ok_or_else(|| node.error(Some("inputs"), "expected a list of node ids"))?.to_string());
            }
            v
        }
        (None, Some(_)) => return Err(node.error(Some("inputs"), "expected a list of node ids")),
        (None, None) => vec![],
    };
    if let Some(v) = node.params.remove("on_error") {
        node.on_error = serde_json::from_value(v).map_err(|_| node.error(Some("on_error"), "expected `fail` or `skip`"))?;
    }
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string of `v`; `$$` is a literal `$`.
fn interpolate(v: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    match v {
        Value::String(s) if s.contains('$') => {
            *s = interpolate_str(s, env)?;
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|x| interpolate(x, env)),
        Value::Object(m) => m.values_mut().try_for_each(|x| interpolate(x, env)),
        _ => Ok(()),
    }
}

fn interpolate_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
            let expr = &r[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad variable name `{name}` in {s:?}"));
            }
            match (env(name), default) {
                (Some(val), _) => out.push_str(&val),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable `{name}` is not set (use `${{{name}:-default}}` for a default)")),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "ROOT").then(|| "/data".to_string())
    }

    #[test]
    fn interpolation_and_escapes() {
        assert_eq!(interpolate_str("${ROOT}/x", &env).unwrap(), "/data/x");
        assert_eq!(interpolate_str("${NOPE:-d}/x", &env).unwrap(), "d/x");
        assert_eq!(interpolate_str("cost $$5", &env).unwrap(), "cost $5");
        assert!(interpolate_str("${NOPE}", &env).unwrap_err().contains("NOPE"));
    }

    #[test]
    fn overrides_reach_nested_params() {
        let text = "name: t\nnodes:\n  a:\n    op: read\n    root: x\n";
        let o: Override = "nodes.a.limit=3".parse().unwrap();
        let spec = parse(Path::new("p.yaml"), text, &[o], &env).unwrap();
        assert_eq!(spec.nodes[0].params["limit"], Value::from(3u64));
        assert_eq!(spec.nodes[0].op, "read");
        assert_eq!(spec.nodes[0].field_pos("root").unwrap().line, 5);
    }
}
