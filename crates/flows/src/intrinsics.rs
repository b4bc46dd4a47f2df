//! The `States.*` intrinsic functions of the JSONPath query language.
//!
//! `States.Format('{} has {}', $.name, States.ArrayLength($.items))`: arguments are string
//! literals in single quotes (`\'`, `\{`, `\}` and `\\` escape), numbers, `true`, `false`,
//! `null`, paths and other intrinsic calls. A failure is `States.IntrinsicFailure` (a path
//! that finds nothing is `States.Runtime`).

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::errors::Failure;
use crate::paths::{shorten, Path, Scope};

/// One argument.
#[derive(Debug, Clone)]
pub enum Arg {
    /// A literal (string, number, boolean, null).
    Lit(Value),
    /// A path.
    Path(String),
    /// A nested call.
    Call(Call),
}

/// A parsed call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The function (`States.Format`).
    pub name: String,
    /// Its arguments.
    pub args: Vec<Arg>,
}

const FUNCTIONS: &[&str] = &[
    "States.Format",
    "States.StringToJson",
    "States.JsonToString",
    "States.Array",
    "States.ArrayPartition",
    "States.ArrayContains",
    "States.ArrayRange",
    "States.ArrayGetItem",
    "States.ArrayLength",
    "States.ArrayUnique",
    "States.Base64Encode",
    "States.Base64Decode",
    "States.Hash",
    "States.JsonMerge",
    "States.MathRandom",
    "States.MathAdd",
    "States.StringSplit",
    "States.UUID",
];

/// Parse an intrinsic call.
pub fn parse(text: &str) -> Result<Call, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        text,
    };
    let call = p.call()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!(
            "unexpected text after the call at position {}",
            p.i
        ));
    }
    Ok(call)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn call(&mut self) -> Result<Call, String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'.')
        {
            self.i += 1;
        }
        let name = &self.text[start..self.i];
        if !FUNCTIONS.contains(&name) {
            return Err(format!("'{name}' is not an intrinsic function"));
        }
        self.ws();
        if self.s.get(self.i) != Some(&b'(') {
            return Err(format!("'{name}' must be followed by '('"));
        }
        self.i += 1;
        let mut args = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b')') {
            self.i += 1;
            return Ok(Call {
                name: name.into(),
                args,
            });
        }
        loop {
            args.push(self.arg()?);
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b')') => {
                    self.i += 1;
                    return Ok(Call {
                        name: name.into(),
                        args,
                    });
                }
                _ => return Err(format!("expected ',' or ')' in the arguments of {name}")),
            }
        }
    }

    fn arg(&mut self) -> Result<Arg, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'\'') => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    let rest = &self.text[self.i..];
                    let mut chars = rest.chars();
                    match chars.next() {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') => {
                            self.i += 1;
                            return Ok(Arg::Lit(Value::String(out)));
                        }
                        Some('\\') => {
                            let Some(c) = chars.next() else {
                                return Err("unterminated string literal".into());
                            };
                            // `\{` and `\}` stay escaped for States.Format to see.
                            if c == '{' || c == '}' {
                                out.push('\\');
                            }
                            out.push(c);
                            self.i += 1 + c.len_utf8();
                        }
                        Some(c) => {
                            out.push(c);
                            self.i += c.len_utf8();
                        }
                    }
                }
            }
            Some(b'$') => {
                let start = self.i;
                let mut depth = 0i32;
                let mut quote: Option<u8> = None;
                while self.i < self.s.len() {
                    let c = self.s[self.i];
                    match (quote, c) {
                        (Some(q), c) if c == q => quote = None,
                        (Some(_), _) => {}
                        (None, b'\'' | b'"') => quote = Some(c),
                        (None, b'[' | b'(') => depth += 1,
                        (None, b']') => depth -= 1,
                        (None, b')') if depth == 0 => break,
                        (None, b')') => depth -= 1,
                        (None, b',') if depth == 0 => break,
                        _ => {}
                    }
                    self.i += 1;
                }
                let path = self.text[start..self.i].trim().to_string();
                Path::parse(&path)?;
                Ok(Arg::Path(path))
            }
            Some(b'S') => Ok(Arg::Call(self.call()?)),
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len() && !matches!(self.s[self.i], b',' | b')') {
                    self.i += 1;
                }
                let lit = self.text[start..self.i].trim();
                let v: Value = serde_json::from_str(lit)
                    .map_err(|_| format!("'{lit}' is not a valid argument"))?;
                if v.is_object() || v.is_array() {
                    return Err(format!("'{lit}' is not a valid argument"));
                }
                Ok(Arg::Lit(v))
            }
            None => Err("missing argument".into()),
        }
    }
}

/// Parse and evaluate an intrinsic call.
pub fn evaluate(text: &str, scope: &Scope<'_>) -> Result<Value, Failure> {
    let call = parse(text)
        .map_err(|e| Failure::intrinsic(format!("Invalid intrinsic function '{text}': {e}")))?;
    eval(&call, scope)
}

fn fail(name: &str, why: impl std::fmt::Display) -> Failure {
    Failure::intrinsic(format!("Invalid arguments in {name}: {why}"))
}

fn int(v: &Value, name: &str) -> Result<i64, Failure> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| fail(name, format!("{n} is not an integer"))),
        other => Err(fail(
            name,
            format!("expected an integer, got {}", shorten(other)),
        )),
    }
}

fn string<'a>(v: &'a Value, name: &str) -> Result<&'a str, Failure> {
    v.as_str()
        .ok_or_else(|| fail(name, format!("expected a string, got {}", shorten(v))))
}

fn array<'a>(v: &'a Value, name: &str) -> Result<&'a Vec<Value>, Failure> {
    v.as_array()
        .ok_or_else(|| fail(name, format!("expected an array, got {}", shorten(v))))
}

fn arity(name: &str, args: &[Value], n: std::ops::RangeInclusive<usize>) -> Result<(), Failure> {
    if n.contains(&args.len()) {
        Ok(())
    } else {
        Err(fail(
            name,
            format!(
                "expected {} argument(s), got {}",
                if n.start() == n.end() {
                    n.start().to_string()
                } else {
                    format!("{} to {}", n.start(), n.end())
                },
                args.len()
            ),
        ))
    }
}

fn eval(call: &Call, scope: &Scope<'_>) -> Result<Value, Failure> {
    let mut args = Vec::with_capacity(call.args.len());
    for a in &call.args {
        args.push(match a {
            Arg::Lit(v) => v.clone(),
            Arg::Call(c) => eval(c, scope)?,
            Arg::Path(p) => {
                let path = Path::parse(p).map_err(Failure::runtime)?;
                path.eval(scope).ok_or_else(|| {
                    Failure::runtime(format!(
                        "The JsonPath argument '{p}' of the intrinsic function {} could not be found in the input '{}'",
                        call.name,
                        shorten(scope.input)
                    ))
                })?
            }
        });
    }
    let name = call.name.as_str();
    match name {
        "States.Format" => {
            let Some((fmt, rest)) = args.split_first() else {
                return Err(fail(name, "a format string is required"));
            };
            let fmt = string(fmt, name)?;
            let mut out = String::new();
            let mut it = rest.iter();
            let mut chars = fmt.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    }
                    '{' if chars.peek() == Some(&'}') => {
                        chars.next();
                        let Some(v) = it.next() else {
                            return Err(fail(name, "more placeholders '{}' than arguments"));
                        };
                        match v {
                            Value::String(s) => out.push_str(s),
                            Value::Object(_) | Value::Array(_) => {
                                return Err(fail(name, "an argument of States.Format must be a string, number, boolean or null"))
                            }
                            other => out.push_str(&other.to_string()),
                        }
                    }
                    c => out.push(c),
                }
            }
            if it.next().is_some() {
                return Err(fail(name, "more arguments than placeholders '{}'"));
            }
            Ok(Value::String(out))
        }
        "States.StringToJson" => {
            arity(name, &args, 1..=1)?;
            serde_json::from_str(string(&args[0], name)?).map_err(|e| fail(name, e))
        }
        "States.JsonToString" => {
            arity(name, &args, 1..=1)?;
            Ok(Value::String(args[0].to_string()))
        }
        "States.Array" => Ok(Value::Array(args)),
        "States.ArrayPartition" => {
            arity(name, &args, 2..=2)?;
            let a = array(&args[0], name)?;
            let n = int(&args[1], name)?;
            if n <= 0 {
                return Err(fail(name, "the chunk size must be a positive integer"));
            }
            Ok(Value::Array(
                a.chunks(usize::try_from(n).unwrap_or(usize::MAX))
                    .map(|c| Value::Array(c.to_vec()))
                    .collect(),
            ))
        }
        "States.ArrayContains" => {
            arity(name, &args, 2..=2)?;
            Ok(Value::Bool(array(&args[0], name)?.contains(&args[1])))
        }
        "States.ArrayRange" => {
            arity(name, &args, 3..=3)?;
            let (start, end, step) = (
                int(&args[0], name)?,
                int(&args[1], name)?,
                int(&args[2], name)?,
            );
            if step == 0 {
                return Err(fail(name, "the step must not be 0"));
            }
            let mut out = Vec::new();
            let mut i = start;
            while (step > 0 && i <= end) || (step < 0 && i >= end) {
                out.push(Value::from(i));
                if out.len() > 1000 {
                    return Err(fail(name, "the range has more than 1000 items"));
                }
                i += step;
            }
            Ok(Value::Array(out))
        }
        "States.ArrayGetItem" => {
            arity(name, &args, 2..=2)?;
            let a = array(&args[0], name)?;
            let i = int(&args[1], name)?;
            usize::try_from(i)
                .ok()
                .and_then(|i| a.get(i))
                .cloned()
                .ok_or_else(|| {
                    fail(
                        name,
                        format!("index {i} is out of bounds for an array of {}", a.len()),
                    )
                })
        }
        "States.ArrayLength" => {
            arity(name, &args, 1..=1)?;
            Ok(Value::from(array(&args[0], name)?.len()))
        }
        "States.ArrayUnique" => {
            arity(name, &args, 1..=1)?;
            let mut out: Vec<Value> = Vec::new();
            for v in array(&args[0], name)? {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        "States.Base64Encode" => {
            arity(name, &args, 1..=1)?;
            let s = string(&args[0], name)?;
            if s.len() > 10_000 {
                return Err(fail(name, "the input is longer than 10000 characters"));
            }
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(s),
            ))
        }
        "States.Base64Decode" => {
            arity(name, &args, 1..=1)?;
            let s = string(&args[0], name)?;
            if s.len() > 10_000 {
                return Err(fail(name, "the input is longer than 10000 characters"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| fail(name, format!("not valid base64: {e}")))?;
            String::from_utf8(bytes)
                .map(Value::String)
                .map_err(|_| fail(name, "the decoded data is not UTF-8 text"))
        }
        "States.Hash" => {
            arity(name, &args, 2..=2)?;
            let data = match &args[0] {
                Value::String(s) => s.clone(),
                Value::Null => return Err(fail(name, "the data to hash must not be null")),
                other => other.to_string(),
            };
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            let algo = string(&args[1], name)?;
            let digest = |a: &'static ring::digest::Algorithm| {
                hex(ring::digest::digest(a, data.as_bytes()).as_ref())
            };
            let out = match algo {
                "MD5" => {
                    use md5::Digest as _;
                    hex(&md5::Md5::digest(data.as_bytes()))
                }
                "SHA-1" => digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
                "SHA-256" => digest(&ring::digest::SHA256),
                "SHA-384" => digest(&ring::digest::SHA384),
                "SHA-512" => digest(&ring::digest::SHA512),
                other => {
                    return Err(fail(
                        name,
                        format!(
                        "'{other}' is not a hash algorithm (MD5, SHA-1, SHA-256, SHA-384, SHA-512)"
                    ),
                    ))
                }
            };
            Ok(Value::String(out))
        }
        "States.JsonMerge" => {
            arity(name, &args, 3..=3)?;
            if args[2] != Value::Bool(false) {
                return Err(fail(
                    name,
                    "only a shallow merge is supported: the third argument must be false",
                ));
            }
            let (Value::Object(a), Value::Object(b)) = (&args[0], &args[1]) else {
                return Err(fail(name, "both values to merge must be JSON objects"));
            };
            let mut out: Map<String, Value> = a.clone();
            for (k, v) in b {
                out.insert(k.clone(), v.clone());
            }
            Ok(Value::Object(out))
        }
        "States.MathRandom" => {
            arity(name, &args, 2..=3)?;
            let (start, end) = (int(&args[0], name)?, int(&args[1], name)?);
            if start >= end {
                return Err(fail(name, "the start must be less than the end"));
            }
            let mut rng = match args.get(2) {
                Some(s) => {
                    fastrand::Rng::with_seed(u64::from_ne_bytes(int(s, name)?.to_ne_bytes()))
                }
                None => fastrand::Rng::new(),
            };
            Ok(Value::from(rng.i64(start..end)))
        }
        "States.MathAdd" => {
            arity(name, &args, 2..=2)?;
            let (a, b) = (int(&args[0], name)?, int(&args[1], name)?);
            a.checked_add(b)
                .map(|n| Value::Number(Number::from(n)))
                .ok_or_else(|| fail(name, "the sum overflows"))
        }
        "States.StringSplit" => {
            arity(name, &args, 2..=2)?;
            let s = string(&args[0], name)?;
            let delims: Vec<char> = string(&args[1], name)?.chars().collect();
            Ok(Value::Array(
                s.split(|c| delims.contains(&c))
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            ))
        }
        "States.UUID" => {
            arity(name, &args, 0..=0)?;
            let mut b = [0u8; 16];
            for x in &mut b {
                *x = fastrand::u8(..);
            }
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Ok(Value::String(format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )))
        }
        other => Err(Failure::intrinsic(format!(
            "'{other}' is not an intrinsic function"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(expr: &str, input: Value) -> Result<Value, Failure> {
        let ctx = json!({});
        let vars = Map::new();
        evaluate(
            expr,
            &Scope {
                input: &input,
                context: &ctx,
                vars: &vars,
            },
        )
    }

    #[test]
    fn each_function() {
        let i = json!({"name": "Ann", "a": [1, 2, 2, 3], "o": {"x": 1}, "p": {"y": 2}, "s": "{\"k\":1}"});
        let ok = |e: &str| run(e, i.clone()).unwrap_or_else(|f| json!(format!("ERR {f}")));
        assert_eq!(
            ok("States.Format('Hello, {} \\{x\\}', $.name)"),
            json!("Hello, Ann {x}")
        );
        assert_eq!(
            ok("States.Format('{} {} {}', 1, true, null)"),
            json!("1 true null")
        );
        assert_eq!(ok("States.StringToJson($.s)"), json!({"k": 1}));
        assert_eq!(ok("States.JsonToString($.o)"), json!("{\"x\":1}"));
        assert_eq!(ok("States.Array('a', 1, $.o)"), json!(["a", 1, {"x": 1}]));
        assert_eq!(ok("States.ArrayPartition($.a, 3)"), json!([[1, 2, 2], [3]]));
        assert_eq!(ok("States.ArrayContains($.a, 3)"), json!(true));
        assert_eq!(ok("States.ArrayRange(1, 9, 2)"), json!([1, 3, 5, 7, 9]));
        assert_eq!(ok("States.ArrayGetItem($.a, 3)"), json!(3));
        assert_eq!(ok("States.ArrayLength($.a)"), json!(4));
        assert_eq!(ok("States.ArrayUnique($.a)"), json!([1, 2, 3]));
        assert_eq!(
            ok("States.Base64Encode('Data to encode')"),
            json!("RGF0YSB0byBlbmNvZGU=")
        );
        assert_eq!(
            ok("States.Base64Decode('RGF0YSB0byBlbmNvZGU=')"),
            json!("Data to encode")
        );
        assert_eq!(
            ok("States.Hash('input data', 'SHA-1')"),
            json!("aaff4a450a104cd177d28d18d74485e8cae074b7")
        );
        assert_eq!(
            ok("States.Hash('input data', 'MD5')"),
            json!("812f45842bc6d66ee14572ce20db8e86")
        );
        assert_eq!(
            ok("States.JsonMerge($.o, $.p, false)"),
            json!({"x": 1, "y": 2})
        );
        assert_eq!(ok("States.MathAdd(111, -1)"), json!(110));
        assert_eq!(
            ok("States.StringSplit('1,2,3,4,5', ',')"),
            json!(["1", "2", "3", "4", "5"])
        );
        assert_eq!(
            ok("States.StringSplit('This.is+a,test=string', '.+,=')"),
            json!(["This", "is", "a", "test", "string"])
        );
        assert_eq!(ok("States.ArrayLength(States.Array(1, 2))"), json!(2));
        let r = ok("States.MathRandom(1, 999)");
        assert!(r.as_i64().is_some_and(|n| (1..999).contains(&n)), "{r}");
        assert_eq!(
            ok("States.MathRandom(1, 999, 7)"),
            ok("States.MathRandom(1, 999, 7)")
        );
        let u = ok("States.UUID()");
        assert_eq!(u.as_str().map(str::len), Some(36));
        assert_eq!(u.as_str().and_then(|s| s.chars().nth(14)), Some('4'));
    }

    #[test]
    fn failures_are_intrinsic_failures() {
        for bad in [
            "States.ArrayGetItem($.a, 9)",
            "States.JsonMerge($.o, $.p, true)",
            "States.Format('{}')",
            "States.Hash('x', 'CRC32')",
            "States.MathAdd('a', 1)",
            "States.ArrayRange(1, 5000, 1)",
            "States.Base64Decode('%%%')",
        ] {
            let e = run(bad, json!({"a": [1], "o": {}, "p": {}})).unwrap_err();
            assert_eq!(e.error, "States.IntrinsicFailure", "{bad}: {e}");
        }
        let e = run("States.ArrayLength($.missing)", json!({})).unwrap_err();
        assert_eq!(e.error, "States.Runtime");
        assert!(parse("States.Nope()").is_err());
        assert!(parse("States.Format('x'").is_err());
    }
}
