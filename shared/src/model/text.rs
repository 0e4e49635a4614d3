//! Values shown to people (logs, errors, the failure report, the email):
//! short, on one line, and unable to forge a line of their own.

/// A short, printable rendering of a value for error messages and logs: a
/// 10 KB string or control characters must not flood a log line or an email.
pub fn preview(value: &str, max_chars: usize) -> String {
    let mut out: String = value.chars().take(max_chars).collect::<String>();
    if value.chars().count() > max_chars {
        out.push('…');
    }
    format!("{out:?}")
}

/// A value on one line, for messages read by people: control characters are
/// escaped (a newline cannot break a table row or forge a log line) and long
/// values are cut; nothing else is changed or quoted.
pub fn one_line(value: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_controls_and_cuts() {
        assert_eq!(one_line("got \"US\"", 50), "got \"US\"");
        assert_eq!(one_line("a\nb\u{0}", 50), "a\\nb\\u{0}");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
