//! From a [`PipelineSpec`] to a validated [`Plan`]: every node's operator is built from its
//! parameters, inputs are resolved, cycles and dangling inputs rejected, and the Arrow schema
//! of every edge checked against what the consuming operator needs, before anything runs.

use crate::operators::{self, BuildContext, Operator, OperatorInfo, Role};
use crate::spec::{ConfigError, NodeSpec, PipelineSpec};
use arrow_schema::SchemaRef;
use std::collections::HashMap;
use std::sync::Arc;

/// One validated node.
pub struct PlannedNode {
    /// The node as written.
    pub spec: NodeSpec,
    /// Its operator's registry entry.
    pub info: &'static OperatorInfo,
    /// The configured operator.
    pub op: Arc<dyn Operator>,
    /// Indices of upstream nodes, in port order.
    pub inputs: Vec<usize>,
    /// Indices of downstream nodes.
    pub consumers: Vec<usize>,
    /// Schema of the rows it emits.
    pub schema: SchemaRef,
}

/// A validated pipeline, ready to run.
pub struct Plan {
    /// The pipeline file, parsed.
    pub spec: PipelineSpec,
    /// Nodes in file order.
    pub nodes: Vec<PlannedNode>,
    /// A topological order (node indices).
    pub order: Vec<usize>,
    /// Non-fatal findings (e.g. a node whose output nobody reads).
    pub warnings: Vec<String>,
}

/// Builds and validates the plan.
pub fn build(spec: PipelineSpec) -> Result<Plan, ConfigError> {
    let index: HashMap<&str, usize> = spec.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let fingerprint = fingerprint(&spec);
    let mut built = Vec::with_capacity(spec.nodes.len());
    for node in &spec.nodes {
        let info = operators::find(&node.op).ok_or_else(|| {
            let known: Vec<&str> = operators::registry().iter().map(|i| i.name).collect();
            node.error(Some("op"), format!("unknown operator `{}`; known operators: {}", node.op, known.join(", ")))
        })?;
        let field = if node.spec_uses_inputs() { "inputs" } else { "input" };
        match (info.role, node.inputs.is_empty()) {
            (Role::Source, false) => return Err(node.error(Some(field), format!("`{}` is a source and takes no input", info.name))),
            (Role::Transform | Role::Sink, true) => {
                return Err(node.error(None, format!("`{}` needs an input: add `input: <node id>`", info.name)))
            }
            _ => {}
        }
        let mut inputs = Vec::new();
        for up in &node.inputs {
            let &i =
                index.get(up.as_str()).ok_or_else(|| node.error(Some(field), format!("input `{up}` is not a node of this pipeline")))?;
            if up == &node.id {
                return Err(node.error(Some(field), "a node cannot read its own output"));
            }
            inputs.push(i);
        }
        let ctx = BuildContext {
            node: node.clone(),
            pipeline: spec.name.clone(),
            seed: spec.seed,
            pipeline_file: spec.file.clone(),
            fingerprint: fingerprint.clone(),
            consumers: spec.nodes.iter().filter(|n| n.inputs.contains(&node.id)).count(),
        };
        let op = (info.build)(&ctx)?;
        built.push((info, op, inputs));
    }
    let order = topo_order(&spec, &built.iter().map(|b| b.2.clone()).collect::<Vec<_>>())?;
    let mut consumers = vec![Vec::new(); built.len()];
    for (i, b) in built.iter().enumerate() {
        for &u in &b.2 {
            consumers[u].push(i);
        }
    }
    let mut schemas: Vec<Option<SchemaRef>> = vec![None; built.len()];
    for &i in &order {
        let node = &spec.nodes[i];
        let (_info, op, inputs) = &built[i];
        let in_schemas: Vec<SchemaRef> = inputs.iter().map(|&u| schemas[u].clone().expect("topological order")).collect();
        for req in op.required_columns() {
            let Some(schema) = in_schemas.get(req.port) else {
                return Err(node.error(Some("inputs"), format!("expects at least {} inputs", req.port + 1)));
            };
            let up = &spec.nodes[inputs[req.port]].id;
            match schema.field_with_name(&req.name) {
                Err(_) => {
                    let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    return Err(node.error(
                        Some(if node.inputs.len() > 1 { "inputs" } else { "input" }),
                        format!("needs column `{}` ({}) from input `{up}`, which produces only: {}", req.name, req.ty, have.join(", ")),
                    ));
                }
                Ok(f) if !req.ty.accepts(f.data_type()) => {
                    return Err(node.error(
                        Some(if node.inputs.len() > 1 { "inputs" } else { "input" }),
                        format!("column `{}` from input `{up}` has type {}, but {} needs {}", req.name, f.data_type(), node.op, req.ty),
                    ));
                }
                Ok(_) => {}
            }
        }
        let out = op.output_schema(&in_schemas).map_err(|m| node.error(None, m))?;
        schemas[i] = Some(out);
    }
    let mut warnings = Vec::new();
    for (i, (info, _, _)) in built.iter().enumerate() {
        if consumers[i].is_empty() && info.role != Role::Sink {
            warnings.push(format!(
                "{}: node `{}` ({}): its output is not read by any node",
                spec.file.display(),
                spec.nodes[i].id,
                info.name
            ));
        }
    }
    let nodes = built
        .into_iter()
        .zip(consumers)
        .zip(schemas)
        .enumerate()
        .map(|(i, (((info, op, inputs), consumers), schema))| PlannedNode {
            spec: spec.nodes[i].clone(),
            info,
            op,
            inputs,
            consumers,
            schema: schema.expect("every node planned"),
        })
        .collect();
    Ok(Plan { spec, nodes, order, warnings })
}

/// sha256 of what the pipeline computes: name, seed and every node (operator, inputs, error
/// policy, parameters after interpolation and overrides). Worker counts are not part of it.
pub fn fingerprint(spec: &PipelineSpec) -> String {
    use sha2::{Digest, Sha256};
    let nodes: Vec<serde_json::Value> = spec
        .nodes
        .iter()
        .map(|n| serde_json::json!({"id": n.id, "op": n.op, "inputs": n.inputs, "on_error": n.on_error, "params": n.params}))
        .collect();
    let text = serde_json::json!({"name": spec.name, "seed": spec.seed, "nodes": nodes}).to_string();
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl NodeSpec {
    fn spec_uses_inputs(&self) -> bool {
        self.inputs.len() > 1
    }
}

/// Kahn's algorithm in file order; on a cycle, names the nodes on it.
fn topo_order(spec: &PipelineSpec, inputs: &[Vec<usize>]) -> Result<Vec<usize>, ConfigError> {
    let n = inputs.len();
    let mut indeg: Vec<usize> = inputs.iter().map(|v| v.len()).collect();
    let mut out = Vec::with_capacity(n);
    let mut done = vec![false; n];
    while out.len() < n {
        let Some(i) = (0..n).find(|&i| !done[i] && indeg[i] == 0) else {
            // Every remaining node waits on another remaining node: follow inputs to a cycle.
            let start = (0..n).find(|&i| !done[i]).expect("some node remains");
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let next = *inputs[cur].iter().find(|&&u| !done[u]).expect("blocked node has a pending input");
                if let Some(pos) = path.iter().position(|&p| p == next) {
                    // `path` walks upstream; reversed it is the direction data would flow.
                    let cycle: Vec<&str> = path[pos..].iter().rev().map(|&k| spec.nodes[k].id.as_str()).collect();
                    let node = &spec.nodes[next];
                    return Err(node.error(Some("input"), format!("cycle: {} -> {}", cycle.join(" -> "), cycle[0])));
                }
                path.push(next);
                cur = next;
            }
        };
        done[i] = true;
        out.push(i);
        for (j, ins) in inputs.iter().enumerate() {
            indeg[j] -= ins.iter().filter(|&&u| u == i).count();
        }
    }
    Ok(out)
}
