//! This CPU's private L2 cache per core, read once, so the exact matmul can size its
//! dequantized panels to the cache it actually has (a 2 MiB L2 holds a panel twice the
//! size a 1 MiB one does). Linux and Android report caches in sysfs; elsewhere, or when the
//! files are missing or malformed, there is no reading and callers keep their defaults.

use std::sync::OnceLock;

/// Bytes of L2 each core of CPU 0 has to itself (a shared L2 divided by the CPUs sharing
/// it), when the platform says.
pub fn l2_per_core() -> Option<usize> {
    static L2: OnceLock<Option<usize>> = OnceLock::new();
    *L2.get_or_init(read_l2_per_core)
}

fn read_l2_per_core() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for i in 0..8 {
        let index = dir.join(format!("index{i}"));
        let read = |name: &str| std::fs::read_to_string(index.join(name)).ok();
        let Some(level) = read("level") else {
            break;
        };
        let kind = read("type").unwrap_or_default();
        if level.trim() != "2" || kind.trim() == "Instruction" {
            continue;
        }
        let size = parse_size(&read("size")?)?;
        let sharing = read("shared_cpu_list")
            .and_then(|s| count_cpus(&s))
            .unwrap_or(1);
        return Some(size / sharing.max(1));
    }
    None
}

/// A sysfs cache size: `"2048K"`, `"1M"`, `"524288"` (bytes).
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let scale = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(scale).filter(|&b| b > 0)
}

/// How many CPUs a sysfs CPU list names: `"0"`, `"0-3"`, `"0,4,8-9"`.
fn count_cpus(s: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in s.trim().split(',') {
        let count = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
        n = n.checked_add(count)?;
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes_and_cpu_lists_parse_and_malformed_ones_do_not() {
        assert_eq!(parse_size("2048K\n"), Some(2 << 20));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("524288"), Some(524_288));
        for bad in ["", "K", "0K", "12Q", "-1K", "1.5M"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(count_cpus("0\n"), Some(1));
        assert_eq!(count_cpus("0-3"), Some(4));
        assert_eq!(count_cpus("0,4,8-9"), Some(4));
        for bad in ["", "a", "3-1", "0,", "1-"] {
            assert_eq!(count_cpus(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_reading_is_a_plausible_l2_size() {
        // (No reading is also an answer: some CPUs have no L2 of their own.)
        if let Some(b) = l2_per_core() {
            assert!((16 << 10..=64 << 20).contains(&b), "{b} bytes");
        }
    }
}
