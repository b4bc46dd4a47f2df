//! Word filters: custom words and phrases and the managed profanity list, matched with one
//! Aho-Corasick automaton (ASCII case folding, whole words only: a match must not have a
//! letter or digit on either side).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// The managed `PROFANITY` list shipped with Modelgate (one word or phrase per line).
const PROFANITY: &str = include_str!("profanity.txt");

/// Where a pattern came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordSource {
    /// The guardrail's own word list, entry `i`.
    Custom(usize),
    /// The managed profanity list.
    Profanity,
}

/// A compiled word list.
pub struct WordMatcher {
    automaton: AhoCorasick,
    sources: Vec<WordSource>,
}

impl std::fmt::Debug for WordMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordMatcher")
            .field("patterns", &self.sources.len())
            .finish()
    }
}

/// A word found: its byte range and where its pattern came from.
#[derive(Debug, Clone, PartialEq)]
pub struct WordHit {
    /// Start (byte offset).
    pub start: usize,
    /// End (byte offset, exclusive).
    pub end: usize,
    /// Which list.
    pub source: WordSource,
}

impl WordMatcher {
    /// Compile `custom` words and, with `profanity`, the managed list.
    pub fn new(custom: &[String], profanity: bool) -> Result<Self, String> {
        let mut patterns: Vec<&str> = Vec::new();
        let mut sources = Vec::new();
        for (i, w) in custom.iter().enumerate() {
            patterns.push(w.trim());
            sources.push(WordSource::Custom(i));
        }
        if profanity {
            for w in PROFANITY
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                patterns.push(w);
                sources.push(WordSource::Profanity);
            }
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| e.to_string())?;
        Ok(Self { automaton, sources })
    }

    /// Whole-word matches in `text`, in text order.
    pub fn find(&self, text: &str) -> Vec<WordHit> {
        let alnum_before = |i: usize| {
            text[..i]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
        };
        let alnum_after = |i: usize| text[i..].chars().next().is_some_and(char::is_alphanumeric);
        self.automaton
            .find_iter(text)
            .filter(|m| !alnum_before(m.start()) && !alnum_after(m.end()))
            .map(|m| WordHit {
                start: m.start(),
                end: m.end(),
                source: self.sources[m.pattern().as_usize()],
            })
            .collect()
    }
}

/// The number of entries in the managed profanity list (for the docs and tests).
pub fn profanity_len() -> usize {
    PROFANITY
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_any_case() {
        let m = WordMatcher::new(&["secret project".into(), "zorb".into()], false);
        let Ok(m) = m else { panic!("compiles") };
        let hits = m.find("The SECRET PROJECT is zorbing, but Zorb. is fine");
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert_eq!(hits[0].source, WordSource::Custom(0));
        assert_eq!(hits[1].source, WordSource::Custom(1));
        assert!(profanity_len() > 50);
    }
}
