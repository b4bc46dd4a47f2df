//! On-box PII detection: a pattern per entity type, then — where the type has one — its
//! checksum (Luhn for cards and Canadian SINs, mod-97 for IBANs, the ABA weights for routing
//! numbers, the VIN check digit, mod-11 for UK NHS numbers, the SSA's area / group / serial
//! rules for SSNs and ITINs) or its context (a keyword before the value, for types such as
//! PIN, PASSWORD or DRIVER_ID whose values look like anything). NAME and ADDRESS need named-
//! entity recognition; here they are best effort (capitalised words after a cue, a street
//! number before a street suffix), as `docs/guardrails.md` says.

use std::sync::LazyLock;

use regex::Regex;

/// One detected value: a byte range of the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Start (byte offset).
    pub start: usize,
    /// End (byte offset, exclusive).
    pub end: usize,
    /// The PII type (one of [`super::def::PII_TYPES`]).
    pub kind: &'static str,
    /// 0–1: a checksum pass is 0.99, a context match 0.85, a bare pattern 0.7, a best-effort
    /// guess 0.6.
    pub confidence: f32,
}

/// How a pattern's candidates are confirmed.
#[derive(Clone, Copy)]
enum Check {
    /// The pattern alone.
    None,
    /// A validator of the matched text (separators included).
    Valid(fn(&str) -> bool),
}

struct Detector {
    kind: &'static str,
    regex: Regex,
    check: Check,
    confidence: f32,
}

/// A pattern with capture group 1 as the value when it has one.
fn det(kind: &'static str, pattern: &str, check: Check, confidence: f32) -> Option<Detector> {
    match Regex::new(pattern) {
        Ok(regex) => Some(Detector {
            kind,
            regex,
            check,
            confidence,
        }),
        Err(e) => {
            tracing::error!(kind, error = %e, "a built-in PII pattern does not compile");
            None
        }
    }
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// The Luhn check (cards, Canadian SINs).
pub fn luhn(s: &str) -> bool {
    let d = digits(s);
    if d.len() < 2 {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the separators of a grouped number are one kind throughout (none, spaces or
/// dashes).
fn consistent_separators(s: &str) -> bool {
    let seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_alphanumeric()).collect();
    seps.windows(2).all(|w| w[0] == w[1])
}

fn card(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) || !consistent_separators(s) || !luhn(s) {
        return false;
    }
    let n = |k: usize| d.iter().take(k).fold(0u32, |a, &x| a * 10 + x);
    // Issuer prefixes: Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro.
    matches!(d[0], 4)
        || (51..=55).contains(&n(2))
        || (2221..=2720).contains(&n(4))
        || matches!(
            n(2),
            34 | 37 | 35 | 36 | 38 | 30 | 62 | 65 | 50 | 56 | 57 | 58 | 63 | 67
        )
        || n(4) == 6011
        || (644..=649).contains(&n(3))
}

fn sin(s: &str) -> bool {
    let d = digits(s);
    d.len() == 9 && d[0] != 0 && d[0] != 8 && consistent_separators(s) && luhn(s)
}

/// IBAN: mod-97 of the rearranged number is 1, and the length fits the country's.
pub fn iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 15 || compact.len() > 34 {
        return false;
    }
    if let Some(len) = iban_length(&compact[..2]) {
        if compact.len() != len {
            return false;
        }
    }
    let rearranged = compact[4..].chars().chain(compact[..4].chars());
    let mut rem: u64 = 0;
    for c in rearranged {
        let v = match c {
            '0'..='9' => u64::from(c as u8 - b'0'),
            'A'..='Z' => u64::from(c as u8 - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The IBAN length of the commonest countries.
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "DE" => 22,
        "GB" | "IE" => 22,
        "FR" | "IT" | "MC" => 27,
        "ES" | "SE" | "SK" | "CZ" | "RO" => 24,
        "NL" => 18,
        "BE" => 16,
        "CH" | "LI" | "LV" => 21,
        "AT" | "EE" | "LU" | "BA" | "XK" | "LT" => 20,
        "PL" | "HU" | "CY" => 28,
        "PT" => 25,
        "NO" => 15,
        "DK" | "FI" | "FO" | "GL" => 18,
        "GR" => 27,
        "SA" => 24,
        "AE" => 23,
        "TR" => 26,
        _ => return None,
    })
}

/// ABA routing number: weights 3, 7, 1 and a known Federal Reserve prefix.
pub fn aba(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 {
        return false;
    }
    let prefix = d[0] * 10 + d[1];
    if !matches!(prefix, 0..=12 | 21..=32 | 61..=72 | 80) {
        return false;
    }
    let w = [3, 7, 1, 3, 7, 1, 3, 7, 1];
    d.iter()
        .zip(w)
        .map(|(a, b)| a * b)
        .sum::<u32>()
        .is_multiple_of(10)
}

/// VIN: the check digit in position 9 (ISO 3779, as North American VINs carry it).
pub fn vin(s: &str) -> bool {
    let s = s.as_bytes();
    if s.len() != 17 {
        return false;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A' | b'J' => 1,
            b'B' | b'K' | b'S' => 2,
            b'C' | b'L' | b'T' => 3,
            b'D' | b'M' | b'U' => 4,
            b'E' | b'N' | b'V' => 5,
            b'F' | b'W' => 6,
            b'G' | b'P' | b'X' => 7,
            b'H' | b'Y' => 8,
            b'R' | b'Z' => 9,
            _ => return None,
        })
    };
    let w = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let mut sum = 0;
    for (i, &c) in s.iter().enumerate() {
        let Some(v) = value(c) else { return false };
        sum += v * w[i];
    }
    let check = sum % 11;
    let expected = if check == 10 {
        b'X'
    } else {
        b'0' + check as u8
    };
    s[8] == expected && s.iter().any(u8::is_ascii_digit) && s.iter().any(u8::is_ascii_alphabetic)
}

/// UK NHS number: mod-11 with weights 10…2 (a remainder giving 10 is never issued).
pub fn nhs(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 10 || !consistent_separators(s) {
        return false;
    }
    let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(a, w)| a * w).sum();
    let check = 11 - sum % 11;
    let check = if check == 11 { 0 } else { check };
    check != 10 && check == d[9]
}

/// SSN: consistent separators; area not 000, 666 or 900–999; group not 00; serial not 0000.
pub fn ssn(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 || !consistent_separators(s) {
        return false;
    }
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// ITIN: area 9xx, group 50–65, 70–88, 90–92 or 94–99.
pub fn itin(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 || d[0] != 9 || !consistent_separators(s) {
        return false;
    }
    let group = d[3] * 10 + d[4];
    matches!(group, 50..=65 | 70..=88 | 90..=92 | 94..=99)
}

fn ipv4(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
}

fn ipv6(s: &str) -> bool {
    s.matches(':').count() >= 2 && s.parse::<std::net::Ipv6Addr>().is_ok()
}

fn email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && !domain.contains("..")
        && !domain.starts_with(['.', '-'])
}

/// UK National Insurance number prefixes that are never issued.
fn nino(s: &str) -> bool {
    let p: String = s.chars().take(2).collect();
    !matches!(p.as_str(), "BG" | "GB" | "NK" | "KN" | "TN" | "NT" | "ZZ")
}

/// A SWIFT/BIC code: a real country code in positions 5–6.
fn swift(s: &str) -> bool {
    const COUNTRIES: &str = "AD AE AF AG AL AM AO AR AT AU AZ BA BB BD BE BF BG BH BI BJ BM BN BO BR BS BT BW BY BZ CA CD CF CG CH CI CL CM CN CO CR CU CV CY CZ DE DJ DK DM DO DZ EC EE EG ES ET FI FJ FR GA GB GD GE GH GM GN GQ GR GT GW GY HK HN HR HT HU ID IE IL IN IQ IR IS IT JM JO JP KE KG KH KM KN KR KW KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MG MK ML MM MN MO MR MT MU MV MW MX MY MZ NA NE NG NI NL NO NP NZ OM PA PE PG PH PK PL PT PY QA RO RS RU RW SA SB SC SD SE SG SI SK SL SM SN SO SR SV SY SZ TD TG TH TJ TL TM TN TO TR TT TW TZ UA UG US UY UZ VC VE VN VU WS YE ZA ZM ZW";
    s.len() >= 6 && COUNTRIES.split(' ').any(|c| c == &s[4..6])
}

/// Every built-in detector, compiled once.
static DETECTORS: LazyLock<Vec<Detector>> = LazyLock::new(|| {
    use Check::{None as Plain, Valid};
    [
        det("EMAIL", r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}\b", Valid(email), 0.99),
        det("CREDIT_DEBIT_CARD_NUMBER", r"\b[0-9](?:[ \-]?[0-9]){12,18}\b", Valid(card), 0.99),
        det("US_SOCIAL_SECURITY_NUMBER", r"\b[0-8][0-9]{2}[\- ][0-9]{2}[\- ][0-9]{4}\b", Valid(ssn), 0.99),
        det("US_SOCIAL_SECURITY_NUMBER", r"(?i:\b(?:ssn|social security(?: number| no\.?)?)\W{0,5})([0-8][0-9]{8})\b", Valid(ssn), 0.95),
        det("US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER", r"\b9[0-9]{2}[\- ]?[0-9]{2}[\- ]?[0-9]{4}\b", Valid(itin), 0.95),
        det("CA_SOCIAL_INSURANCE_NUMBER", r"\b[0-9]{3}[\- ][0-9]{3}[\- ][0-9]{3}\b", Valid(sin), 0.99),
        det("CA_SOCIAL_INSURANCE_NUMBER", r"(?i:\b(?:sin|social insurance(?: number| no\.?)?)\W{0,5})([0-9]{9})\b", Valid(sin), 0.95),
        det("INTERNATIONAL_BANK_ACCOUNT_NUMBER", r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b", Valid(iban), 0.99),
        det("US_BANK_ROUTING_NUMBER", r"\b[0-9]{9}\b", Valid(aba), 0.9),
        det("VEHICLE_IDENTIFICATION_NUMBER", r"\b[A-HJ-NPR-Z0-9]{17}\b", Valid(vin), 0.99),
        det("UK_NATIONAL_HEALTH_SERVICE_NUMBER", r"\b[0-9]{3} ?[0-9]{3} ?[0-9]{4}\b", Valid(nhs), 0.95),
        det("UK_NATIONAL_INSURANCE_NUMBER", r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b", Valid(nino), 0.95),
        det("UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER", r"(?i:\b(?:utr|unique taxpayer reference)(?: number| no\.?)?\W{0,5})([0-9]{5} ?[0-9]{5})\b", Plain, 0.85),
        det("CA_HEALTH_NUMBER", r"(?i:\b(?:health card|health number|ohip|health insurance number)(?: number| no\.?)?\W{0,5})([0-9]{4}[ \-]?[0-9]{3}[ \-]?[0-9]{3}(?:[ \-]?[A-Za-z]{2})?)\b", Plain, 0.85),
        det("AWS_ACCESS_KEY", r"\b(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[A-Z0-9]{16}\b", Plain, 0.99),
        det("AWS_SECRET_KEY", r"(?i:\b(?:aws_?secret_?access_?key|secret_?access_?key|aws secret(?: access)? key|secret key)\W{0,5})([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)", Plain, 0.9),
        det("IP_ADDRESS", r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b", Valid(ipv4), 0.95),
        det("IP_ADDRESS", r"(?:\b|::)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b", Valid(ipv6), 0.95),
        det("MAC_ADDRESS", r"\b(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}\b|\b(?:[0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}\b", Plain, 0.95),
        det("URL", r#"\b(?:(?:https?|ftp)://|www\.)[^\s<>"'`]+[^\s<>"'`.,;:!?)\]]"#, Plain, 0.95),
        det("PHONE", r"(?:\+?\b1[ .\-]?)?(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[.\-])[0-9]{3}[.\-][0-9]{4}\b", Plain, 0.9),
        det("PHONE", r"\+[1-9][0-9]{0,2}(?:[ .\-]?[0-9]{2,4}){2,5}\b", Plain, 0.85),
        det("SWIFT_CODE", r"(?i:\b(?:swift|bic)(?: code)?\W{0,5})([A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?)\b", Valid(swift), 0.9),
        det("SWIFT_CODE", r"\b[A-Z]{6}[A-Z0-9]{0,1}[0-9][A-Z0-9]{0,1}(?:[A-Z0-9]{3})?\b", Valid(|s| swift(s) && (s.len() == 8 || s.len() == 11)), 0.75),
        det("CREDIT_DEBIT_CARD_CVV", r"(?i:\b(?:cvv2?|cvc2?|cid|card security code|security code)\W{0,5})([0-9]{3,4})\b", Plain, 0.9),
        det("CREDIT_DEBIT_CARD_EXPIRY", r"(?i:\b(?:exp(?:iry|iration)?(?: date)?|valid (?:thru|through|until)|expires(?: on)?)\W{0,5})((?:0[1-9]|1[0-2]) ?/ ?(?:20)?[0-9]{2})\b", Plain, 0.9),
        det("PIN", r"(?i:\bpin(?: code| number)?\b(?: is)?\W{0,5})([0-9]{4,8})\b", Plain, 0.9),
        det("PASSWORD", r"(?i:\b(?:password|passwd|pwd|passcode|passphrase)\b(?: is)?\s*[:=]?\s*)([^\s,;]{4,64})", Plain, 0.85),
        det("USERNAME", r"(?i:\b(?:username|user name|user id|userid|login(?: name)?|handle)\b(?: is)?\s*[:=]?\s*)([A-Za-z0-9._@\-]{3,64})\b", Plain, 0.85),
        det("DRIVER_ID", r"(?i:\b(?:driver'?s? licen[cs]e|driving licen[cs]e|DL)(?: number| no\.?| #)?(?: is)?\W{0,5})([A-Z0-9](?:[A-Z0-9\-]){4,18})\b", Plain, 0.85),
        det("US_PASSPORT_NUMBER", r"(?i:\bpassport(?: number| no\.?| #)?(?: is)?\W{0,5})([A-Z]?[0-9]{8,9})\b", Plain, 0.9),
        det("US_BANK_ACCOUNT_NUMBER", r"(?i:\b(?:bank account|checking account|savings account|account|acct)(?: number| no\.?| #)?(?: is)?\W{0,5})([0-9]{6,17})\b", Plain, 0.85),
        det("LICENSE_PLATE", r"(?i:\b(?:licen[cs]e plate|number plate|plate number|registration plate)(?: number| no\.?)?(?: is)?\W{0,5})([A-Z0-9]{1,4}[ \-]?[A-Z0-9]{1,4})\b", Plain, 0.8),
        det("AGE", r"\b([0-9]{1,3})[ \-]years?[ \-]old\b", Plain, 0.8),
        det("AGE", r"(?i:\b(?:age|aged)\b:?\s+)([0-9]{1,3})\b", Plain, 0.8),
        det("NAME", r"(?:(?i:\bmy name is|\bname:|\bi am|\bi'm|\bsigned,?|\bdear|\bmr\.?|\bmrs\.?|\bms\.?|\bdr\.?)\s+)([A-Z][a-z]+(?: [A-Z][a-z]+){0,2})\b", Plain, 0.6),
        det("ADDRESS", r"\b[0-9]{1,6}(?: [A-Z][a-z]+){1,4} (?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Parkway|Pkwy)\b\.?(?:,? (?:[A-Z][a-z]+ ?){1,3},? [A-Z]{2} [0-9]{5}(?:-[0-9]{4})?)?", Plain, 0.6),
    ]
    .into_iter()
    .flatten()
    .collect()
});

/// Force the patterns to compile (at start-up, so the first call does not pay for it).
pub fn warm() {
    LazyLock::force(&DETECTORS);
}

/// Find the values of the `enabled` types in `text`: overlapping hits are resolved in favour
/// of the longer (then the more confident) one. Hits come back in text order.
pub fn detect(text: &str, enabled: &dyn Fn(&str) -> bool) -> Vec<Hit> {
    let mut hits = Vec::new();
    for d in DETECTORS.iter().filter(|d| enabled(d.kind)) {
        for caps in d.regex.captures_iter(text) {
            let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                continue;
            };
            let ok = match d.check {
                Check::None => true,
                Check::Valid(f) => f(m.as_str()),
            };
            if ok && !m.as_str().is_empty() {
                hits.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    kind: d.kind,
                    confidence: d.confidence,
                });
            }
        }
    }
    resolve(hits)
}

/// Keep non-overlapping hits, longer and more confident first; return them in text order.
pub(crate) fn resolve(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by(|a, b| {
        (b.end - b.start)
            .cmp(&(a.end - a.start))
            .then(b.confidence.total_cmp(&a.confidence))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
    for h in hits {
        if kept.iter().all(|k| h.end <= k.start || h.start >= k.end) {
            kept.push(h);
        }
    }
    kept.sort_by_key(|h| h.start);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(&'static str, String)> {
        detect(text, &|_| true)
            .into_iter()
            .map(|h| (h.kind, text[h.start..h.end].to_string()))
            .collect()
    }

    #[test]
    fn checksums() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"));
        assert!(aba("011000015"));
        assert!(!aba("011000016"));
        assert!(vin("1M8GDM9AXKP042788"));
        assert!(!vin("1M8GDM9A1KP042788"));
        assert!(nhs("943 476 5919"));
        assert!(!nhs("943 476 5918"));
        assert!(ssn("123-45-6789"));
        assert!(!ssn("666-45-6789"));
        assert!(!ssn("123-45 6789"));
        assert!(sin("130 692 544"));
        assert!(!sin("046 454 286"), "SINs do not start with 0");
    }

    #[test]
    fn finds_values_in_prose() {
        let found = kinds("Mail jane.doe@example.com or call (206) 555-0123; card 4111-1111-1111-1111, ssn 123-45-6789.");
        assert!(
            found.contains(&("EMAIL", "jane.doe@example.com".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&("PHONE", "(206) 555-0123".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&("CREDIT_DEBIT_CARD_NUMBER", "4111-1111-1111-1111".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&("US_SOCIAL_SECURITY_NUMBER", "123-45-6789".into())),
            "{found:?}"
        );
        assert!(kinds("card 4111-1111-1111-1112").is_empty());
        assert_eq!(
            kinds("my password is hunter22!")[0],
            ("PASSWORD", "hunter22!".into())
        );
    }
}
