//! CPU time of a process, from `/proc/PID/stat` (Linux): user plus system
//! time of every thread it has or had, in seconds. Read before and after a
//! run, the difference is what the run cost that process, whatever else the
//! machine was doing (unlike wall time).
//!
//! The kernel counts it in clock ticks of `USER_HZ`, so one reading is
//! precise to 10 ms: about 0.3% of a 3-second run on one busy core.

/// `USER_HZ`, the unit of the times in `/proc/PID/stat`. The kernel exports
/// them in this unit whatever its internal tick rate, and it is 100 on every
/// architecture Linux runs this on (`getconf CLK_TCK`; a test checks it).
/// Reading it with `sysconf` would take `unsafe` code.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds this process has used so far.
pub fn seconds() -> Option<f64> {
    read("self")
}

/// CPU seconds process `pid` has used so far (`None` once it is gone).
pub fn seconds_of(pid: u32) -> Option<f64> {
    read(&pid.to_string())
}

fn read(process: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    parse_ticks(&stat).map(|ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// utime + stime, fields 14 and 15 of `/proc/PID/stat`. The command name
/// (field 2) is in parentheses and may itself hold spaces and parentheses,
/// so the fields are counted from the last `)`.
fn parse_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_ticks() {
        // A command name with a space and a parenthesis.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1771 0 0 0 \
                    250 37 0 0 20 0 9 0 123456 1000000 500 18446744073709551615";
        assert_eq!(parse_ticks(stat), Some(287));
        assert_eq!(parse_ticks("garbage"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_uses_cpu() {
        let before = seconds().expect("/proc/self/stat on Linux");
        // Burn a little over two ticks.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = seconds().expect("/proc/self/stat on Linux");
        assert!(after >= before, "{before} then {after}");
        assert!(seconds_of(std::process::id()).is_some());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn user_hz_is_what_the_kernel_exports() {
        let Ok(output) = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
        else {
            return; // no getconf: nothing to compare with
        };
        let ticks: f64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(ticks, TICKS_PER_SECOND);
    }
}
