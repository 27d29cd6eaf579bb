//! The parameter tables of the operators (`operators/params/*.md`): one Markdown table row per
//! YAML field, `| name | type | default | description |`, with `\\|` for a literal bar. Kept as
//! text beside the code so `idflow ops` and the documentation read the same rows; a row
//! `| *inference* | … |` stands for the shared model block ([`super::model_ref::INFERENCE_PARAMS`]).

/// Documentation of one parameter, for `idflow ops`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamDoc {
    /// Name as written in YAML.
    pub name: String,
    /// Type, in words.
    pub ty: String,
    /// Default, or `required`.
    pub default: String,
    /// One line.
    pub doc: String,
}

/// The cells of a table row (`| a | b \\| c |` → `["a", "b | c"]`); `None` for other lines.
fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().expect("one cell").push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().expect("one cell").push(c),
        }
    }
    Some(out.into_iter().map(|c| c.trim().to_string()).collect())
}

/// The rows of a parameter table (header and separator skipped), `*inference*` expanded.
pub fn parse(table: &str) -> Vec<ParamDoc> {
    let mut rows = Vec::new();
    for line in table.lines() {
        let Some(c) = cells(line) else { continue };
        if c.len() != 4 || c == ["name", "type", "default", "description"] || c[0].starts_with("---") {
            continue;
        }
        if c[0] == "*inference*" {
            rows.extend(parse(super::model_ref::INFERENCE_PARAMS));
            continue;
        }
        let [name, ty, default, doc] = <[String; 4]>::try_from(c).expect("four cells");
        rows.push(ParamDoc { name, ty, default, doc });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_with_escaped_bars_and_the_inference_block() {
        let table = "# t\n\n| name | type | default | description |\n|---|---|---|---|\n| name | string | n | a parameter called name |\n| a | x \\| y | 1 | first |\n| *inference* | | | shared |\n";
        let rows = parse(table);
        assert_eq!(rows[0].name, "name", "a parameter called `name` is not the header");
        assert_eq!(rows[1], ParamDoc { name: "a".into(), ty: "x | y".into(), default: "1".into(), doc: "first".into() });
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["name", "a", "backend", "threads", "providers"]);
    }

    /// Every operator documents at least one parameter, each name once, every cell filled.
    #[test]
    fn every_operator_table_is_complete() {
        for info in crate::operators::registry() {
            let rows = info.param_docs();
            assert!(!rows.is_empty(), "{}: no parameters documented", info.name);
            let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(names.len(), before, "{}: a parameter is documented twice", info.name);
            for r in &rows {
                assert!(
                    !r.ty.is_empty() && !r.default.is_empty() && !r.doc.is_empty(),
                    "{}: row `{}` has an empty cell",
                    info.name,
                    r.name
                );
            }
        }
    }
}
