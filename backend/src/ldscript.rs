//! GNU ld scripts as they stand in for libraries: `libc.so`, `libm.so`, `libm.a` and
//! `libgcc_s.so` on Debian are text files such as
//! `GROUP ( /lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/libc_nonshared.a
//! AS_NEEDED ( /lib64/ld-linux-x86-64.so.2 ) )` or `GROUP ( libm-2.36.a libmvec.a )`.
//!
//! What ld reads in such a script is handled: `GROUP`, `INPUT` and `AS_NEEDED` lists of file
//! names (absolute, or relative: found beside the script, then in the search path) and `-l`
//! names, comments, and the commands that only describe the output (`OUTPUT_FORMAT`,
//! `OUTPUT_ARCH`, `SEARCH_DIR` adds a directory). Anything else is an error naming the
//! command: a script that lays out sections is not a library.

/// One input a script names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptInput {
    /// A file name, as written.
    File(String),
    /// `-lNAME`.
    Library(String),
}

/// What a library script says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Script {
    pub inputs: Vec<ScriptInput>,
    /// `SEARCH_DIR(...)` directories.
    pub search_dirs: Vec<String>,
}

/// Words of a script: names, `(`, `)`, with comments and commas gone.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() || c == ',' {
            rest = &rest[c.len_utf8()..];
        } else if let Some(after) = rest.strip_prefix("/*") {
            let end = after.find("*/").ok_or("a comment has no end")?;
            rest = &after[end + 2..];
        } else if c == '(' || c == ')' {
            out.push(c.to_string());
            rest = &rest[1..];
        } else if c == '"' {
            let end = rest[1..].find('"').ok_or("a quoted name has no end")?;
            out.push(rest[1..1 + end].to_string());
            rest = &rest[end + 2..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
                .unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    Ok(out)
}

/// Parse a library script; `Err` says what is not a library script.
pub fn parse(text: &str) -> Result<Script, String> {
    let toks = tokens(text)?;
    let mut script = Script::default();
    let mut i = 0;
    // Depth of GROUP/INPUT/AS_NEEDED lists we are in.
    let mut depth = 0usize;
    while i < toks.len() {
        let t = toks[i].as_str();
        let opens = toks.get(i + 1).is_some_and(|n| n == "(");
        match t {
            "GROUP" | "INPUT" | "AS_NEEDED" if opens => {
                depth += 1;
                i += 2;
                continue;
            }
            "OUTPUT_FORMAT" | "OUTPUT_ARCH" | "SEARCH_DIR" if opens && depth == 0 => {
                let close = toks[i..]
                    .iter()
                    .position(|t| t == ")")
                    .ok_or_else(|| format!("`{t}(` has no `)`"))?;
                if t == "SEARCH_DIR" {
                    script
                        .search_dirs
                        .extend(toks[i + 2..i + close].iter().cloned());
                }
                i += close + 1;
                continue;
            }
            ")" if depth > 0 => depth -= 1,
            "(" | ")" => return Err(format!("unexpected `{t}`")),
            _ if depth == 0 => {
                return Err(format!(
                    "`{t}` is not a command zerolink reads in a library script (GROUP, INPUT, \
                     AS_NEEDED, OUTPUT_FORMAT, OUTPUT_ARCH, SEARCH_DIR)"
                ))
            }
            _ => match t.strip_prefix("-l") {
                Some(name) if !name.is_empty() => {
                    script.inputs.push(ScriptInput::Library(name.to_string()))
                }
                _ => script.inputs.push(ScriptInput::File(t.to_string())),
            },
        }
        i += 1;
    }
    if depth != 0 {
        return Err("a list has no closing `)`".into());
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibcs_scripts_read_as_ld_reads_them() {
        let libc = "/* GNU ld script\n   Use the shared library, but some functions are only in\n   \
                    the static library, so try that secondarily.  */\n\
                    OUTPUT_FORMAT(elf64-x86-64)\n\
                    GROUP ( /lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/libc_nonshared.a  \
                    AS_NEEDED ( /lib64/ld-linux-x86-64.so.2 ) )\n";
        let s = parse(libc).unwrap();
        assert_eq!(
            s.inputs,
            vec![
                ScriptInput::File("/lib/x86_64-linux-gnu/libc.so.6".into()),
                ScriptInput::File("/usr/lib/x86_64-linux-gnu/libc_nonshared.a".into()),
                ScriptInput::File("/lib64/ld-linux-x86-64.so.2".into()),
            ]
        );
        let libgcc_s = "/* GNU ld script */\nGROUP ( libgcc_s.so.1 -lgcc )";
        assert_eq!(
            parse(libgcc_s).unwrap().inputs,
            vec![
                ScriptInput::File("libgcc_s.so.1".into()),
                ScriptInput::Library("gcc".into())
            ]
        );
        assert_eq!(
            parse("INPUT(libm-2.36.a, libmvec.a) SEARCH_DIR(\"/opt/lib\")").unwrap(),
            Script {
                inputs: vec![
                    ScriptInput::File("libm-2.36.a".into()),
                    ScriptInput::File("libmvec.a".into())
                ],
                search_dirs: vec!["/opt/lib".into()],
            }
        );
    }

    #[test]
    fn a_script_that_lays_out_sections_is_refused_by_name() {
        let e = parse("SECTIONS { .text : { *(.text) } }").unwrap_err();
        assert!(e.contains("`SECTIONS`"), "{e}");
        assert!(parse("GROUP ( a.so").is_err());
    }
}
