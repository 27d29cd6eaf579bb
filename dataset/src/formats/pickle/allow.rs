//! Allow-lists of pickle globals.
//!
//! A pattern is `module.name` (e.g. `collections.OrderedDict`) and may contain `*`, which
//! matches any run of characters except `.`: `torch.*Storage` admits `torch.FloatStorage` but
//! not `torch.nn.FooStorage`. Anything not matched is rejected before it reaches the value tree.

/// The set of `module.name` globals a pickle may reference.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    patterns: Vec<String>,
}

impl AllowList {
    /// An allow-list from patterns (see the module docs for the syntax).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        Self { patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect() }
    }

    /// An allow-list that admits no global at all (plain data pickles).
    pub fn none() -> Self {
        Self::default()
    }

    /// Returns a copy with more patterns added.
    pub fn with<S: AsRef<str>>(mut self, patterns: &[S]) -> Self {
        self.patterns.extend(patterns.iter().map(|p| p.as_ref().to_string()));
        self
    }

    /// True if `module.name` matches one of the patterns.
    pub fn allows(&self, module: &str, name: &str) -> bool {
        let full = format!("{module}.{name}");
        self.patterns.iter().any(|p| glob_match(p.as_bytes(), full.as_bytes()))
    }

    /// The patterns, comma separated, for error messages.
    pub fn describe(&self) -> String {
        if self.patterns.is_empty() {
            "none".to_string()
        } else {
            self.patterns.join(", ")
        }
    }
}

/// `*` matches any run of bytes other than `.`; everything else matches literally.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob_match(rest, &text[i..]) {
                    return true;
                }
                if i >= text.len() || text[i] == b'.' {
                    return false;
                }
                i += 1;
            }
        }
        Some((&c, rest)) => match text.split_first() {
            Some((&t, text_rest)) if t == c => glob_match(rest, text_rest),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let a = AllowList::new(&["collections.OrderedDict", "torch.*Storage"]);
        assert!(a.allows("collections", "OrderedDict"));
        assert!(a.allows("torch", "FloatStorage"));
        assert!(a.allows("torch", "BFloat16Storage"));
        assert!(!a.allows("torch.nn", "XStorage"));
        assert!(!a.allows("os", "system"));
        assert!(!a.allows("collections", "OrderedDictX"));
        assert!(!AllowList::none().allows("builtins", "eval"));
    }
}
