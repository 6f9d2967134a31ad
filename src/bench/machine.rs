//! Readings of the machine and the process: peak and current resident set, available
//! memory, peak heap (with the counting allocator), the CPU's model name.

/// The process's peak resident set (VmHWM), when the platform reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// The process's resident set now (VmRSS).
pub fn rss_bytes() -> Option<u64> {
    proc_status_kb("VmRSS:").map(|kb| kb * 1024)
}

#[cfg(target_os = "linux")]
fn proc_status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn proc_status_kb(_: &str) -> Option<u64> {
    None
}

/// Memory the machine can give a new allocation now without swapping (Linux:
/// `MemAvailable` in /proc/meminfo), when the platform reports it.
pub fn available_memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let s = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line["MemAvailable:".len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Resets the peak resident set to the current one (Linux: `/proc/self/clear_refs`), so a
/// measurement excludes what came before (writing the model). Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    #[cfg(target_os = "linux")]
    {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Peak heap bytes since the last [`reset_peak_heap`], when the binary installs the counting
/// allocator ([`crate::memory::heap::CountingAlloc`]); `None` without one.
pub fn peak_heap_bytes() -> Option<u64> {
    let h = crate::memory::heap::installed();
    h.then(|| crate::memory::heap::peak() as u64)
}

/// Starts a new peak-heap measurement from the current heap size.
pub fn reset_peak_heap() {
    crate::memory::heap::reset_peak();
}

/// The CPU's model name (Linux), or the architecture.
pub fn cpu_model() -> String {
    #[cfg(target_os = "linux")]
    if let Ok(s) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(l) = s
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        {
            if let Some((_, v)) = l.split_once(':') {
                return v.trim().to_string();
            }
        }
    }
    std::env::consts::ARCH.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_memory_is_read_on_linux() {
        let a = available_memory_bytes();
        if cfg!(target_os = "linux") {
            // Some memory is available, and not more than the machine has.
            let total = std::fs::read_to_string("/proc/meminfo")
                .unwrap()
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap()
                * 1024;
            let a = a.expect("MemAvailable");
            assert!(a > 0 && a <= total, "{a} of {total}");
        } else {
            assert!(a.is_none());
        }
    }
}
