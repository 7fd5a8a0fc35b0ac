//! The penctl command line, as pen's `do_cmd` reads it: the line is cut at the first `\r` or
//! `\n`, then split on spaces only (a TAB is part of a word, as in pen). No I/O.

/// Longest command line accepted (pen reads one 4095-byte recv).
pub const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    TooLong,
    Binary,
    NotUtf8,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong => write!(f, "command line longer than {MAX_LINE} bytes"),
            LineError::Binary => write!(f, "binary data in command line"),
            LineError::NotUtf8 => write!(f, "command line is not UTF-8 text"),
        }
    }
}

/// Whether `buf` already holds a whole line (a `\n` or `\r` within the limit).
pub fn has_line_end(buf: &[u8]) -> bool {
    buf.iter().take(MAX_LINE).any(|&b| b == b'\n' || b == b'\r')
}

/// The words of the first line of `buf`. An empty line or a `#comment` gives no words (an
/// empty reply, as pen).
pub fn parse(buf: &[u8]) -> Result<Vec<&str>, LineError> {
    let end = buf
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(buf.len());
    if end > MAX_LINE {
        return Err(LineError::TooLong);
    }
    let line = &buf[..end];
    if line
        .iter()
        .any(|&b| b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(LineError::Binary);
    }
    let line = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
    if words.first().is_some_and(|w| w.starts_with('#')) {
        return Ok(Vec::new());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pen_line_rules() {
        assert_eq!(parse(b"servers\n").unwrap(), vec!["servers"]);
        assert_eq!(parse(b"blacklist").unwrap(), vec!["blacklist"]);
        assert_eq!(parse(b"blacklist\r\n").unwrap(), vec!["blacklist"]);
        assert_eq!(
            parse(b" server  1 blacklist 5\n").unwrap(),
            vec!["server", "1", "blacklist", "5"]
        );
        // Only the first line runs.
        assert_eq!(
            parse(b"blacklist 31\ntracking\n").unwrap(),
            vec!["blacklist", "31"]
        );
        // TAB is no separator in pen.
        assert_eq!(parse(b"blacklist\t32\n").unwrap(), vec!["blacklist\t32"]);
        assert!(parse(b"\n").unwrap().is_empty());
        assert!(parse(b"# hello\n").unwrap().is_empty());
    }

    #[test]
    fn bad_lines() {
        assert_eq!(parse(b"serv\0ers\n"), Err(LineError::Binary));
        assert_eq!(parse(b"\xff\xfe\n"), Err(LineError::NotUtf8));
        assert_eq!(parse(&vec![b'a'; MAX_LINE + 1]), Err(LineError::TooLong));
        assert!(parse(&vec![b'a'; MAX_LINE]).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..6000)) {
            let _ = parse(&bytes);
            let _ = has_line_end(&bytes);
        }
    }
}
