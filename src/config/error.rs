//! Configuration errors, and the rewording of serde_norway's parse errors into the same
//! `file line N: key.path: what is wrong` shape as kferry's own checks.

use std::fmt;
use std::path::PathBuf;

use super::locate::{KeyPath, Locator};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The text is not YAML, or does not fit the schema (unknown key, wrong type, missing
    /// key). Parsing stops at the first such problem.
    #[error("{}", listing(.origin, std::slice::from_ref(.problem)))]
    Parse { origin: String, problem: Problem },
    /// The configuration parsed but makes no sense; every problem found is listed.
    #[error("{}", listing(.origin, .problems))]
    Invalid { origin: String, problems: Vec<Problem> },
}

/// One thing wrong in a configuration, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// Key path like `flows[0].source`; empty for the document itself.
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(line: Option<usize>, path: String, message: String) -> Self {
        Self { line, path, message }
    }
}

/// Problems printed one per line, each as `origin line N: path: message`, so that every
/// line stands alone (grep, editors' "go to line").
fn listing<'a>(origin: &'a str, problems: &'a [Problem]) -> Listing<'a> {
    Listing { origin, problems }
}

struct Listing<'a> {
    origin: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(self.origin)?;
            if let Some(line) = problem.line {
                write!(f, " line {line}")?;
            }
            f.write_str(": ")?;
            if !problem.path.is_empty() {
                write!(f, "{}: ", problem.path)?;
            }
            f.write_str(&problem.message)?;
        }
        Ok(())
    }
}

/// Message our own deserializers give for a key repeated in a mapping (serde's derive
/// only catches repeated struct fields; a repeated cluster name would silently win).
pub(crate) fn duplicate_key_message(key: &str) -> String {
    format!("duplicate key `{key}`")
}

/// How serde and serde_norway messages start. serde_norway prints `path: message`;
/// knowing where the message starts splits the two even when a key contains `: `.
const MESSAGE_STARTS: &[&str] = &[
    "unknown field `",
    "unknown variant `",
    "missing field `",
    "duplicate field `",
    "duplicate key `",
    "invalid type: ",
    "invalid value: ",
    "invalid length ",
];

/// Turns a serde_norway error into a [`Problem`] worded like kferry's own checks.
pub(crate) fn parse_problem(err: &serde_norway::Error, text: &str) -> Problem {
    let mut raw = err.to_string();
    let line = err.location().map(|location| {
        // The position goes in front (`line N`), so drop serde_norway's copy of it.
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        if let Some(at) = raw.find(&suffix) {
            raw.replace_range(at..at + suffix.len(), "");
        }
        location.line()
    });
    let (path, message) = split_path(&raw);
    let mut problem = Problem::new(line, path.to_owned(), reword(message));
    if path.is_empty() {
        // For a top-level key serde_norway points at the start of the document; find
        // the key's own line instead.
        if let Some(key) = unknown_field(message) {
            let own_line = Locator::new(text).line_of(&KeyPath::root().key(key));
            problem.line = own_line.or(problem.line);
        }
    }
    problem
}

/// Splits serde_norway's `path: message` (path absent for the document root).
fn split_path(raw: &str) -> (&str, &str) {
    let starts_at = |at: usize| MESSAGE_STARTS.iter().any(|m| raw[at..].starts_with(m));
    if starts_at(0) {
        return ("", raw);
    }
    raw.match_indices(": ")
        .map(|(at, _)| at)
        .find(|&at| starts_at(at + 2))
        .map_or(("", raw), |at| (&raw[..at], &raw[at + 2..]))
}

/// Rewords the serde messages an operator meets most, leaves others as they are.
fn reword(message: &str) -> String {
    if let Some(key) = unknown_field(message) {
        return format!("unknown key \"{key}\"; {}", allowed(message));
    }
    if let Some(value) = unknown_name(message, "unknown variant `") {
        return format!("unknown value \"{value}\"; {}", allowed(message));
    }
    if let Some(key) = between(message, "missing field `", "`") {
        return format!("missing key \"{key}\"");
    }
    if let Some(key) = between(message, "duplicate field `", "`") {
        return format!("key \"{key}\" is given twice");
    }
    if let Some(key) = between(message, "duplicate key `", "`") {
        return format!("key \"{key}\" is given twice");
    }
    // Rust type names mean nothing to an operator.
    match message.rfind(", expected struct ") {
        Some(at) => format!("{}, expected a mapping (key: value lines)", &message[..at]),
        None => message.to_owned(),
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    unknown_name(message, "unknown field `")
}

/// The name in serde's `` unknown field `x`, expected ... `` (or `there are no ...`).
fn unknown_name<'a>(message: &'a str, start: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(start)?;
    let end = rest.rfind("`, expected ").or_else(|| rest.rfind("`, there are no "))?;
    Some(&rest[..end])
}

/// The `x` in `<start>x<end>`, taking the last `end` so a name containing it survives.
fn between<'a>(message: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(start)?;
    rest.rfind(end).map(|at| &rest[..at])
}

/// serde lists what was expected as `` `a`, `b` `` after the name; say it plainly.
fn allowed(message: &str) -> String {
    let Some((_, expected)) = message.rsplit_once("`, expected ") else {
        return "nothing is allowed here".to_owned();
    };
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    format!("allowed: {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_path_from_message() {
        let cases = [
            ("flows[0]: missing field `x`", ("flows[0]", "missing field `x`")),
            ("missing field `x`", ("", "missing field `x`")),
            (
                "clusters.a: b: invalid type: map, expected a string",
                ("clusters.a: b", "invalid type: map, expected a string"),
            ),
            ("did not find expected key", ("", "did not find expected key")),
        ];
        for (raw, want) in cases {
            assert_eq!(split_path(raw), want, "{raw}");
        }
    }

    #[test]
    fn rewords_serde_messages() {
        let cases = [
            (
                "unknown field `polcy`, expected one of `source`, `target`, `policy`",
                "unknown key \"polcy\"; allowed: source, target, policy",
            ),
            ("unknown field `flow`, expected `clusters` or `flows`", "unknown key \"flow\"; allowed: clusters, flows"),
            ("unknown field `a`, there are no fields", "unknown key \"a\"; nothing is allowed here"),
            (
                "unknown variant `identiy`, expected `identity` or `prefix`",
                "unknown value \"identiy\"; allowed: identity, prefix",
            ),
            ("missing field `target`", "missing key \"target\""),
            ("duplicate field `source`", "key \"source\" is given twice"),
            ("duplicate key `primary`", "key \"primary\" is given twice"),
            (
                "invalid type: string \"x\", expected struct FlowConfig",
                "invalid type: string \"x\", expected a mapping (key: value lines)",
            ),
            ("invalid type: integer `3`, expected a sequence", "invalid type: integer `3`, expected a sequence"),
        ];
        for (message, want) in cases {
            assert_eq!(reword(message), want, "{message}");
        }
    }

    #[test]
    fn lists_problems_one_per_line() {
        let err = ConfigError::Invalid {
            origin: "config.yaml".to_owned(),
            problems: vec![
                Problem::new(Some(3), "flows[0]".to_owned(), "first".to_owned()),
                Problem::new(None, "flows".to_owned(), "second".to_owned()),
                Problem::new(Some(1), String::new(), "third".to_owned()),
            ],
        };
        assert_eq!(
            err.to_string(),
            "config.yaml line 3: flows[0]: first\nconfig.yaml: flows: second\nconfig.yaml line 1: third"
        );
    }
}
