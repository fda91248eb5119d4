//! `; data:` directives: data objects in CLIF text. The grammar is in `docs/input.md`.
//!
//! Directives are comments to the CLIF parser, so they are found by a line scan of their own.
//! Every error carries the directive's file and line.

use std::path::Path;

use crate::error::{BackendError, SourcePos};

/// An address stored inside a data object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrItem {
    pub offset: u32,
    pub target: String,
    pub addend: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataInit {
    Bytes {
        bytes: Vec<u8>,
        addrs: Vec<AddrItem>,
    },
    Zeroed(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirective {
    pub name: String,
    pub line: usize,
    pub writable: bool,
    /// Thread-local: each thread has its own copy, starting as these contents.
    pub tls: bool,
    pub export: bool,
    pub align: u64,
    pub init: DataInit,
}

const PREFIX: &str = "data:";

/// Every data directive in `text`, in order. Finds candidates by searching for `data:` rather
/// than walking every line: inputs are mostly function bodies.
pub fn scan(text: &str, file: &Path) -> Result<Vec<DataDirective>, BackendError> {
    let mut out = Vec::new();
    let (mut counted_to, mut line) = (0usize, 1usize);
    let mut consumed_to = 0usize;
    for (at, _) in text.match_indices(PREFIX) {
        let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        if start < consumed_to {
            continue;
        }
        let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
        let Some(body) = directive_body(&text[start..end]) else {
            continue;
        };
        line += count_lines(&text[counted_to..start]);
        counted_to = start;
        let mut body = body.to_string();
        let mut next = end;
        // Continuation: a list ending in `,` goes on in the next comment line.
        while body.trim_end().ends_with(',') && next < text.len() {
            let from = next + 1;
            let to = text[from..].find('\n').map_or(text.len(), |n| from + n);
            match text[from..to].trim_start().strip_prefix(';') {
                Some(rest) => {
                    body.push(' ');
                    body.push_str(rest);
                    next = to;
                }
                None => break,
            }
        }
        consumed_to = next;
        let pos = SourcePos {
            file: file.to_path_buf(),
            line,
        };
        out.push(parse(&body, line).map_err(|message| BackendError::Directive { pos, message })?);
    }
    Ok(out)
}

fn count_lines(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'\n').count()
}

fn directive_body(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix(';')?;
    rest.trim_start().strip_prefix(PREFIX)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Word(String),
    Str(Vec<u8>),
    Comma,
    Eq,
    Plus,
    Minus,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' => i += 1,
            b',' => {
                toks.push(Tok::Comma);
                i += 1
            }
            b'=' => {
                toks.push(Tok::Eq);
                i += 1
            }
            b'+' => {
                toks.push(Tok::Plus);
                i += 1
            }
            b'-' if b.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()) => {
                toks.push(Tok::Minus);
                i += 1
            }
            b'%' => {
                let start = i + 1;
                i = start;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_.$".contains(&b[i])) {
                    i += 1;
                }
                if i == start {
                    return Err("expected a name after `%`".into());
                }
                toks.push(Tok::Name(s[start..i].to_string()));
            }
            b'"' => {
                let (bytes, next) = string(b, i + 1)?;
                toks.push(Tok::Str(bytes));
                i = next;
            }
            _ => {
                let start = i;
                while i < b.len() && !b" \t\r,=\"%+".contains(&b[i]) {
                    i += 1;
                }
                toks.push(Tok::Word(s[start..i].to_string()));
            }
        }
    }
    Ok(toks)
}

fn string(b: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), String> {
    let mut out = Vec::new();
    while i < b.len() {
        match b[i] {
            b'"' => return Ok((out, i + 1)),
            b'\\' => {
                let esc = *b.get(i + 1).ok_or("unfinished escape in string")?;
                i += 2;
                out.push(match esc {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'0' => 0,
                    b'\\' => b'\\',
                    b'"' => b'"',
                    b'x' => {
                        let hex = b.get(i..i + 2).ok_or("`\\x` needs two hex digits")?;
                        let hex = std::str::from_utf8(hex).map_err(|_| "bad `\\x` escape")?;
                        i += 2;
                        u8::from_str_radix(hex, 16).map_err(|_| "`\\x` needs two hex digits")?
                    }
                    other => return Err(format!("unknown escape `\\{}`", other as char)),
                });
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err("string is not closed with `\"`".into())
}

fn int(word: &str) -> Result<i128, String> {
    let (neg, digits) = match word.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, word),
    };
    let v = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => i128::from_str_radix(&hex.replace('_', ""), 16),
        None => digits.replace('_', "").parse::<i128>(),
    }
    .map_err(|_| format!("`{word}` is not an integer"))?;
    Ok(if neg { -v } else { v })
}

fn fits(v: i128, bits: u32) -> bool {
    v >= -(1i128 << (bits - 1)) && v < (1i128 << bits)
}

fn parse(body: &str, line: usize) -> Result<DataDirective, String> {
    let toks = lex(body)?;
    let mut t = toks.into_iter().peekable();
    let name = match t.next() {
        Some(Tok::Name(n)) => n,
        _ => return Err("expected `%NAME` after `data:`".into()),
    };
    let (mut writable, mut export, mut align, mut tls) = (false, false, 8u64, false);
    loop {
        match t.next() {
            Some(Tok::Eq) => break,
            Some(Tok::Word(w)) if w == "writable" => writable = true,
            Some(Tok::Word(w)) if w == "tls" => tls = true,
            Some(Tok::Word(w)) if w == "export" => export = true,
            Some(Tok::Word(w)) if w == "align" => {
                let Some(Tok::Word(n)) = t.next() else {
                    return Err("`align` needs a number".into());
                };
                let n = int(&n)?;
                if n <= 0 || n > 4096 || (n & (n - 1)) != 0 {
                    return Err(format!("alignment {n} is not a power of two up to 4096"));
                }
                align = n as u64;
            }
            Some(other) => {
                return Err(format!(
                    "unexpected {} before `=` (expected writable, tls, export, align N or =)",
                    describe(&other)
                ))
            }
            None => return Err("expected `=` and the object's contents".into()),
        }
    }
    if let Some(Tok::Word(w)) = t.peek() {
        if w == "zeroed" {
            t.next();
            let Some(Tok::Word(n)) = t.next() else {
                return Err("`zeroed` needs a size".into());
            };
            let n = int(&n)?;
            if !(0..=1 << 32).contains(&n) {
                return Err(format!("size {n} is out of range"));
            }
            if let Some(extra) = t.next() {
                return Err(format!("unexpected {} after `zeroed`", describe(&extra)));
            }
            return Ok(DataDirective {
                name,
                line,
                writable,
                tls,
                export,
                align,
                init: DataInit::Zeroed(n as u64),
            });
        }
    }
    let mut bytes = Vec::new();
    let mut addrs = Vec::new();
    loop {
        match t.next() {
            Some(Tok::Str(s)) => bytes.extend_from_slice(&s),
            Some(Tok::Word(w)) => match w.as_str() {
                "i8" | "i16" | "i32" | "i64" => {
                    let bits: u32 = w[1..].parse().expect("matched above");
                    let Some(Tok::Word(v)) = t.next() else {
                        return Err(format!("`{w}` needs a value"));
                    };
                    let v = int(&v)?;
                    if !fits(v, bits) {
                        return Err(format!("{v} does not fit in {w}"));
                    }
                    bytes.extend_from_slice(&(v as i64).to_le_bytes()[..(bits / 8) as usize]);
                }
                "f32" | "f64" => {
                    let Some(Tok::Word(v)) = t.next() else {
                        return Err(format!("`{w}` needs a value"));
                    };
                    let f: f64 = v.parse().map_err(|_| format!("`{v}` is not a number"))?;
                    if w == "f32" {
                        bytes.extend_from_slice(&(f as f32).to_le_bytes());
                    } else {
                        bytes.extend_from_slice(&f.to_le_bytes());
                    }
                }
                "zeros" => {
                    let Some(Tok::Word(n)) = t.next() else {
                        return Err("`zeros` needs a count".into());
                    };
                    let n = int(&n)?;
                    if !(0..=1 << 24).contains(&n) {
                        return Err(format!("zeros count {n} is out of range"));
                    }
                    bytes.resize(bytes.len() + n as usize, 0);
                }
                "addr" => {
                    let Some(Tok::Name(target)) = t.next() else {
                        return Err("`addr` needs a `%NAME`".into());
                    };
                    let mut addend = 0i64;
                    match t.peek() {
                        Some(Tok::Plus) | Some(Tok::Minus) => {
                            let neg = t.next() == Some(Tok::Minus);
                            let Some(Tok::Word(n)) = t.next() else {
                                return Err("expected a number after `+`/`-`".into());
                            };
                            let n = i64::try_from(int(&n)?).map_err(|_| "addend too large")?;
                            addend = if neg { -n } else { n };
                        }
                        Some(Tok::Word(n)) if n.starts_with('-') => {
                            let n = i64::try_from(int(n)?).map_err(|_| "addend too large")?;
                            addend = n;
                            t.next();
                        }
                        _ => {}
                    }
                    let offset = u32::try_from(bytes.len()).map_err(|_| "object too large")?;
                    addrs.push(AddrItem {
                        offset,
                        target,
                        addend,
                    });
                    bytes.extend_from_slice(&[0; 8]);
                }
                other => {
                    return Err(format!(
                        "unknown item `{other}` (expected a string, i8/i16/i32/i64/f32/f64 V, \
                         zeros N, addr %NAME, or zeroed N)"
                    ))
                }
            },
            Some(other) => return Err(format!("unexpected {}", describe(&other))),
            None => return Err("expected the object's contents after `=`".into()),
        }
        match t.next() {
            None => break,
            Some(Tok::Comma) => continue,
            Some(other) => {
                return Err(format!(
                    "expected `,` between items, found {}",
                    describe(&other)
                ))
            }
        }
    }
    Ok(DataDirective {
        name,
        line,
        writable,
        tls,
        export,
        align,
        init: DataInit::Bytes { bytes, addrs },
    })
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Name(n) => format!("`%{n}`"),
        Tok::Word(w) => format!("`{w}`"),
        Tok::Str(_) => "a string".into(),
        Tok::Comma => "`,`".into(),
        Tok::Eq => "`=`".into(),
        Tok::Plus => "`+`".into(),
        Tok::Minus => "`-`".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<DataDirective, BackendError> {
        scan(text, Path::new("t.clif")).map(|mut v| v.remove(0))
    }

    #[test]
    fn strings_integers_and_addresses_are_laid_out_in_order() {
        let d = one(r#"; data: %t writable align 16 = "a\n\x41", i16 -2, addr %f + 3, i8 0x7f"#)
            .unwrap();
        assert!(d.writable);
        assert_eq!(d.align, 16);
        let DataInit::Bytes { bytes, addrs } = d.init else {
            panic!("bytes expected")
        };
        assert_eq!(&bytes[..5], b"a\nA\xfe\xff");
        assert_eq!(bytes.len(), 5 + 8 + 1);
        assert_eq!(
            addrs,
            vec![AddrItem {
                offset: 5,
                target: "f".into(),
                addend: 3
            }]
        );
    }

    #[test]
    fn lists_continue_on_the_next_comment_line() {
        let d = one("; data: %t = addr %a,\n;   addr %b - 8\nfunction").unwrap();
        let DataInit::Bytes { addrs, .. } = d.init else {
            panic!()
        };
        assert_eq!(addrs[1].addend, -8);
    }

    #[test]
    fn zeroed_objects_have_a_size_and_no_bytes() {
        let d = one("; data: %buf writable = zeroed 4096").unwrap();
        assert_eq!(d.init, DataInit::Zeroed(4096));
    }

    #[test]
    fn errors_name_the_line() {
        let e = one("\n\n; data: %x = i32 1, u7 3").unwrap_err().to_string();
        assert!(
            e.starts_with("t.clif:3: bad data directive: unknown item `u7`"),
            "{e}"
        );
        let e = one("; data: %x = i8 300").unwrap_err().to_string();
        assert!(e.contains("300 does not fit in i8"), "{e}");
    }
}
