//! Container logs in the CRI format, as `kubectl logs` wants them.
//!
//! The runtime writes one record a line: `TIMESTAMP STREAM TAG MESSAGE`,
//! e.g. `2026-11-22T01:33:59.298700315Z stdout F hello`. The tag is `F` for
//! a full line and `P` for a part of a longer line whose rest follows in the
//! next records; the message of a `P` record has no newline of its own.
//!
//! [`LogRenderer`] turns records into what the user sees: messages joined
//! back into lines, each prefixed with its first part's timestamp when asked
//! for. It is fed raw file bytes in any chunks (a follow reads whatever was
//! appended) and keeps an incomplete trailing record until its newline
//! arrives. [`tail_offset`] finds where the last N lines begin.

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a [u8],
    pub stream: &'a [u8],
    pub partial: bool,
    pub message: &'a [u8],
}

fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = line.iter().position(|b| *b == b' ')?;
    Some((&line[..space], &line[space + 1..]))
}

/// Parses one record (without its newline); `None` for a malformed one.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let (timestamp, rest) = split_field(line)?;
    let (stream, rest) = split_field(rest)?;
    // Old runtimes wrote no tag: the rest is the message of a full line.
    let (partial, message) = match split_field(rest) {
        Some((b"P", message)) => (true, message),
        Some((b"F", message)) => (false, message),
        _ if rest == b"F" => (false, &rest[..0]),
        _ if rest == b"P" => (true, &rest[..0]),
        _ => (false, rest),
    };
    Some(Record {
        timestamp,
        stream,
        partial,
        message,
    })
}

/// Renders records into log text (see the module documentation).
#[derive(Debug, Default)]
pub struct LogRenderer {
    timestamps: bool,
    /// An incomplete trailing record, waiting for its newline.
    pending: Vec<u8>,
    /// Inside a line continued by `P` records.
    continuing: bool,
}

impl LogRenderer {
    pub fn new(timestamps: bool) -> LogRenderer {
        LogRenderer {
            timestamps,
            ..LogRenderer::default()
        }
    }

    /// Renders the complete records in `bytes` (after what was held back).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.pending.drain(..=end).collect();
        let mut out = Vec::with_capacity(complete.len());
        for line in complete.split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let Some(record) = parse_record(line) else {
                continue;
            };
            if self.timestamps && !self.continuing {
                out.extend_from_slice(record.timestamp);
                out.push(b' ');
            }
            out.extend_from_slice(record.message);
            if !record.partial {
                out.push(b'\n');
            }
            self.continuing = record.partial;
        }
        out
    }
}

/// The byte offset in `content` where its last `lines` log lines begin
/// (records joined as the renderer joins them).
pub fn tail_offset(content: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return content.len();
    }
    // Start offsets of the records that begin a line.
    let mut starts = Vec::new();
    let mut offset = 0;
    let mut continuing = false;
    for line in content.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        if let Some(record) = parse_record(&line[..line.len() - 1]) {
            if !continuing {
                starts.push(offset);
            }
            continuing = record.partial;
        }
        offset += line.len();
    }
    starts
        .len()
        .checked_sub(lines)
        .map_or(0, |first| starts[first])
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-01-01T00:00:01.000000001Z stdout F first\n\
2026-01-01T00:00:02.000000002Z stderr P sec\n\
2026-01-01T00:00:03.000000003Z stderr F ond\n\
2026-01-01T00:00:04.000000004Z stdout F \n\
2026-01-01T00:00:05.000000005Z stdout F last\n";

    #[test]
    fn records_parse_with_and_without_tags() {
        let record = parse_record(b"2026-01-01T00:00:01Z stdout F hello world").expect("valid");
        assert_eq!(record.stream, b"stdout");
        assert!(!record.partial);
        assert_eq!(record.message, b"hello world");
        assert!(parse_record(b"2026-01-01T00:00:01Z stdout P part").is_some_and(|r| r.partial));
        assert_eq!(
            parse_record(b"2026-01-01T00:00:01Z stdout untagged text").map(|r| r.message),
            Some(&b"untagged text"[..])
        );
        assert_eq!(parse_record(b"garbage"), None);
    }

    #[test]
    fn partial_records_join_into_one_line() {
        let mut renderer = LogRenderer::new(false);
        assert_eq!(renderer.feed(LOG), b"first\nsecond\n\nlast\n");
        let mut stamped = LogRenderer::new(true);
        let text = String::from_utf8(stamped.feed(LOG)).expect("utf-8");
        assert_eq!(
            text.lines().nth(1),
            Some("2026-01-01T00:00:02.000000002Z second")
        );
    }

    #[test]
    fn records_split_across_reads_wait_for_their_newline() {
        let mut renderer = LogRenderer::new(false);
        let (a, b) = LOG.split_at(50);
        let mut out = renderer.feed(a);
        out.extend(renderer.feed(b));
        assert_eq!(out, b"first\nsecond\n\nlast\n");
    }

    #[test]
    fn tails_count_joined_lines() {
        let render = |from: usize| LogRenderer::new(false).feed(&LOG[from..]);
        assert_eq!(render(tail_offset(LOG, 1)), b"last\n");
        assert_eq!(render(tail_offset(LOG, 3)), b"second\n\nlast\n");
        assert_eq!(render(tail_offset(LOG, 99)), b"first\nsecond\n\nlast\n");
        assert_eq!(tail_offset(LOG, 0), LOG.len());
    }
}
