//! Container logs in the CRI format, as containerd writes them under the kubelet's layout
//! (`<logRoot>/<ns>_<pod>_<uid>/<container>/<attempt>.log`): one record a line,
//! `<RFC 3339 nano time> <stdout|stderr> <P|F> <text>`, where `P` marks a partial line that
//! the next record continues. Read back here for `containerLogs`.

use std::path::{Path, PathBuf};

/// The pod's log directory (the sandbox's `log_directory`).
pub(crate) fn pod_log_dir(root: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    root.join(format!("{namespace}_{name}_{uid}"))
}

/// A container's log file, relative to its pod's log directory.
pub(crate) fn container_log_path(container: &str, attempt: u32) -> String {
    format!("{container}/{attempt}.log")
}

/// One whole log line (partial records joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    /// The time of its first record, as written.
    pub time: String,
    /// Unix seconds of that time (0 when it does not parse).
    pub unix: i64,
    /// The text, with its newline.
    pub text: Vec<u8>,
}

/// The whole lines of `data`. A trailing partial line is returned as it is; malformed records
/// are skipped.
pub(crate) fn parse(data: &[u8]) -> Vec<LogLine> {
    let mut out = Vec::new();
    let mut pending: Option<LogLine> = None;
    for rec in data.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
        let mut parts = rec.splitn(4, |b| *b == b' ');
        let (Some(time), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let text = parts.next().unwrap_or_default();
        let line = pending.get_or_insert_with(|| {
            let time = String::from_utf8_lossy(time).into_owned();
            let unix = time
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_second())
                .unwrap_or(0);
            LogLine {
                time,
                unix,
                text: Vec::new(),
            }
        });
        line.text.extend_from_slice(text);
        if tag != b"P" {
            line.text.push(b'\n');
            out.extend(pending.take());
        }
    }
    out.extend(pending);
    out
}

/// Render `lines` as `kubectl logs` shows them: since, tail, then optional time prefixes.
pub(crate) fn render(
    lines: Vec<LogLine>,
    since: Option<i64>,
    tail: Option<u64>,
    timestamps: bool,
) -> Vec<u8> {
    let mut lines: Vec<LogLine> = lines
        .into_iter()
        .filter(|l| since.is_none_or(|s| l.unix >= s))
        .collect();
    if let Some(n) = tail {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if lines.len() > n {
            lines.drain(..lines.len() - n);
        }
    }
    let mut out = Vec::new();
    for l in lines {
        if timestamps {
            out.extend_from_slice(l.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&l.text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-01-01T00:00:01.000000001Z stdout F hello\n\
2026-01-01T00:00:02.5Z stderr P par\n\
2026-01-01T00:00:02.6Z stderr F tial\n\
garbage\n\
2026-01-01T00:00:03Z stdout F \n";

    #[test]
    fn partial_records_join_and_options_apply() {
        let lines = parse(LOG);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].text, b"partial\n");
        assert_eq!(
            render(lines.clone(), None, None, false),
            b"hello\npartial\n\n"
        );
        assert_eq!(render(lines.clone(), None, Some(2), false), b"partial\n\n");
        let since = lines[1].unix;
        assert_eq!(
            render(lines.clone(), Some(since), None, false),
            b"partial\n\n"
        );
        assert!(render(lines, None, Some(1), true).starts_with(b"2026-01-01T00:00:03Z \n"));
    }

    #[test]
    fn kubelet_layout() {
        let d = pod_log_dir(Path::new("/var/log/pods"), "ns", "p", "u1");
        assert_eq!(d, Path::new("/var/log/pods/ns_p_u1"));
        assert_eq!(container_log_path("c", 2), "c/2.log");
    }
}
