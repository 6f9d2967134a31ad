//! Argument parsers shared by the subcommands.

/// Parses a byte size with an optional binary suffix: `512`, `64K`, `1.5M`, `2G`
/// (K = 2^10, M = 2^20, G = 2^30, T = 2^40; an optional trailing `B`/`iB`, any case).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 512K, 1.5M, 2G)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "{s:?} is not a size (it must be a non-negative number)"
        ));
    }
    let bytes = v * mult as f64;
    if bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses `--precision`: `exact` or `fast`.
pub fn parse_precision(s: &str) -> Result<pocketlora::Precision, String> {
    pocketlora::Precision::parse(s).ok_or_else(|| format!("{s:?}: expected exact or fast"))
}

/// Parses token ids separated by commas and/or spaces: `1,2,3` or `"1 2 3"`.
pub fn parse_ids(s: &str) -> Result<Vec<u32>, String> {
    let ids: Result<Vec<u32>, String> = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .map_err(|_| format!("{p:?} is not a token id"))
        })
        .collect();
    let ids = ids?;
    if ids.is_empty() {
        return Err("no token ids given".into());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("300MB").unwrap(), 300 << 20);
        for bad in ["", "M", "-1M", "1X", "nanK", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_split_on_commas_and_spaces() {
        assert_eq!(parse_ids("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids("7").unwrap(), vec![7]);
        assert!(parse_ids("1,x").is_err());
        assert!(parse_ids(" , ").is_err());
        assert!(parse_ids("-1").is_err());
    }
}
