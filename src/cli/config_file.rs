//! `--config FILE`: a TOML (flat `key = value`, optional `[section]` headers ignored) or
//! JSON object file whose keys mirror the command's flags (`lr = 1e-3`,
//! `seq-len = 256` or `seq_len = 256`, `shuffle = true`, `targets = ["q", "v"]`). It
//! expands to flags placed before the command line's own, so flags given on the command
//! line win.

use std::path::Path;

use serde_json::Value;

use pocketlora::{Error, Result};

/// The flags a config file stands for.
pub fn expand(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    let pairs = if is_json {
        parse_json(&text)
    } else {
        parse_toml(&text)
    }
    .map_err(|(line, msg)| Error::Data {
        path: path.into(),
        line,
        msg,
    })?;
    let mut out = Vec::new();
    for (k, v) in pairs {
        let flag = format!("--{}", k.replace('_', "-"));
        match v {
            Value::Bool(true) => out.push(flag),
            Value::Bool(false) | Value::Null => {}
            Value::String(s) => out.extend([flag, s]),
            Value::Number(n) => out.extend([flag, n.to_string()]),
            Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect();
                out.extend([flag, parts.join(",")]);
            }
            Value::Object(_) => {
                return Err(Error::Data {
                    path: path.into(),
                    line: 0,
                    msg: format!("{k}: nested tables are not flags"),
                })
            }
        }
    }
    Ok(out)
}

fn parse_json(text: &str) -> std::result::Result<Vec<(String, Value)>, (usize, String)> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| (e.line(), format!("not valid JSON: {e}")))?;
    let o = v
        .as_object()
        .ok_or((1, "expected a JSON object of flag: value".to_string()))?;
    Ok(o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn parse_toml(text: &str) -> std::result::Result<Vec<(String, Value)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') && !line.contains('=') {
            // `[train]` names the flags' own command; any other section would be read as
            // if it were not there.
            if line.replace(' ', "") == "[train]" {
                continue;
            }
            return Err((
                i + 1,
                format!("{line}: only a [train] section is read (or none: flags at the top level, as `lr = 1e-3`)"),
            ));
        }
        let (k, v) = line
            .split_once('=')
            .ok_or((i + 1, format!("expected key = value, found {line:?}")))?;
        let k = k.trim().trim_matches('"');
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((i + 1, format!("{k:?} is not a flag name")));
        }
        let v = v.trim();
        // TOML strings, numbers, booleans and arrays of them read as JSON once single-quoted
        // literals are turned into JSON strings.
        let json = if v.starts_with('\'') && v.ends_with('\'') && v.len() >= 2 {
            Value::String(v[1..v.len() - 1].to_string())
        } else {
            serde_json::from_str(v).map_err(|_| {
                (
                    i + 1,
                    format!("value {v:?} of {k} is not a string, number, boolean or array"),
                )
            })?
        };
        out.push((k.to_string(), json));
    }
    Ok(out)
}

/// Drops a `#` comment that is not inside a string.
fn strip_comment(line: &str) -> &str {
    let mut in_str = None;
    for (i, c) in line.char_indices() {
        match (c, in_str) {
            ('"' | '\'', None) => in_str = Some(c),
            (q, Some(open)) if q == open => in_str = None,
            ('#', None) => return &line[..i],
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_other_than_train_is_refused_by_line() {
        let e = parse_toml("lr = 1e-3\n[lora]\nrank = 4\n").unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("[lora]"), "{}", e.1);
    }

    #[test]
    fn toml_and_json_expand_to_flags() {
        let dir = std::env::temp_dir().join(format!("plora-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = dir.join("run.toml");
        std::fs::write(&t, "# a run\n[train]\nlr = 1e-3 # peak\nseq_len = 64\nshuffle = true\nrslora = false\ntargets = [\"q\", \"v\"]\nschedule = 'linear'\nout = \"a # b\"\n").unwrap();
        assert_eq!(
            expand(&t).unwrap(),
            vec![
                "--lr",
                "0.001",
                "--seq-len",
                "64",
                "--shuffle",
                "--targets",
                "q,v",
                "--schedule",
                "linear",
                "--out",
                "a # b"
            ]
        );
        let j = dir.join("run.json");
        std::fs::write(&j, r#"{"rank": 4, "json": true}"#).unwrap();
        assert_eq!(expand(&j).unwrap(), vec!["--json", "--rank", "4"]); // JSON keys in sorted order
        std::fs::write(&t, "lr 1e-3\n").unwrap();
        assert!(expand(&t).unwrap_err().to_string().contains("run.toml:1:"));
        std::fs::write(&t, "lr = fast\n").unwrap();
        assert!(expand(&t).unwrap_err().to_string().contains("fast"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
