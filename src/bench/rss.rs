//! Memory use of this process, from `/proc/self/status` (Linux).

/// Peak resident set size (VmHWM) in bytes, if the kernel reports it.
pub fn peak_bytes() -> Option<u64> {
    status_kib("self", "VmHWM:").map(|kib| kib * 1024)
}

/// Peak resident set size of process `pid`.
pub fn peak_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:").map(|kib| kib * 1024)
}

fn status_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    parse_kib(&status, field)
}

fn parse_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tx\nVmHWM:\t  123456 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(parse_kib(status, "VmHWM:"), Some(123_456));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_a_peak() {
        // The current size first: the peak can only have grown since.
        let current = status_kib("self", "VmRSS:").expect("VmRSS on Linux") * 1024;
        let peak = peak_bytes().expect("VmHWM on Linux");
        assert!(peak >= current, "peak {peak} below current {current}");
    }
}
