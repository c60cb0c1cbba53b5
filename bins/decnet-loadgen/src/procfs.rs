//! Resident memory and CPU time of a process, from `/proc/<pid>/{status,stat}`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Kernel clock ticks per second for `utime` / `stime` (`USER_HZ`). It is 100
/// on every Linux architecture's user ABI; reading it properly needs
/// `sysconf`, which is `unsafe` to call.
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProcSample {
    /// Resident set size (`VmRSS`), KiB.
    pub(crate) rss_kib: u64,
    /// User + system CPU time so far, seconds.
    pub(crate) cpu_secs: f64,
}

/// Which process to read: a pid, or this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pid {
    /// `/proc/self`.
    This,
    /// `/proc/<pid>`.
    Other(u32),
}

impl Pid {
    fn dir(self) -> PathBuf {
        match self {
            Pid::This => PathBuf::from("/proc/self"),
            Pid::Other(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// Read RSS and CPU time; `None` when the process is gone or /proc is
    /// unreadable.
    pub(crate) fn sample(self) -> Option<ProcSample> {
        let dir = self.dir();
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        Some(ProcSample {
            rss_kib: parse_rss_kib(&status)?,
            cpu_secs: parse_cpu_ticks(&stat)? as f64 / TICKS_PER_SEC,
        })
    }
}

/// `VmRSS` from `/proc/<pid>/status`, in KiB.
pub(crate) fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// `utime + stime` (fields 14 and 15) from `/proc/<pid>/stat`, in ticks.
///
/// The command name (field 2) is in parentheses and may contain spaces and
/// parentheses, so fields are counted after the LAST `)`.
pub(crate) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is field 14, i.e.
    // the 12th after the name.
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tdecnet-events\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(12345));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
        let stat = "4242 (decnet (ev) ts) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 3 0 100 1000000 3000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let sample = Pid::This.sample().expect("/proc/self is readable");
        assert!(sample.rss_kib > 0);
    }
}
