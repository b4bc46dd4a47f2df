//! EventBridge event patterns: parsed and checked once ([`Pattern::parse`]), matched against
//! flattened events ([`Pattern::matches`]), and indexed by their exact values when many rules
//! share a bus ([`RuleSet`]).
//!
//! A pattern is compiled into branches (`$or` is expanded into the branches it stands for), each
//! a conjunction of conditions on leaf paths; a condition holds when one of its matchers matches
//! one of the event's values at that path. Conditions on fields inside the same array of
//! objects must be met by the same element (EventBridge's array consistency).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

/// The most branches one pattern's `$or`s may expand into.
pub const MAX_BRANCHES: usize = 1_000;

/// Why a pattern was refused: EventBridge's `InvalidEventPatternException` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Event pattern is not valid. Reason: {0}")]
pub struct InvalidPattern(pub String);

fn invalid(reason: impl Into<String>) -> InvalidPattern {
    InvalidPattern(reason.into())
}

/// A scalar of an event (the leaves a pattern can name).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
}

impl Scalar {
    fn of(v: &Value) -> Option<Scalar> {
        Some(match v {
            Value::String(s) => Scalar::Str(s.clone()),
            Value::Number(n) => Scalar::Num(n.as_f64()?),
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Null => Scalar::Null,
            _ => return None,
        })
    }

    fn key(&self) -> Key<'_> {
        match self {
            Scalar::Str(s) => Key::Str(s),
            // -0.0 and 0.0 are the same number.
            Scalar::Num(n) => Key::Num(if *n == 0.0 { 0 } else { n.to_bits() }),
            Scalar::Bool(b) => Key::Bool(*b),
            Scalar::Null => Key::Null,
        }
    }
}

/// A scalar as a hash key (numbers by their bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'a> {
    Str(&'a str),
    Num(u64),
    Bool(bool),
    Null,
}

/// One way a value may match.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(Scalar),
    Prefix(String, bool),
    Suffix(String, bool),
    EqualsIgnoreCase(String),
    Wildcard(Glob),
    Numeric(Vec<(Cmp, f64)>),
    Cidr(IpNet),
    Exists(bool),
    AnythingBut(Not),
}

/// What `anything-but` excludes.
#[derive(Debug, Clone, PartialEq)]
enum Not {
    Values(Vec<Scalar>),
    Prefix(String),
    Suffix(String),
    IgnoreCase(Vec<String>),
    Wildcard(Glob),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

/// A wildcard: literal pieces between `*`s (`\*` is a literal star).
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    pieces: Vec<String>,
}

impl Glob {
    /// Parse a wildcard (`**` is refused).
    pub fn parse(s: &str) -> Result<Glob, InvalidPattern> {
        let mut pieces = vec![String::new()];
        let mut chars = s.chars().enumerate().peekable();
        let mut last_star = false;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('*' | '\\'))) => {
                        last_star = false;
                        if let Some(p) = pieces.last_mut() {
                            p.push(e);
                        }
                    }
                    _ => return Err(invalid(format!("Invalid escape character at pos {i}"))),
                },
                '*' => {
                    if last_star {
                        return Err(invalid(format!(
                            "Consecutive wildcard characters at pos {i}"
                        )));
                    }
                    last_star = true;
                    pieces.push(String::new());
                }
                c => {
                    last_star = false;
                    if let Some(p) = pieces.last_mut() {
                        p.push(c);
                    }
                }
            }
        }
        Ok(Glob { pieces })
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let n = self.pieces.len();
        let (first, last) = (&self.pieces[0], &self.pieces[n - 1]);
        if n == 1 {
            return s == first;
        }
        if !s.starts_with(first.as_str()) || s.len() < first.len() + last.len() {
            return false;
        }
        if !s.ends_with(last.as_str()) {
            return false;
        }
        // The middle pieces, leftmost first, between the fixed ends.
        let mut rest = &s[first.len()..s.len() - last.len()];
        for piece in &self.pieces[1..n - 1] {
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

impl Matcher {
    fn matches(&self, v: &Scalar) -> bool {
        match (self, v) {
            (Matcher::Exact(Scalar::Num(a)), Scalar::Num(b)) => a == b,
            (Matcher::Exact(a), b) => a == b,
            (Matcher::Prefix(p, false), Scalar::Str(s)) => s.starts_with(p.as_str()),
            (Matcher::Prefix(p, true), Scalar::Str(s)) => s.to_lowercase().starts_with(p.as_str()),
            (Matcher::Suffix(p, false), Scalar::Str(s)) => s.ends_with(p.as_str()),
            (Matcher::Suffix(p, true), Scalar::Str(s)) => s.to_lowercase().ends_with(p.as_str()),
            (Matcher::EqualsIgnoreCase(p), Scalar::Str(s)) => s.to_lowercase() == *p,
            (Matcher::Wildcard(g), Scalar::Str(s)) => g.matches(s),
            (Matcher::Numeric(bounds), Scalar::Num(n)) => bounds.iter().all(|(op, b)| match op {
                Cmp::Lt => n < b,
                Cmp::Le => n <= b,
                Cmp::Eq => n == b,
                Cmp::Ge => n >= b,
                Cmp::Gt => n > b,
            }),
            (Matcher::Cidr(net), Scalar::Str(s)) => {
                s.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip))
            }
            (Matcher::Exists(true), _) => true,
            (Matcher::AnythingBut(not), v) => match (not, v) {
                (Not::Values(vs), v) => !vs.contains(v),
                (Not::Prefix(p), Scalar::Str(s)) => !s.starts_with(p.as_str()),
                (Not::Suffix(p), Scalar::Str(s)) => !s.ends_with(p.as_str()),
                (Not::IgnoreCase(vs), Scalar::Str(s)) => {
                    let s = s.to_lowercase();
                    !vs.contains(&s)
                }
                (Not::Wildcard(g), Scalar::Str(s)) => !g.matches(s),
                // A prefix, suffix or wildcard exclusion passes values that are not strings.
                (_, _) => true,
            },
            _ => false,
        }
    }
}

/// A condition: a leaf path and the matchers of which one must match.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    path: String,
    matchers: Vec<Matcher>,
}

impl Condition {
    /// `exists: false` (alone): holds when the event has no value at the path.
    fn is_absence(&self) -> bool {
        self.matchers.iter().all(|m| *m == Matcher::Exists(false))
    }
}

/// A conjunction of conditions (one branch of the pattern's `$or`s).
#[derive(Debug, Clone, PartialEq)]
struct Branch {
    conditions: Vec<Condition>,
}

/// A checked, compiled event pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    branches: Vec<Branch>,
}

/// A leaf value of a flattened event, with the array elements it sits in.
#[derive(Debug, Clone)]
pub struct Field {
    path: String,
    value: Scalar,
    /// (array number, index) for each array on the way down.
    trail: Vec<(u32, u32)>,
}

/// An event flattened into its leaf values, sorted by path.
#[derive(Debug, Clone, Default)]
pub struct Flat {
    fields: Vec<Field>,
}

impl Flat {
    /// Flatten a JSON event (an object; anything else has no fields).
    pub fn new(event: &Value) -> Flat {
        Flat::keeping(event, None)
    }

    /// Flatten, keeping only the leaves at `paths` (when given): a rule set needs no others.
    fn keeping(event: &Value, paths: Option<&HashMap<String, usize>>) -> Flat {
        let mut flat = Flat::default();
        let mut arrays = 0u32;
        let mut trail = Vec::new();
        if let Value::Object(m) = event {
            flat.object(m, "", &mut trail, &mut arrays, paths);
        }
        // Stable: the values of one path keep their order.
        flat.fields.sort_by(|a, b| a.path.cmp(&b.path));
        flat
    }

    fn object(
        &mut self,
        m: &Map<String, Value>,
        prefix: &str,
        trail: &mut Vec<(u32, u32)>,
        arrays: &mut u32,
        paths: Option<&HashMap<String, usize>>,
    ) {
        for (k, v) in m {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            self.value(v, &path, trail, arrays, paths);
        }
    }

    fn value(
        &mut self,
        v: &Value,
        path: &str,
        trail: &mut Vec<(u32, u32)>,
        arrays: &mut u32,
        paths: Option<&HashMap<String, usize>>,
    ) {
        match v {
            Value::Object(m) => self.object(m, path, trail, arrays, paths),
            Value::Array(items) => {
                let id = *arrays;
                *arrays += 1;
                for (i, item) in items.iter().enumerate() {
                    trail.push((id, u32::try_from(i).unwrap_or(u32::MAX)));
                    self.value(item, path, trail, arrays, paths);
                    trail.pop();
                }
            }
            leaf => {
                if paths.is_some_and(|p| !p.contains_key(path)) {
                    return;
                }
                if let Some(value) = Scalar::of(leaf) {
                    self.fields.push(Field {
                        path: path.to_string(),
                        value,
                        trail: trail.clone(),
                    });
                }
            }
        }
    }

    fn at(&self, path: &str) -> &[Field] {
        let start = self.fields.partition_point(|f| f.path.as_str() < path);
        let len = self.fields[start..].partition_point(|f| f.path == path);
        &self.fields[start..start + len]
    }
}

/// Two fields can be met together: wherever they share an array, the same element.
fn consistent(a: &[(u32, u32)], b: &[(u32, u32)]) -> bool {
    a.iter()
        .all(|(arr, i)| b.iter().all(|(arr2, j)| arr != arr2 || i == j))
}

impl Branch {
    fn matches(&self, flat: &Flat) -> bool {
        self.matches_with(|i| flat.at(&self.conditions[i].path))
    }

    /// Whether the branch holds, given the event's fields at each condition's path.
    fn matches_with<'f>(&self, at: impl Fn(usize) -> &'f [Field]) -> bool {
        // First, cheaply: every condition has a matching value (and no value, for an
        // absence); most events fail here.
        let mut arrays = false;
        for (i, c) in self.conditions.iter().enumerate() {
            let fields = at(i);
            if c.is_absence() {
                if !fields.is_empty() {
                    return false;
                }
                continue;
            }
            let mut any = false;
            for f in fields
                .iter()
                .filter(|f| c.matchers.iter().any(|m| m.matches(&f.value)))
            {
                any = true;
                arrays |= !f.trail.is_empty();
            }
            if !any {
                return false;
            }
        }
        if !arrays {
            return true;
        }
        // Values inside arrays: one per condition, all from consistent elements.
        let candidates: Vec<Vec<&Field>> = self
            .conditions
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_absence())
            .map(|(i, c)| {
                at(i)
                    .iter()
                    .filter(|f| c.matchers.iter().any(|m| m.matches(&f.value)))
                    .collect()
            })
            .collect();
        let mut chosen: Vec<&Field> = Vec::with_capacity(candidates.len());
        choose(&candidates, &mut chosen)
    }
}

/// Whether one field per condition can be picked with all the picks consistent.
fn choose<'a>(candidates: &[Vec<&'a Field>], chosen: &mut Vec<&'a Field>) -> bool {
    let Some((first, rest)) = candidates.split_first() else {
        return true;
    };
    for f in first {
        if f.trail.is_empty() || chosen.iter().all(|c| consistent(&c.trail, &f.trail)) {
            chosen.push(f);
            if choose(rest, chosen) {
                return true;
            }
            chosen.pop();
        }
    }
    false
}

impl Pattern {
    /// Parse and check a pattern's text.
    pub fn parse(text: &str) -> Result<Pattern, InvalidPattern> {
        let v: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        Pattern::from_value(&v)
    }

    /// Check and compile a pattern.
    pub fn from_value(v: &Value) -> Result<Pattern, InvalidPattern> {
        let Value::Object(m) = v else {
            return Err(invalid("Filter is not an object"));
        };
        if m.is_empty() {
            return Err(invalid(
                "Empty event pattern: it must name at least one field",
            ));
        }
        let branches = object(m, "")?
            .into_iter()
            .map(|conditions| Branch { conditions })
            .collect();
        Ok(Pattern { branches })
    }

    /// Whether `event` matches.
    pub fn matches(&self, event: &Value) -> bool {
        self.matches_flat(&Flat::new(event))
    }

    /// Whether a flattened event matches.
    pub fn matches_flat(&self, flat: &Flat) -> bool {
        self.branches.iter().any(|b| b.matches(flat))
    }
}

/// The conjunctions an object of the pattern stands for (more than one when it has `$or`s).
fn object(m: &Map<String, Value>, prefix: &str) -> Result<Vec<Vec<Condition>>, InvalidPattern> {
    let mut out: Vec<Vec<Condition>> = vec![Vec::new()];
    for (k, v) in m {
        let alternatives: Vec<Vec<Condition>> = if k == "$or" {
            let Value::Array(items) = v else {
                return Err(invalid("Value of $or must be an array"));
            };
            if items.len() < 2 {
                return Err(invalid("$or must have at least two patterns"));
            }
            let mut alts = Vec::new();
            for item in items {
                let Value::Object(o) = item else {
                    return Err(invalid("Each pattern of $or must be an object"));
                };
                if o.is_empty() {
                    return Err(invalid("A pattern of $or must name at least one field"));
                }
                alts.extend(object(o, prefix)?);
            }
            alts
        } else {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Object(o) if o.is_empty() => {
                    return Err(invalid(format!("\"{path}\" is an empty object")))
                }
                Value::Object(o) => object(o, &path)?,
                Value::Array(items) => vec![vec![Condition {
                    matchers: matchers(items, &path)?,
                    path,
                }]],
                _ => return Err(invalid(format!("\"{path}\" must be an object or an array"))),
            }
        };
        let mut next = Vec::with_capacity(out.len() * alternatives.len());
        for base in &out {
            for alt in &alternatives {
                let mut b = base.clone();
                b.extend(alt.iter().cloned());
                next.push(b);
            }
        }
        if next.len() > MAX_BRANCHES {
            return Err(invalid(format!(
                "The pattern's $or combinations exceed {MAX_BRANCHES} (rule is too complex)"
            )));
        }
        out = next;
    }
    Ok(out)
}

fn matchers(items: &[Value], path: &str) -> Result<Vec<Matcher>, InvalidPattern> {
    if items.is_empty() {
        return Err(invalid(format!(
            "Empty arrays are not allowed (at \"{path}\")"
        )));
    }
    items.iter().map(|v| matcher(v, path)).collect()
}

fn string<'a>(v: &'a Value, what: &str) -> Result<&'a str, InvalidPattern> {
    v.as_str()
        .ok_or_else(|| invalid(format!("{what} match pattern must be a string")))
}

/// A string, or `{"equals-ignore-case": string}` for prefix and suffix.
fn affix(v: &Value, what: &str) -> Result<(String, bool), InvalidPattern> {
    match v {
        Value::String(s) => Ok((s.clone(), false)),
        Value::Object(o) if o.len() == 1 && o.contains_key("equals-ignore-case") => {
            let s = string(&o["equals-ignore-case"], "equals-ignore-case")?;
            Ok((s.to_lowercase(), true))
        }
        _ => Err(invalid(format!("{what} match pattern must be a string"))),
    }
}

fn matcher(v: &Value, path: &str) -> Result<Matcher, InvalidPattern> {
    let o = match v {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(invalid(format!(
                "Nested arrays are not allowed (at \"{path}\")"
            )))
        }
        scalar => {
            return Scalar::of(scalar)
                .map(Matcher::Exact)
                .ok_or_else(|| invalid(format!("Unsupported value at \"{path}\"")))
        }
    };
    if o.len() != 1 {
        return Err(invalid(format!(
            "A match expression at \"{path}\" must have exactly one operator, it has {}",
            o.len()
        )));
    }
    let Some((op, arg)) = o.iter().next() else {
        return Err(invalid(format!("Empty match expression at \"{path}\"")));
    };
    Ok(match op.as_str() {
        "prefix" => {
            let (s, ci) = affix(arg, "prefix")?;
            Matcher::Prefix(s, ci)
        }
        "suffix" => {
            let (s, ci) = affix(arg, "suffix")?;
            Matcher::Suffix(s, ci)
        }
        "equals-ignore-case" => {
            Matcher::EqualsIgnoreCase(string(arg, "equals-ignore-case")?.to_lowercase())
        }
        "wildcard" => Matcher::Wildcard(Glob::parse(string(arg, "wildcard")?)?),
        "exists" => match arg {
            Value::Bool(b) => Matcher::Exists(*b),
            _ => {
                return Err(invalid(
                    "exists match pattern must be either true or false.",
                ))
            }
        },
        "cidr" => {
            let s = string(arg, "cidr")?;
            let net: IpNet = s
                .parse()
                .map_err(|_| invalid(format!("Nonstandard IP address: {s}")))?;
            Matcher::Cidr(net.trunc())
        }
        "numeric" => Matcher::Numeric(numeric(arg)?),
        "anything-but" => Matcher::AnythingBut(anything_but(arg)?),
        other => return Err(invalid(format!("Unrecognized match type {other}"))),
    })
}

fn numeric(arg: &Value) -> Result<Vec<(Cmp, f64)>, InvalidPattern> {
    let Value::Array(items) = arg else {
        return Err(invalid("Value of numeric must be an array."));
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(invalid(
            "numeric takes one or two pairs of an operator and a number",
        ));
    }
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let op = match pair[0].as_str() {
            Some("<") => Cmp::Lt,
            Some("<=") => Cmp::Le,
            Some("=") => Cmp::Eq,
            Some(">=") => Cmp::Ge,
            Some(">") => Cmp::Gt,
            Some(other) => {
                return Err(invalid(format!(
                    "Unrecognized numeric range operator: {other}"
                )))
            }
            None => return Err(invalid("A numeric range operator must be a string")),
        };
        let n = pair[1].as_f64().ok_or_else(|| {
            invalid(format!(
                "Value of {} must be numeric",
                pair[0].as_str().unwrap_or("")
            ))
        })?;
        out.push((op, n));
    }
    if let [(a, lo), (b, hi)] = out.as_slice() {
        let lower = matches!(a, Cmp::Gt | Cmp::Ge);
        let upper = matches!(b, Cmp::Lt | Cmp::Le);
        if !lower || !upper {
            return Err(invalid(
                "A numeric range is a lower bound (> or >=) followed by an upper bound (< or <=)",
            ));
        }
        if lo >= hi {
            return Err(invalid("Bottom must be less than top"));
        }
    } else if out.len() == 2 {
        return Err(invalid("numeric takes one or two pairs"));
    }
    Ok(out)
}

fn anything_but(arg: &Value) -> Result<Not, InvalidPattern> {
    Ok(match arg {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid("Empty arrays are not allowed in anything-but"));
            }
            let mut values = Vec::new();
            for v in items {
                match v {
                    Value::String(_) | Value::Number(_) => {
                        values.extend(Scalar::of(v));
                    }
                    _ => {
                        return Err(invalid(
                            "Inside anything-but list, start|null|boolean is not supported.",
                        ))
                    }
                }
            }
            Not::Values(values)
        }
        Value::String(_) | Value::Number(_) => Not::Values(Scalar::of(arg).into_iter().collect()),
        Value::Object(o) if o.len() == 1 => {
            let Some((op, v)) = o.iter().next() else {
                return Err(invalid("Empty anything-but expression"));
            };
            match op.as_str() {
                "prefix" => Not::Prefix(string(v, "prefix")?.to_string()),
                "suffix" => Not::Suffix(string(v, "suffix")?.to_string()),
                "wildcard" => Not::Wildcard(Glob::parse(string(v, "wildcard")?)?),
                "equals-ignore-case" => Not::IgnoreCase(match v {
                    Value::String(s) => vec![s.to_lowercase()],
                    Value::Array(items) if !items.is_empty() => items
                        .iter()
                        .map(|i| string(i, "equals-ignore-case").map(str::to_lowercase))
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(invalid(
                            "equals-ignore-case inside anything-but takes a string or a list of strings",
                        ))
                    }
                }),
                other => {
                    return Err(invalid(format!(
                        "Unsupported anything-but pattern: {other}"
                    )))
                }
            }
        }
        _ => {
            return Err(invalid(
                "Value of anything-but must be an array or single string/number value.",
            ))
        }
    })
}

/// Many patterns under keys, matched together: each branch is indexed by the exact values of
/// one of its conditions, so an event is only tested against the branches its own values
/// name (plus those with no exact condition).
#[derive(Debug, Clone)]
pub struct RuleSet<K> {
    rules: Vec<(K, Pattern)>,
    /// hash(path, value) → (rule, branch); a collision only costs a test.
    by_value: HashMap<u64, Vec<(usize, usize)>>,
    scan: Vec<(usize, usize)>,
    hasher: std::collections::hash_map::RandomState,
    /// Every path a condition names, numbered.
    paths: HashMap<String, usize>,
    /// The path number of each condition, by rule and branch.
    path_ids: Vec<Vec<Vec<usize>>>,
}

impl<K> Default for RuleSet<K> {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            by_value: HashMap::new(),
            scan: Vec::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            paths: HashMap::new(),
            path_ids: Vec::new(),
        }
    }
}

impl<K: Clone> RuleSet<K> {
    /// An index over `rules`.
    pub fn new(rules: impl IntoIterator<Item = (K, Pattern)>) -> Self {
        let mut set = RuleSet::default();
        for (k, p) in rules {
            set.add(k, p);
        }
        set
    }

    fn hash(&self, path: &str, key: Key<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        path.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    fn add(&mut self, key: K, pattern: Pattern) {
        let r = self.rules.len();
        let ids = pattern
            .branches
            .iter()
            .map(|b| {
                b.conditions
                    .iter()
                    .map(|c| {
                        let n = self.paths.len();
                        *self.paths.entry(c.path.clone()).or_insert(n)
                    })
                    .collect()
            })
            .collect();
        self.path_ids.push(ids);
        for (b, branch) in pattern.branches.iter().enumerate() {
            // The condition with the fewest values, all of them exact, is the anchor.
            let anchor = branch
                .conditions
                .iter()
                .filter(|c| c.matchers.iter().all(|m| matches!(m, Matcher::Exact(_))))
                .min_by_key(|c| c.matchers.len());
            match anchor {
                Some(c) => {
                    for m in &c.matchers {
                        if let Matcher::Exact(s) = m {
                            let h = self.hash(&c.path, s.key());
                            let list = self.by_value.entry(h).or_default();
                            if !list.contains(&(r, b)) {
                                list.push((r, b));
                            }
                        }
                    }
                }
                None => self.scan.push((r, b)),
            }
        }
        self.rules.push((key, pattern));
    }

    /// How many patterns it holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The keys of the patterns `event` matches, in the order they were added.
    pub fn matches(&self, event: &Value) -> Vec<K> {
        let flat = Flat::keeping(event, Some(&self.paths));
        // Each named path's fields, by path number (the fields are sorted by path).
        let mut ranges = vec![(0usize, 0usize); self.paths.len()];
        let mut start = 0;
        while start < flat.fields.len() {
            let path = &flat.fields[start].path;
            let len = flat.fields[start..].partition_point(|f| f.path == *path);
            if let Some(id) = self.paths.get(path) {
                ranges[*id] = (start, start + len);
            }
            start += len;
        }
        let mut hit: Vec<usize> = Vec::new();
        let mut test = |r: usize, b: usize| {
            if hit.contains(&r) {
                return;
            }
            let ids = &self.path_ids[r][b];
            let at = |i: usize| {
                let (from, to) = ranges[ids[i]];
                &flat.fields[from..to]
            };
            if self.rules[r].1.branches[b].matches_with(at) {
                hit.push(r);
            }
        };
        for f in &flat.fields {
            if let Some(list) = self.by_value.get(&self.hash(&f.path, f.value.key())) {
                for (r, b) in list {
                    test(*r, *b);
                }
            }
        }
        for (r, b) in &self.scan {
            test(*r, *b);
        }
        hit.sort_unstable();
        hit.into_iter().map(|r| self.rules[r].0.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        let g = |p: &str, s: &str| Glob::parse(p).map(|g| g.matches(s)).unwrap_or(false);
        assert!(g("*", ""));
        assert!(g("a*", "abc"));
        assert!(g("*c", "abc"));
        assert!(g("a*b*c", "aXbYc"));
        assert!(!g("a*b*c", "aXc"));
        assert!(!g("ab*ba", "aba"), "the ends may not overlap");
        assert!(g("a\\*b", "a*b"));
        assert!(Glob::parse("a**").is_err());
    }

    #[test]
    fn the_index_finds_what_a_scan_finds() {
        let patterns = [
            json!({"source": ["a", "b"]}),
            json!({"source": ["b"], "detail": {"n": [{"numeric": [">", 3]}]}}),
            json!({"detail": {"k": [{"prefix": "x"}]}}),
            json!({"$or": [{"source": ["c"]}, {"detail": {"k": [{"suffix": "z"}]}}]}),
        ];
        let set = RuleSet::new(
            patterns
                .iter()
                .enumerate()
                .map(|(i, p)| (i, Pattern::from_value(p).unwrap())),
        );
        let events = [
            json!({"source": "a"}),
            json!({"source": "b", "detail": {"n": 5}}),
            json!({"source": "c", "detail": {"k": "xyz"}}),
            json!({"source": "d", "detail": {"k": "qz"}}),
            json!({"source": "e"}),
        ];
        for e in &events {
            let scanned: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| Pattern::from_value(p).is_ok_and(|p| p.matches(e)))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(set.matches(e), scanned, "{e}");
        }
        assert_eq!(set.matches(&events[2]), vec![2, 3]);
    }
}
