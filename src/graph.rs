//! Renders a plan as a graph: Graphviz DOT or Mermaid.

use crate::plan::Plan;

/// Graph output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The plan as text in `format`; edges are labelled with the number of columns they carry.
pub fn render(plan: &Plan, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str(&format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n", escape(&plan.spec.name)));
            for n in &plan.nodes {
                out.push_str(&format!("  \"{}\" [label=\"{}\\n{}\"];\n", escape(&n.spec.id), escape(&n.spec.id), n.info.name));
            }
            for n in &plan.nodes {
                for &u in &n.inputs {
                    let up = &plan.nodes[u];
                    let cols: Vec<&str> = up.schema.fields().iter().map(|f| f.name().as_str()).collect();
                    out.push_str(&format!(
                        "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
                        escape(&up.spec.id),
                        escape(&n.spec.id),
                        escape(&cols.join(", "))
                    ));
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            let key = |i: usize| format!("n{i}");
            for (i, n) in plan.nodes.iter().enumerate() {
                out.push_str(&format!("  {}[\"{}<br/><i>{}</i>\"]\n", key(i), n.spec.id.replace('"', "'"), n.info.name));
            }
            for (i, n) in plan.nodes.iter().enumerate() {
                for &u in &n.inputs {
                    out.push_str(&format!("  {} --> {}\n", key(u), key(i)));
                }
            }
        }
    }
    out
}
