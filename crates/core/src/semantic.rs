//! The semantic cache's index: unit vectors of cached requests' last user turn, partitioned by
//! everything else that shapes the answer (namespace, model, tenant scope, system prompt,
//! earlier turns, settings), searched exhaustively, then a content-word gate. The scan reads
//! `i8`-quantised copies of the vectors (a quarter of the memory traffic) and computes the
//! exact cosine only for those whose scanned value plus its worst-case quantisation error
//! reaches the floor, so the result is the exact search's.
//!
//! Embedding similarity alone cannot tell "is it safe" from "is it not safe" (0.994 in
//! all-MiniLM-L6-v2; "turn on" / "turn off dark mode" 0.93), so a match above the similarity
//! floor is served only when the two texts agree on the words that flip a meaning: numbers,
//! negations, names (capitalised words past a sentence's start), and polar words (on / off,
//! enable / disable, before / after…, and a word against its un-, dis-, in-, non- form).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::RwLock;

use modelgate_store::{CacheFilter, CacheKey};

use crate::keys::now_ms;

/// One search.
#[derive(Debug)]
pub struct SemanticQuery<'a> {
    /// The partition (hash of everything but the text).
    pub partition: u128,
    /// The text's unit vector.
    pub vector: &'a [f32],
    /// The text.
    pub text: &'a str,
    /// Similarity floor.
    pub threshold: f32,
}

/// The best match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    /// The exact-cache hash of the matching entry.
    pub hash: u128,
    /// Cosine similarity.
    pub similarity: f32,
}

struct Partition {
    namespace: String,
    model: String,
    scope: String,
    dims: usize,
    /// Vectors back to back (`dims` floats each), for the exact similarity.
    vectors: Vec<f32>,
    /// The same vectors quantised to `i8` (`dims` each), scanned first: a quarter of the
    /// memory to read per search.
    codes: Vec<i8>,
    /// Per vector: its quantisation step and its L1 norm (for the scan's error bound).
    steps: Vec<(f32, f32)>,
    items: Vec<Item>,
}

struct Item {
    hash: u128,
    text: Box<str>,
    expires_at_ms: i64,
}

impl Partition {
    fn remove_at(&mut self, i: usize) {
        let last = self.items.len() - 1;
        if i != last {
            let (a, b) = self.vectors.split_at_mut(last * self.dims);
            a[i * self.dims..(i + 1) * self.dims].copy_from_slice(&b[..self.dims]);
            let (a, b) = self.codes.split_at_mut(last * self.dims);
            a[i * self.dims..(i + 1) * self.dims].copy_from_slice(&b[..self.dims]);
        }
        self.vectors.truncate(last * self.dims);
        self.codes.truncate(last * self.dims);
        self.steps.swap_remove(i);
        self.items.swap_remove(i);
    }
}

#[derive(Default)]
struct Inner {
    partitions: HashMap<u128, Partition>,
    /// How far into each partition's shared log this replica has read.
    synced: HashMap<u128, u64>,
    /// Insertion order, for dropping the oldest once full.
    order: VecDeque<(u128, u128)>,
    len: usize,
}

/// The in-process vector index.
pub struct SemanticIndex {
    max_entries: usize,
    inner: RwLock<Inner>,
}

impl SemanticIndex {
    /// An index of at most `max_entries` vectors.
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            inner: RwLock::new(Inner::default()),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.write().len
    }

    /// Whether no vector is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How far into `partition`'s shared log ([`modelgate_store::VectorLog`]) this index has
    /// read.
    pub fn synced(&self, partition: u128) -> u64 {
        self.write().synced.get(&partition).copied().unwrap_or(0)
    }

    /// Record that the shared log of `partition` has been read up to `to` (a log that started
    /// again moves the mark back).
    pub fn mark_synced(&self, partition: u128, from: u64, to: u64) {
        let mut inner = self.write();
        let mark = inner.synced.entry(partition).or_insert(0);
        *mark = if from < *mark && from == 0 {
            to
        } else {
            (*mark).max(to)
        };
    }

    /// Add (or replace) the vector of the entry `key` in `partition`.
    pub fn insert(
        &self,
        partition: u128,
        key: &CacheKey,
        vector: Vec<f32>,
        text: String,
        expires_at_ms: i64,
    ) {
        let mut inner = self.write();
        let inner = &mut *inner;
        let p = inner
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition {
                namespace: key.namespace.clone(),
                model: key.model.clone(),
                scope: key.scope.clone(),
                dims: vector.len(),
                vectors: Vec::new(),
                codes: Vec::new(),
                steps: Vec::new(),
                items: Vec::new(),
            });
        if vector.len() != p.dims || p.dims == 0 {
            return;
        }
        if let Some(i) = p.items.iter().position(|it| it.hash == key.hash) {
            p.remove_at(i);
            inner.len -= 1;
        }
        let (codes, step) = quantize(&vector);
        p.codes.extend_from_slice(&codes);
        p.steps.push((step, l1(&vector)));
        p.vectors.extend_from_slice(&vector);
        p.items.push(Item {
            hash: key.hash,
            text: text.into_boxed_str(),
            expires_at_ms,
        });
        inner.len += 1;
        inner.order.push_back((partition, key.hash));
        while inner.len > self.max_entries {
            let Some((part, hash)) = inner.order.pop_front() else {
                break;
            };
            if let Some(p) = inner.partitions.get_mut(&part) {
                if let Some(i) = p.items.iter().position(|it| it.hash == hash) {
                    p.remove_at(i);
                    inner.len -= 1;
                }
                if p.items.is_empty() {
                    inner.partitions.remove(&part);
                }
            }
        }
        // Replaced entries leave stale positions in `order`; compact when they dominate.
        if inner.order.len() > 2 * inner.len + 1024 {
            let live: HashSet<(u128, u128)> = inner
                .partitions
                .iter()
                .flat_map(|(k, p)| p.items.iter().map(move |it| (*k, it.hash)))
                .collect();
            inner.order.retain(|e| live.contains(e));
        }
    }

    /// The most similar live entry at or above the floor whose text passes the content-word
    /// gate.
    pub fn search(&self, q: &SemanticQuery<'_>) -> Option<Found> {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let p = inner.partitions.get(&q.partition)?;
        if q.vector.len() != p.dims {
            return None;
        }
        let now = now_ms();
        // Scan the quantised vectors; only those whose similarity could reach the floor
        // (the scan's value plus its worst-case quantisation error) get the exact one.
        let (qcodes, qstep) = quantize(q.vector);
        let ql1 = l1(q.vector);
        let dims = p.dims as f32;
        let mut ranked: Vec<(f32, usize)> = p
            .codes
            .chunks_exact(p.dims)
            .zip(&p.steps)
            .enumerate()
            .filter_map(|(i, (codes, &(step, norm)))| {
                let approx = dot_i8(codes, &qcodes) as f32 * step * qstep;
                let bound = step / 2.0 * ql1 + qstep / 2.0 * norm + step * qstep / 4.0 * dims;
                if approx + bound < q.threshold {
                    return None;
                }
                let v = p.vectors.get(i * p.dims..(i + 1) * p.dims)?;
                let s = dot(v, q.vector);
                (s >= q.threshold).then_some((s, i))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked.into_iter().find_map(|(similarity, i)| {
            let item = p.items.get(i)?;
            (item.expires_at_ms > now && same_meaning_words(q.text, &item.text)).then_some(Found {
                hash: item.hash,
                similarity,
            })
        })
    }

    /// Drop the vectors of entries matching `filter`.
    pub fn remove(&self, filter: &CacheFilter) {
        let mut inner = self.write();
        let inner = &mut *inner;
        let mut removed = 0;
        let mut dropped = Vec::new();
        inner.partitions.retain(|id, p| {
            if !filter.matches_parts(&p.namespace, &p.model, &p.scope) {
                return true;
            }
            match filter.hash {
                None => {
                    removed += p.items.len();
                    dropped.push(*id);
                    false
                }
                Some(h) => {
                    while let Some(i) = p.items.iter().position(|it| it.hash == h) {
                        p.remove_at(i);
                        removed += 1;
                    }
                    !p.items.is_empty()
                }
            }
        });
        inner.len -= removed;
        // Their shared logs are dropped too: read them from the start when they are refilled.
        for id in dropped {
            inner.synced.remove(&id);
        }
    }
}

/// The dot product (the cosine, for unit vectors), in eight lanes so the compiler vectorises
/// it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((lane, a), b) in lanes.iter_mut().zip(x).zip(y) {
            *lane += a * b;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `v` scaled to unit length (a zero vector stays zero), so [`dot`] is the cosine.
pub fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = dot(&v, &v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// A vector as `i8` codes and the step they are multiples of (its largest magnitude / 127).
fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let step = if max > 0.0 { max / 127.0 } else { 1.0 };
    let codes = v
        .iter()
        .map(|x| (x / step).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, step)
}

fn l1(v: &[f32]) -> f32 {
    v.iter().map(|x| x.abs()).sum()
}

/// The dot product of two code vectors, in sixteen lanes so the compiler vectorises it.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((lane, a), b) in lanes.iter_mut().zip(x).zip(y) {
            *lane += i32::from(*a) * i32::from(*b);
        }
    }
    let tail: i32 = ra
        .iter()
        .zip(rb)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    lanes.iter().sum::<i32>() + tail
}

/// Words that flip a request's meaning when one side has one and the other its partner.
const OPPOSITES: &[(&str, &str)] = &[
    ("on", "off"),
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("activate", "deactivate"),
    ("increase", "decrease"),
    ("raise", "lower"),
    ("up", "down"),
    ("in", "out"),
    ("open", "close"),
    ("opened", "closed"),
    ("open", "closed"),
    ("start", "stop"),
    ("begin", "end"),
    ("add", "remove"),
    ("buy", "sell"),
    ("true", "false"),
    ("yes", "no"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("before", "after"),
    ("above", "below"),
    ("over", "under"),
    ("allow", "deny"),
    ("allow", "block"),
    ("accept", "reject"),
    ("include", "exclude"),
    ("hot", "cold"),
    ("high", "low"),
    ("more", "less"),
    ("most", "least"),
    ("best", "worst"),
    ("first", "last"),
    ("left", "right"),
    ("north", "south"),
    ("east", "west"),
    ("import", "export"),
    ("upload", "download"),
    ("encrypt", "decrypt"),
    ("lock", "unlock"),
    ("show", "hide"),
    ("install", "uninstall"),
    ("connect", "disconnect"),
    ("subscribe", "unsubscribe"),
    ("join", "leave"),
    ("win", "lose"),
    ("love", "hate"),
    ("like", "dislike"),
    ("always", "never"),
    ("all", "none"),
    ("public", "private"),
    ("input", "output"),
    ("push", "pull"),
    ("send", "receive"),
    ("light", "dark"),
    ("big", "small"),
    ("large", "small"),
    ("long", "short"),
    ("fast", "slow"),
    ("old", "new"),
    ("early", "late"),
    ("cheap", "expensive"),
    ("safe", "dangerous"),
    ("positive", "negative"),
    ("pass", "fail"),
    ("same", "different"),
    ("inside", "outside"),
    ("plus", "minus"),
    ("add", "subtract"),
    ("multiply", "divide"),
    ("ascending", "descending"),
    ("create", "delete"),
    ("read", "write"),
    ("increment", "decrement"),
    ("maximize", "minimize"),
    ("expand", "collapse"),
    ("mute", "unmute"),
    ("forward", "backward"),
    ("uppercase", "lowercase"),
    ("upper", "lower"),
    ("horizontal", "vertical"),
    ("internal", "external"),
    ("sync", "async"),
    ("synchronous", "asynchronous"),
    ("encode", "decode"),
    ("compress", "decompress"),
    ("zip", "unzip"),
    ("approve", "deny"),
    ("credit", "debit"),
    ("to", "from"),
    ("with", "without"),
    ("and", "or"),
    ("enter", "exit"),
    ("login", "logout"),
    ("arrive", "depart"),
    ("arrival", "departure"),
    ("morning", "evening"),
    ("day", "night"),
    ("today", "tomorrow"),
    ("today", "yesterday"),
    ("male", "female"),
    ("men", "women"),
    ("adult", "child"),
    ("adults", "children"),
    ("minor", "major"),
    ("wet", "dry"),
    ("full", "empty"),
    ("heavy", "light"),
    ("thin", "thick"),
    ("wide", "narrow"),
    ("deep", "shallow"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("happy", "sad"),
    ("good", "bad"),
    ("better", "worse"),
    ("easy", "hard"),
    ("easy", "difficult"),
    ("simple", "complex"),
    ("profit", "loss"),
    ("gain", "loss"),
    ("inbound", "outbound"),
    ("incoming", "outgoing"),
    ("next", "previous"),
    ("newest", "oldest"),
    ("latest", "earliest"),
    ("higher", "lower"),
    ("larger", "smaller"),
    ("bigger", "smaller"),
    ("faster", "slower"),
    ("longer", "shorter"),
    ("cheaper", "pricier"),
    ("win", "loss"),
    ("success", "failure"),
    ("asleep", "awake"),
    ("alive", "dead"),
    ("borrow", "lend"),
    ("give", "take"),
    ("rise", "fall"),
    ("top", "bottom"),
    ("front", "back"),
    ("hire", "fire"),
    ("attack", "defend"),
    ("sunrise", "sunset"),
    ("summer", "winter"),
    ("spring", "autumn"),
    ("celsius", "fahrenheit"),
    ("min", "max"),
    ("white", "black"),
    ("plural", "singular"),
    ("odd", "even"),
    ("client", "server"),
    ("sender", "recipient"),
    ("buyer", "seller"),
    ("debtor", "creditor"),
    ("teacher", "student"),
    ("parent", "child"),
    ("landlord", "tenant"),
    ("employer", "employee"),
];

/// Words that negate ("n't" contractions are read with the apostrophe dropped).
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without",
    "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont",
    "wouldnt", "shouldnt", "couldnt", "havent", "hasnt", "hadnt", "mustnt", "neednt", "unless",
];

/// Prefixes that turn a word into its opposite.
const OPPOSING_PREFIXES: &[&str] = &["un", "dis", "in", "im", "il", "ir", "non", "de", "anti"];

/// Lower-cased words (apostrophes dropped, so "don't" is "dont"; decimal points and thousands
/// separators kept inside numbers), each with whether it was capitalised past a sentence's
/// start (a name, for the gate; "I" is not one).
fn words(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut start = true;
    let mut cur = String::new();
    let mut flush = |cur: &mut String, start: &mut bool| {
        if cur.is_empty() {
            return;
        }
        let capital = cur.chars().next().is_some_and(char::is_uppercase) && cur != "I";
        out.push((cur.to_lowercase(), capital && !*start));
        *start = false;
        cur.clear();
    };
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let after_digit = cur.chars().last().is_some_and(|p| p.is_ascii_digit());
        let before_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_alphanumeric() || (matches!(c, '.' | ',') && after_digit && before_digit) {
            cur.push(c);
        } else if matches!(c, '\'' | '’') && !cur.is_empty() {
            // "don't" → "dont", "what's" → "whats".
        } else {
            flush(&mut cur, &mut start);
            if matches!(c, '.' | '?' | '!' | '\n' | ':' | ';') {
                start = true;
            }
        }
    }
    flush(&mut cur, &mut start);
    out
}

fn is_number(w: &str) -> bool {
    w.chars().any(|c| c.is_ascii_digit())
        || matches!(
            w,
            "zero"
                | "one"
                | "two"
                | "three"
                | "four"
                | "five"
                | "six"
                | "seven"
                | "eight"
                | "nine"
                | "ten"
                | "eleven"
                | "twelve"
                | "twenty"
                | "thirty"
                | "forty"
                | "fifty"
                | "hundred"
                | "thousand"
                | "million"
                | "billion"
                | "half"
                | "double"
                | "twice"
                | "once"
                | "single"
                | "triple"
                | "dozen"
        )
}

fn multiset(ws: &[(String, bool)], keep: fn(&str, bool) -> bool) -> Vec<&str> {
    let mut v: Vec<&str> = ws
        .iter()
        .filter(|(w, cap)| keep(w, *cap))
        .map(|(w, _)| w.as_str())
        .collect();
    v.sort_unstable();
    v
}

/// Whether two texts agree on every word that can flip a meaning (see the module docs).
pub fn same_meaning_words(a: &str, b: &str) -> bool {
    let (wa, wb) = (words(a), words(b));
    // The same numbers and names.
    if multiset(&wa, |w, cap| is_number(w) || cap) != multiset(&wb, |w, cap| is_number(w) || cap) {
        return false;
    }
    // As many negations.
    if multiset(&wa, |w, _| NEGATIONS.contains(&w)).len()
        != multiset(&wb, |w, _| NEGATIONS.contains(&w)).len()
    {
        return false;
    }
    let sa: HashSet<&str> = wa.iter().map(|(w, _)| w.as_str()).collect();
    let sb: HashSet<&str> = wb.iter().map(|(w, _)| w.as_str()).collect();
    let only_a: Vec<&str> = sa.difference(&sb).copied().collect();
    let only_b: Vec<&str> = sb.difference(&sa).copied().collect();
    let opposed = |x: &str, y: &str| {
        OPPOSITES
            .iter()
            .any(|&(p, q)| (x == p && y == q) || (x == q && y == p))
            || OPPOSING_PREFIXES
                .iter()
                .any(|p| y.strip_prefix(p) == Some(x) || x.strip_prefix(p) == Some(y))
    };
    !only_a.iter().any(|x| only_b.iter().any(|y| opposed(x, y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_keeps_meaning_flips_apart() {
        for (a, b) in [
            ("Turn on dark mode", "Turn off dark mode"),
            ("Enable two-factor login", "Disable two-factor login"),
            ("Take 5 mg of the drug", "Take 50 mg of the drug"),
            (
                "What is the capital of Paris?",
                "What is the capital of Rome?",
            ),
            ("I agree with the terms", "I disagree with the terms"),
            ("Is the store open?", "Is the store not open?"),
            ("Why does it work?", "Why doesn't it work?"),
            ("Sort ascending", "Sort descending"),
            (
                "Is the user able to log in?",
                "Is the user unable to log in?",
            ),
        ] {
            assert!(!same_meaning_words(a, b), "{a} / {b}");
        }
        assert!(same_meaning_words(
            "How do I reset my password?",
            "How can I reset my password?"
        ));
        assert!(same_meaning_words(
            "What is the capital of France?",
            "what is the capital of France"
        ));
    }

    #[test]
    fn the_quantised_scan_never_drops_a_match_the_exact_search_would_find() {
        let mut rng = fastrand::Rng::with_seed(3);
        let unit = |rng: &mut fastrand::Rng| {
            let v: Vec<f32> = (0..384).map(|_| rng.f32() - 0.5).collect();
            let n = l1_2(&v);
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        fn l1_2(v: &[f32]) -> f32 {
            v.iter().map(|x| x * x).sum::<f32>().sqrt()
        }
        let index = SemanticIndex::new(10_000);
        let far = now_ms() + 60_000;
        let base = unit(&mut rng);
        let mut vectors = Vec::new();
        for i in 0..300u128 {
            // Vectors at every distance from `base`: mix in noise at growing strength.
            let noise = unit(&mut rng);
            let t = i as f32 / 300.0;
            let mixed: Vec<f32> = base
                .iter()
                .zip(&noise)
                .map(|(b, n)| b * (1.0 - t) + n * t)
                .collect();
            let n = l1_2(&mixed);
            let v: Vec<f32> = mixed.into_iter().map(|x| x / n).collect();
            vectors.push(v.clone());
            index.insert(1, &key(i), v, "same text".into(), far);
        }
        let mut checked = 0;
        for _ in 0..50 {
            // A query somewhere between `base` and another random direction.
            let noise = unit(&mut rng);
            let u = rng.f32() * 0.6;
            let mixed: Vec<f32> = base
                .iter()
                .zip(&noise)
                .map(|(b, n)| b * (1.0 - u) + n * u)
                .collect();
            let n = l1_2(&mixed);
            let query: Vec<f32> = mixed.into_iter().map(|x| x / n).collect();
            // Floors just below and just above the best exact similarity too: the scan's
            // error must neither drop the match nor invent one.
            let best = vectors
                .iter()
                .map(|v| dot(v, &query))
                .fold(f32::MIN, f32::max);
            for threshold in [0.6f32, 0.9, best - 1e-5, best + 1e-5] {
                let exact = vectors
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (dot(v, &query), i as u128))
                    .filter(|(s, _)| *s >= threshold)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, i)| i);
                let q = SemanticQuery {
                    partition: 1,
                    vector: &query,
                    text: "same text",
                    threshold,
                };
                assert_eq!(
                    index.search(&q).map(|f| f.hash),
                    exact,
                    "threshold {threshold}"
                );
                checked += usize::from(exact.is_some());
            }
        }
        assert!(
            checked > 20,
            "the queries found matches to compare ({checked})"
        );
    }

    fn key(hash: u128) -> CacheKey {
        CacheKey {
            namespace: "default".into(),
            model: "m".into(),
            scope: "anonymous".into(),
            hash,
        }
    }

    #[test]
    fn search_finds_the_nearest_live_match_and_evicts_the_oldest() {
        let index = SemanticIndex::new(2);
        let far = now_ms() + 60_000;
        index.insert(1, &key(10), vec![1.0, 0.0], "reset my password".into(), far);
        index.insert(1, &key(11), vec![0.0, 1.0], "reset my password".into(), far);
        let v = [0.96f32, 0.28];
        let q = SemanticQuery {
            partition: 1,
            vector: &v,
            text: "reset my password",
            threshold: 0.9,
        };
        assert_eq!(index.search(&q).map(|f| f.hash), Some(10));
        // Another partition sees nothing.
        assert_eq!(index.search(&SemanticQuery { partition: 2, ..q }), None);
        // A third entry evicts the oldest.
        index.insert(1, &key(12), vec![0.0, 1.0], "x".into(), far);
        assert_eq!(index.len(), 2);
        assert_eq!(index.search(&q), None);
        index.remove(&CacheFilter::default());
        assert_eq!(index.len(), 0);
    }
}
