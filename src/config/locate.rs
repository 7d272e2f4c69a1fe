//! Key paths (`flows[0].source`) and finding the line they are on in the YAML text.
//!
//! serde gives no positions for values that parsed fine but fail a semantic check, so
//! this module reads the text itself. It understands block-style YAML (indented keys,
//! `- ` list items, compact lists whose dashes sit at their key's indentation). Where a
//! value is written inline (`{ ... }`, `[ ... ]`, anchors) it stops and reports the line
//! of the deepest key it did find, which is where that inline value starts. It never
//! guesses: if the first key is not found, there is no line.

use std::fmt;
use std::ops::Range;

/// One step of a key path: a mapping key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value sits in the configuration, printed like `flows[0].source`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyPath {
    segments: Vec<Segment>,
}

impl KeyPath {
    pub(crate) fn root() -> Self {
        Self::default()
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        self.with(Segment::Key(key.to_owned()))
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    fn with(&self, segment: Segment) -> Self {
        let mut segments = self.segments.clone();
        segments.push(segment);
        Self { segments }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A line that carries YAML structure (blank lines, comments and document markers are
/// dropped).
#[derive(Debug)]
struct Line<'a> {
    /// 1-based, as editors count.
    number: usize,
    /// Column of a leading `- ` list marker, if the line has one.
    dash: Option<usize>,
    /// Column where the content after any list marker starts.
    indent: usize,
    /// The content from `indent` on.
    text: &'a str,
}

impl Line<'_> {
    /// The column where this line's structure begins (its dash, or its content).
    fn start(&self) -> usize {
        self.dash.unwrap_or(self.indent)
    }
}

/// The YAML text cut into structural lines, ready to answer "which line is this path on".
#[derive(Debug)]
pub(crate) struct Locator<'a> {
    lines: Vec<Line<'a>>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let lines = text.lines().enumerate().filter_map(|(i, raw)| structural_line(i + 1, raw)).collect();
        Self { lines }
    }

    /// The line of `path`, or of its deepest ancestor found, or `None` when not even the
    /// first key is in the text (for example a key that took its default value).
    pub(crate) fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let mut scope = 0..self.lines.len();
        let mut found = None;
        for segment in &path.segments {
            if scope.is_empty() {
                break;
            }
            let hit = match segment {
                Segment::Key(key) => self.find_key(&scope, key),
                Segment::Index(index) => self.find_item(&scope, *index),
            };
            let Some((index, inner)) = hit else {
                break;
            };
            found = Some(self.lines[index].number);
            scope = inner;
        }
        found
    }

    /// Finds `key` among the mapping keys of `scope`; returns its line index and the
    /// lines of its block value (empty when the value is inline).
    fn find_key(&self, scope: &Range<usize>, key: &str) -> Option<(usize, Range<usize>)> {
        let key_indent = self.lines[scope.start].indent;
        let hit = scope.clone().find(|&j| {
            let line = &self.lines[j];
            // Only the first line of an item scope may carry the item's dash; a dash
            // anywhere else at this indentation starts a list nested under a sibling key.
            line.indent == key_indent
                && (j == scope.start || line.dash.is_none())
                && mapping_key(line.text).is_some_and(|(k, _)| k == key)
        });
        hit.map(|j| (j, self.block_value(scope, j)))
    }

    /// The lines of the block value of the key on line `j` (empty if written inline).
    fn block_value(&self, scope: &Range<usize>, j: usize) -> Range<usize> {
        let line = &self.lines[j];
        let inline = mapping_key(line.text).is_some_and(|(_, rest)| !rest.is_empty());
        if inline {
            return j..j;
        }
        let key_indent = line.indent;
        let end = (j + 1..scope.end)
            .find(|&m| {
                let next = &self.lines[m];
                // A compact list (`key:` then `- item` at the key's own column) belongs
                // to the key; anything else not indented deeper ends the value.
                !(next.start() > key_indent || next.dash == Some(key_indent))
            })
            .unwrap_or(scope.end);
        j + 1..end
    }

    /// Finds list item `index` in `scope`; returns the item's line index and the lines of
    /// its content.
    fn find_item(&self, scope: &Range<usize>, index: usize) -> Option<(usize, Range<usize>)> {
        let dash = self.lines[scope.start].dash?;
        let items: Vec<usize> = scope.clone().filter(|&j| self.lines[j].dash == Some(dash)).collect();
        let start = *items.get(index)?;
        let end = items.get(index + 1).copied().unwrap_or(scope.end);
        // An item written as a lone `-` has its content on the following lines.
        let content = if self.lines[start].text.is_empty() { start + 1..end } else { start..end };
        Some((start, content))
    }
}

/// Cuts one raw line into a [`Line`], or `None` if it carries no structure.
fn structural_line(number: usize, raw: &str) -> Option<Line<'_>> {
    if raw.starts_with("---") || raw.starts_with("...") {
        return None;
    }
    let content = raw.trim_start_matches(' ');
    if content.is_empty() || content.starts_with('#') {
        return None;
    }
    let lead = raw.len() - content.len();
    let after_dash = content.strip_prefix("- ").or_else(|| (content == "-").then_some(""));
    let line = match after_dash {
        Some(rest) => {
            let text = rest.trim_start_matches(' ');
            Line { number, dash: Some(lead), indent: lead + content.len() - text.len(), text }
        }
        None => Line { number, dash: None, indent: lead, text: content },
    };
    Some(line)
}

/// Splits `key: rest` into the key (plain or quoted) and what follows the colon, with a
/// trailing comment dropped. `None` if the line does not start with a mapping key.
fn mapping_key(text: &str) -> Option<(&str, &str)> {
    let (key, after) = match text.chars().next()? {
        quote @ ('"' | '\'') => {
            let close = text[1..].find(quote)? + 1;
            (&text[1..close], text[close + 1..].trim_start_matches(' '))
        }
        _ => {
            let colon = text.find(": ").or_else(|| text.ends_with(':').then(|| text.len() - 1))?;
            (text[..colon].trim_end(), &text[colon..])
        }
    };
    let rest = after.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = rest.trim();
    let rest = if rest.starts_with('#') { "" } else { rest };
    Some((key, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment
clusters:
  primary: { bootstrap_servers: [\"127.0.0.1:9092\"] }
  secondary:
    bootstrap_servers:
      - \"127.0.0.1:9192\"
      - bad

flows:
- source: primary
  target: secondary
  topics:
  - \".*\"
  - policy: not-a-key
- source: secondary   # second flow
  'target': primary
  policy: identity
-
  source: a
";

    fn path(parts: &[&str]) -> KeyPath {
        parts.iter().fold(KeyPath::root(), |p, part| match part.parse() {
            Ok(index) => p.index(index),
            Err(_) => p.key(part),
        })
    }

    #[test]
    fn displays_like_serde_yaml() {
        assert_eq!(path(&["flows", "0", "source"]).to_string(), "flows[0].source");
        assert_eq!(path(&["clusters", "a", "bootstrap_servers", "1"]).to_string(), "clusters.a.bootstrap_servers[1]");
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn finds_lines() {
        let cases: &[(&[&str], Option<usize>)] = &[
            (&["clusters"], Some(2)),
            (&["clusters", "primary"], Some(3)),
            // Inline value: the line where it starts.
            (&["clusters", "primary", "bootstrap_servers", "0"], Some(3)),
            (&["clusters", "secondary", "bootstrap_servers"], Some(5)),
            (&["clusters", "secondary", "bootstrap_servers", "1"], Some(7)),
            (&["flows"], Some(9)),
            (&["flows", "0"], Some(10)),
            (&["flows", "0", "source"], Some(10)),
            (&["flows", "0", "target"], Some(11)),
            (&["flows", "0", "topics", "1"], Some(14)),
            // `policy:` inside the topics list is not flows[0].policy: fall back to flows[0].
            (&["flows", "0", "policy"], Some(10)),
            (&["flows", "1", "source"], Some(15)),
            (&["flows", "1", "target"], Some(16)),
            (&["flows", "1", "policy"], Some(17)),
            (&["flows", "2"], Some(18)),
            (&["flows", "2", "source"], Some(19)),
            (&["flows", "3"], Some(9)),
            (&["nothing"], None),
            (&["source"], None),
        ];
        let locator = Locator::new(TEXT);
        for (parts, want) in cases {
            assert_eq!(locator.line_of(&path(parts)), *want, "{}", path(parts));
        }
    }

    #[test]
    fn flow_style_document_stops_at_the_first_line() {
        let locator = Locator::new("{clusters: {}, flows: []}\n");
        assert_eq!(locator.line_of(&path(&["flows", "0"])), None);
        let locator = Locator::new("flows: [{source: a}]\n");
        assert_eq!(locator.line_of(&path(&["flows", "0", "source"])), Some(1));
    }

    #[test]
    fn empty_text_has_no_lines() {
        assert_eq!(Locator::new("").line_of(&path(&["flows"])), None);
        assert_eq!(Locator::new("---\n# x\n").line_of(&path(&["flows"])), None);
    }

    #[test]
    fn reads_mapping_keys() {
        assert_eq!(mapping_key("a: b"), Some(("a", "b")));
        assert_eq!(mapping_key("a:"), Some(("a", "")));
        assert_eq!(mapping_key("a:   # c"), Some(("a", "")));
        assert_eq!(mapping_key("\"a b\": c"), Some(("a b", "c")));
        assert_eq!(mapping_key("'a':"), Some(("a", "")));
        assert_eq!(mapping_key("a:b"), None);
        assert_eq!(mapping_key("\"127.0.0.1:9092\""), None);
        assert_eq!(mapping_key("{a: b}"), Some(("{a", "b}")));
    }
}
