//! Peak-memory readings for benchmarks (Linux: /proc/self).

/// A field of /proc/self/status (`VmRSS:`, `VmHWM:` ...), in KiB.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS.
pub fn reset_peak_rss() {
    // Writing 5 to clear_refs resets the high-water mark (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Current and peak RSS in MiB.
pub fn rss_mib() -> (f64, f64) {
    (status_kib("VmRSS:") as f64 / 1024.0, status_kib("VmHWM:") as f64 / 1024.0)
}
