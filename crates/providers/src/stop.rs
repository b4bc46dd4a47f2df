//! Incremental text assembly for token streams: UTF-8 reassembly and stop sequences.
//!
//! Tokens arrive as byte pieces that may split a multi-byte character, and a stop sequence may
//! straddle several tokens. [`TextAssembler`] releases only text that is complete UTF-8 and that
//! cannot be the beginning of a stop sequence, so nothing past a stop sequence ever reaches the
//! caller.

/// Outcome of feeding one piece.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    /// Text safe to send now (may be empty).
    pub text: String,
    /// A stop sequence was found; generation must end.
    pub stopped: bool,
}

/// Holds back bytes until they are complete UTF-8 and clear of every stop sequence.
#[derive(Debug, Default)]
pub(crate) struct TextAssembler {
    bytes: Vec<u8>,
    pending: String,
    stops: Vec<String>,
}

impl TextAssembler {
    pub(crate) fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            ..Self::default()
        }
    }

    /// Add a token's bytes; return the text that may be released.
    pub(crate) fn push(&mut self, piece: &[u8]) -> Released {
        self.bytes.extend_from_slice(piece);
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid bytes (not merely incomplete): replace them rather than stall forever.
                let lossy = String::from_utf8_lossy(&self.bytes).into_owned();
                self.bytes.clear();
                self.pending.push_str(&lossy);
                return self.release();
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.bytes.split_off(valid);
        let complete = std::mem::replace(&mut self.bytes, rest);
        // `complete` is valid UTF-8 by construction.
        self.pending.push_str(&String::from_utf8_lossy(&complete));
        self.release()
    }

    /// Release everything left (end of generation).
    pub(crate) fn finish(&mut self) -> String {
        if !self.bytes.is_empty() {
            let tail = String::from_utf8_lossy(&self.bytes).into_owned();
            self.bytes.clear();
            self.pending.push_str(&tail);
        }
        std::mem::take(&mut self.pending)
    }

    fn release(&mut self) -> Released {
        // A complete stop sequence: release what precedes it and stop.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            self.pending.truncate(at);
            return Released {
                text: std::mem::take(&mut self.pending),
                stopped: true,
            };
        }
        // Hold back the longest suffix that is a prefix of some stop sequence.
        let mut hold = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                let prefix = &stop[..i];
                if i > hold && self.pending.ends_with(prefix) {
                    hold = i;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let rest = self.pending.split_off(cut);
        Released {
            text: std::mem::replace(&mut self.pending, rest),
            stopped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_split_utf8() {
        let mut a = TextAssembler::new(vec![]);
        let bytes = "é€".as_bytes();
        assert_eq!(a.push(&bytes[..1]).text, "");
        assert_eq!(a.push(&bytes[1..3]).text, "é");
        assert_eq!(a.push(&bytes[3..]).text, "€");
        assert_eq!(a.finish(), "");
    }

    #[test]
    fn stop_sequence_across_pieces_is_cut() {
        let mut a = TextAssembler::new(vec!["END".into()]);
        assert_eq!(a.push(b"hello E").text, "hello ");
        let r = a.push(b"ND and more");
        assert_eq!(
            r,
            Released {
                text: String::new(),
                stopped: true
            }
        );
    }

    #[test]
    fn false_start_is_released() {
        let mut a = TextAssembler::new(vec!["END".into()]);
        assert_eq!(a.push(b"E").text, "");
        assert_eq!(a.push(b"x").text, "Ex");
        assert_eq!(a.push(b"EN").text, "");
        assert_eq!(a.finish(), "EN");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut a = TextAssembler::new(vec!["bb".into(), "a".into()]);
        let r = a.push(b"xxbbya");
        assert_eq!(
            r,
            Released {
                text: "xx".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn invalid_bytes_do_not_stall() {
        let mut a = TextAssembler::new(vec![]);
        let r = a.push(&[0xff, b'a']);
        assert_eq!(r.text, "\u{fffd}a");
    }
}
